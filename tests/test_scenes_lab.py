"""The shipped scenes lab model (`llava-scenes`) loads through the HF converter path, still answers as it did
when shipped, and the lab discriminates: where the kept tokens are decides the answer.

Fixed subset: the first 400 test items, greedy, float32. The shipped model scores 84.25% on them unpruned
(84.25% on the full test set, `evals/scenes/full`); the test allows 1.5 points for near-tie flips.

Issue 15's targets for the lab, written as tests, two of which the shipped model does not meet yet and are
marked as expected failures (strict: once a retrained model meets them, the marker must go):
  - unpruned accuracy >= 90% (the shipped model: 84%; relation questions are at 55%);
  - at layer 0 with 16 visual tokens kept, `oracle` beats `random` by >= 20 points with their 95% bootstrap
    CIs apart (shipped: 78.8 vs 60.3 here, 18.9 points on the full test set, 20.6 on its blind-filtered items);
  - `anti-oracle` (the referenced objects' patches dropped first) falls to within 10 points of the blind
    (text-only) floor of the same items (shipped: 35.0 vs 33.3 here). Met.
"""

from __future__ import annotations

import json

import pytest

from jaxprune import eval as jeval
from jaxprune.models.registry import LOCAL_PRESETS

LIMIT = 400
SHIPPED_SUBSET_ACCURACY = 0.8425


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  from jaxprune.data import load_task
  path = tmp_path_factory.mktemp("scenes_tfds")
  load_task("scenes", split="test", data_dir=path)
  return path


def run_eval(data_dir, out, *extra) -> dict[str, dict]:
  argv = ["--model", "llava-scenes", "--tasks", "scenes", "--limit", str(LIMIT), "--data-dir", str(data_dir),
          "--output-path", str(out), "--no-plots", "--time-batches", "0", "--batch-size", "50",
          "--max-new-tokens", "4", *extra]
  assert jeval.main(argv) == 0
  return {row["plan"]: row for row in json.loads((out / "results.json").read_text())["rows"]}


@pytest.fixture(scope="module")
def rows(data_dir, tmp_path_factory):
  """plan -> results row: unpruned, the three layer-0 keep-16 bounds, and the blind run, on the same items."""
  out = tmp_path_factory.mktemp("scenes_lab")
  got = run_eval(data_dir, out / "pruned", "--method", "none,oracle@0,random@0,anti-oracle@0", "--keep", "16")
  got.update(run_eval(data_dir, out / "blind", "--blind"))
  return got


def pick(rows: dict[str, dict], method: str) -> dict:
  (row,) = [r for r in rows.values() if r["method"] == method]
  return row


def test_shipped_lab_model_accuracy_on_fixed_subset(rows):
  assert (LOCAL_PRESETS["llava-scenes"] / "model.safetensors").exists()
  full = pick(rows, "none")
  assert full["n"] == LIMIT and full["relevance_recall"] == 1.0
  assert full["accuracy"] >= SHIPPED_SUBSET_ACCURACY - 0.015, full["accuracy"]  # greedy + float32: near-ties


@pytest.mark.xfail(strict=True, reason="issue 15 not met yet: the shipped lab model scores 84% (relation 55%)")
def test_lab_model_meets_the_90_percent_target(rows):
  assert pick(rows, "none")["accuracy"] >= 0.90


def test_kept_relevance_orders_the_bounds(rows):
  oracle, random, anti = (pick(rows, m) for m in ("oracle", "random", "anti-oracle"))
  assert oracle["layer"] == random["layer"] == anti["layer"] == 0 and oracle["keep"] == random["keep"] == 16
  assert oracle["relevance_recall"] > 0.85 and anti["relevance_recall"] == 0.0
  assert oracle["relevance_recall"] > random["relevance_recall"] > anti["relevance_recall"]
  assert oracle["accuracy"] > random["accuracy"] > anti["accuracy"]


@pytest.mark.xfail(strict=True, reason="issue 15 not met yet: oracle - random is 18.9 points on the full test set")
def test_oracle_beats_random_by_20_points_cis_apart(rows):
  oracle, random = pick(rows, "oracle"), pick(rows, "random")
  assert oracle["ci_low"] > random["ci_high"], (oracle, random)
  assert oracle["accuracy"] - random["accuracy"] >= 0.20, (oracle["accuracy"], random["accuracy"])


def test_anti_oracle_falls_to_the_blind_floor(rows):
  anti, blind = pick(rows, "anti-oracle"), pick(rows, "blind")
  assert blind["n"] == LIMIT and abs(anti["accuracy"] - blind["accuracy"]) <= 0.10, (anti["accuracy"], blind["accuracy"])
