"""The shipped scenes lab model (`llava-scenes`) loads through the HF converter path, still answers as it did
when shipped, and the lab discriminates: where the kept tokens are decides the answer.

Fixed subset: the first 400 test items, greedy, bfloat16 (the eval's default). The shipped model scores 90.0% on
them unpruned (90.2% on the full test set, `evals/scenes/full`); the test allows 1.5 points for near-tie flips.

Issue 15's targets for the lab, written as tests (the shipped model meets all three):
  - unpruned accuracy >= 90% on the scenes test set, read where the target is set: the committed full-test-set
    run (`evals/scenes/full`, 90.2%), tied to the shipped weights by their fingerprint;
  - at layer 0 with 16 visual tokens kept, `oracle` beats `random` by >= 20 points with their 95% bootstrap
    CIs apart: checked live on the subset (oracle 86.5 vs per-item random 61.4 on the full test set);
  - `anti-oracle` (the referenced objects' patches dropped first) falls to within 10 points of the blind
    (text-only) floor of the same items: 37.4 vs 30.2 on the full test set, read from the committed runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jaxprune import eval as jeval
from jaxprune.models.registry import LOCAL_PRESETS

REPO = Path(__file__).resolve().parents[1]
LIMIT = 400
SHIPPED_SUBSET_ACCURACY = 0.90


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
  """plan -> results row: unpruned and the three layer-0 keep-16 bounds, on the same items."""
  out = tmp_path_factory.mktemp("scenes_lab")
  return run_eval(data_dir, out / "pruned", "--method", "none,oracle@0,random@0,anti-oracle@0", "--keep", "16")


def pick(rows: dict[str, dict], method: str) -> dict:
  (row,) = [r for r in rows.values() if r["method"] == method]
  return row


def test_shipped_lab_model_accuracy_on_fixed_subset(rows):
  assert (LOCAL_PRESETS["llava-scenes"] / "model.safetensors").exists()
  full = pick(rows, "none")
  assert full["n"] == LIMIT and full["relevance_recall"] == 1.0
  assert full["accuracy"] >= SHIPPED_SUBSET_ACCURACY - 0.015, full["accuracy"]  # greedy + bfloat16: near-ties


def committed(run: str) -> list[dict]:
  """The rows of a committed full-test-set run (`evals/scenes/run.sh`: "full" or "blind"), checked to be the
  shipped checkpoint's by its weights fingerprint."""
  from jaxprune.eval.records import weights_fingerprint
  out = REPO / "evals" / "scenes" / run
  assert json.loads((out / "run.json").read_text())["weights"] == weights_fingerprint(LOCAL_PRESETS["llava-scenes"])
  return json.loads((out / "results.json").read_text())["rows"]


def test_lab_model_meets_the_90_percent_target_on_the_full_test_set():
  (none,) = [r for r in committed("full") if r["method"] == "none"]
  assert none["n"] == 2000 and none["accuracy"] >= 0.90, none["accuracy"]


def test_kept_relevance_orders_the_bounds(rows):
  oracle, random, anti = (pick(rows, m) for m in ("oracle", "random", "anti-oracle"))
  assert oracle["layer"] == random["layer"] == anti["layer"] == 0 and oracle["keep"] == random["keep"] == 16
  assert oracle["relevance_recall"] > 0.85 and anti["relevance_recall"] == 0.0
  assert oracle["relevance_recall"] > random["relevance_recall"] > anti["relevance_recall"]
  assert oracle["accuracy"] > random["accuracy"] > anti["accuracy"]


def test_oracle_beats_random_by_20_points_cis_apart(rows):
  oracle, random = pick(rows, "oracle"), pick(rows, "random")
  assert oracle["ci_low"] > random["ci_high"], (oracle, random)
  assert oracle["accuracy"] - random["accuracy"] >= 0.20, (oracle["accuracy"], random["accuracy"])


def test_anti_oracle_falls_to_the_blind_floor():
  """Read on the full test set, where the target is set: on the 400-item subset the blind run of a model that
  guesses moves by about 2 points with the batch's padding (near-tied answer logits: 32.0% at batch 64, 30.25%
  at batch 50), against the 10-point margin (anti-oracle there: 40.0-40.25%)."""
  (anti,) = [r for r in committed("full") if r["method"] == "anti-oracle" and r["layer"] == 0 and r["keep"] == 16]
  (blind,) = committed("blind")
  assert anti["n"] == blind["n"] == 2000
  assert abs(anti["accuracy"] - blind["accuracy"]) <= 0.10, (anti["accuracy"], blind["accuracy"])
