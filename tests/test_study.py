"""`python -m jaxprune.study` end to end on the tiny LLaVA: the three stages, the analysis, the report and its
re-render from analysis.json alone; flag errors answer in one line before anything loads."""

from __future__ import annotations

import json

import pytest

from jaxprune.study import cli as study_cli
from jaxprune.study.run import default_keeps, default_layers

FAST = ["--limit", "6", "--batch-size", "4", "--max-new-tokens", "3", "--time-batches", "0", "--bootstrap", "200"]


def _run(model, data, out, tasks, *extra):
  data_dir, datbench = data
  argv = ["--model", str(model), "--tasks", tasks, "--data-dir", str(data_dir), "--datbench-dir", str(datbench),
          "--output-path", str(out), *FAST, *extra]
  assert study_cli.main(argv) == 0
  return json.loads((out / "analysis.json").read_text())


def assert_rerenders_identically(out):
  """README and plots, removed and rendered again from analysis.json alone, come back byte for byte."""
  made = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".md", ".png")}
  for name in made:
    (out / name).unlink()
  assert study_cli.main(["--output-path", str(out), "--render-only"]) == 0
  assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".md", ".png")} == made


def test_study_with_relevance_end_to_end(tiny_eval_model, eval_data, tmp_path):
  """easy-VQA (relevance): the oracle bounds and recall by band appear; `random` has one plan per seed at every
  swept layer; every non-control plan is compared with the same-layer random; the report re-renders to the same
  bytes from analysis.json alone."""
  out = tmp_path / "study"
  analysis = _run(tiny_eval_model, eval_data, out, "easyvqa", "--layer", "0,1,3", "--keep", "4,8", "--seeds", "0,1")
  study, task = analysis["study"], analysis["tasks"]["easyvqa"]
  assert study["layers"] == [0, 1, 3] and study["keeps"] == [4, 8] and study["relevance"]
  plans = {p["plan"]: p for p in task["plans"]}
  assert {f"random@{layer}:{keep}[seed={s}]" for layer in (0, 1, 3) for keep in (4, 8) for s in (0, 1)} <= set(plans)
  assert "oracle@0:4[seed=0]" in plans and "fastv@0:4" not in plans and "fastv@1:4" in plans
  assert task["items"]["swept"] == task["items"]["all"] - task["items"]["blind_correct"] > 0
  assert all(c["control_draws"] == 2 and c["n_items"] == task["items"]["swept"] for c in task["vs_random"])
  compared = {c["plan"] for c in task["vs_random"]}
  assert compared == {p for p, row in plans.items() if row["method"] not in ("random", "oracle", "anti-oracle")}
  assert {c["other"].split("@")[0] for c in task["latesim_vs"]} == {"clsattn", "divprune", "embedsim", "fastv",
                                                                      "pool", "uniform", "visionzip", "random"}
  assert set(task["horizon"]) == {"4", "8"} and [p["layer"] for p in task["random"]["4"]] == [0, 1, 3]
  bounds = {b["plan"]: b for b in task["full_bounds"]}  # on every item, not only the swept ones
  assert set(bounds) == {f"{m}@0:{k}[seed=0]" for m in ("oracle", "random", "anti-oracle") for k in (4, 8)}
  assert all(b["n"] == task["items"]["all"] for b in bounds.values())
  assert bounds["oracle@0:8[seed=0]"]["recall"] > bounds["anti-oracle@0:8[seed=0]"]["recall"] == 0
  latesim = plans["latesim@1:4"]["position"]
  assert latesim["recall"] is not None and sum(latesim["kept_share"]) == pytest.approx(1.0)
  readme = (out / "README.md").read_text()
  for heading in ("Layer profile", "Conclusions per budget", "same-layer random", "latesim against every other",
                  "Distance from the oracle", "Where kept tokens lie", "cannot show"):
    assert heading in readme, heading
  assert_rerenders_identically(out)


def test_study_without_relevance_on_a_datbench_task(tiny_eval_model, eval_data, tmp_path):
  """A DatBench-format task (no relevance): no oracle plans or recall; the position section reports kept share
  per band against the slots' share; default budgets from the model's 16 visual tokens."""
  out = tmp_path / "study"
  analysis = _run(tiny_eval_model, eval_data, out, "datbench:chart", "--layer", "0,2", "--seeds", "0,1,2",
                  "--method", "latesim,clsattn")
  study, task = analysis["study"], analysis["tasks"]["datbench:chart"]
  assert not study["relevance"] and study["keeps"] == [1, 2, 4] and study["methods"] == ["latesim", "clsattn", "random"]
  assert {p["method"] for p in task["plans"]} == {"latesim", "clsattn", "random"}
  assert all(p["position"]["recall"] is None and p["recall"] is None for p in task["plans"])
  assert task["oracle_gap"] == [] and "Distance from the oracle" not in (out / "README.md").read_text()
  assert all(c["control_draws"] == 3 for c in task["vs_random"])


def test_default_layers_and_budgets():
  assert default_layers(12) == [0, 1, 3, 6, 9, 10, 11]
  assert default_layers(32) == [0, 1, 8, 16, 24, 30, 31]
  assert default_layers(2) == [0, 1]

  class Fixed:
    visual_tokens_per_image = 576

  assert default_keeps(Fixed) == [16, 32, 64, 128]
  Fixed.visual_tokens_per_image = 144
  assert default_keeps(Fixed) == [4, 8, 16, 32]
  Fixed.visual_tokens_per_image = None
  with pytest.raises(study_cli.StudyError, match="depends on the image; give budgets"):
    default_keeps(Fixed)


@pytest.mark.parametrize("argv,message", [
    ([], "--output-path: required"),
    (["--output-path", "x", "--blind"], "--blind: the study runs its own"),
    (["--output-path", "x", "--drop-blind", "f.json"], "--drop-blind: the study runs its own"),
    (["--output-path", "x", "--seeds", "0,a"], "--seeds 0,a: expected comma-separated integers"),
    (["--output-path", "x", "--seeds", "1,1"], "--seeds 1,1: give distinct integers"),
    (["--output-path", "x", "--bootstrap", "5"], "--bootstrap 5: use at least 100"),
    (["--output-path", "x", "--batch-size", "0"], "--batch-size 0: must be >= 1"),
    (["--output-path", "/nonexistent/study", "--render-only"], "analysis.json: missing"),
    (["--output-path", "x", "--tasks", "easyvqa,nope"], "--tasks nope: unknown task 'nope' (known: easyvqa"),
    (["--output-path", "x", "--model", "llava-easyvqa", "--method", "none"], "the unpruned baseline always runs"),
    (["--output-path", "x", "--model", "llava-easyvqa", "--keep", "8,300"], "one image has 256 visual tokens"),
    (["--output-path", "x", "--model", "llava-easyvqa", "--layer", "2"], "--layer 2: every value must lie in [0, 2)"),
])
def test_bad_flags_answer_in_one_line(argv, message, capsys):
  assert study_cli.main(argv) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
