"""`python -m jaxprune.eval` end to end on a tiny random LLaVA, easy-VQA and a DatBench-shaped fixture."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxprune import eval as jeval

MEASURED = ("prefill_ms",)  # wall-clock columns differ between any two runs


def _common(model, data, out, limit=6):
  data_dir, datbench = data
  return ["--model", str(model), "--limit", str(limit), "--batch-size", "4", "--data-dir", str(data_dir),
          "--datbench-dir", str(datbench), "--max-new-tokens", "3", "--time-batches", "1", "--no-plots",
          "--output-path", str(out)]


def _results(out) -> dict:
  return json.loads((Path(out) / "results.json").read_text())


def _comparable(results: dict) -> list[dict]:
  return [{k: v for k, v in row.items() if k not in MEASURED} for row in results["rows"]]


def test_grid_writes_every_row_with_cost_columns(tiny_eval_model, eval_data, tmp_path, capsys):
  argv = _common(tiny_eval_model, eval_data, tmp_path / "grid") + [
      "--tasks", "easyvqa,datbench:chart", "--method", "none,latesim,fastv", "--layer", "1,2", "--keep", "4,8",
      "--log-samples"]
  assert jeval.main(argv) == 0
  rows = _results(tmp_path / "grid")["rows"]
  assert len(rows) == 2 * (1 + 2 * 2 * 2)
  plans = {(r["task"], r["plan"]) for r in rows}
  for task in ("easyvqa", "datbench:chart"):
    assert (task, "none") in plans
    for method in ("latesim", "fastv"):
      for layer in (1, 2):
        for keep in (4, 8):
          assert (task, f"{method}@{layer}:{keep}") in plans
  by = {(r["task"], r["plan"]): r for r in rows}
  easy, chart = by[("easyvqa", "none")], by[("datbench:chart", "none")]
  assert easy["n"] == 6 and easy["n_failed"] == 0 and easy["keep"] == 16
  assert chart["n"] == 4 and chart["n_failed"] == 1 and chart["n_total"] == 5  # the corrupt image: failed, reported
  assert chart["n_judge"] == 2
  for row in rows:
    assert 0 <= row["accuracy"] <= 1 and row["ci_low"] <= row["accuracy"] <= row["ci_high"]
    assert row["flops"] > 0 and row["kv_bytes"] > 0 and row["prefill_ms"] > 0
  for task in ("easyvqa", "datbench:chart"):
    base = by[(task, "none")]
    for keep in (4, 8):
      row = by[(task, f"latesim@1:{keep}")]
      assert row["flops"] < base["flops"] and row["kv_bytes"] < base["kv_bytes"]
      assert abs(sum(row["kept_map"]) - keep) < 1e-3  # every item kept exactly `keep` of 16 tokens
    assert by[(task, "latesim@1:4")]["flops"] < by[(task, "latesim@2:4")]["flops"] < by[(task, "latesim@2:8")]["flops"]
  assert by[("easyvqa", "latesim@2:4")]["relevance_recall"] is not None
  samples = [json.loads(l) for l in (tmp_path / "grid" / "samples.jsonl").read_text().splitlines()]
  assert len(samples) == 9 * (6 + 5) and all("question" in s for s in samples if not s["failed"])
  failed = [s for s in samples if s["failed"]]
  assert failed and all("chart_002" in s["failed"] for s in failed)
  assert "latesim@1:4" in capsys.readouterr().out  # the summary table


def test_ratio_keep_and_layer0_methods(tiny_eval_model, eval_data, tmp_path, capsys):
  argv = _common(tiny_eval_model, eval_data, tmp_path / "r", limit=4) + [
      "--tasks", "easyvqa", "--method", "fastv,visionzip", "--layer", "0,1", "--keep", "0.5,0.25"]
  assert jeval.main(argv) == 0
  plans = [r["plan"] for r in _results(tmp_path / "r")["rows"]]
  # fastv@0 and visionzip@1 have no signal there: skipped, with one note per method (not one per budget)
  assert plans == ["fastv@1:8", "fastv@1:4", "visionzip@0:8", "visionzip@0:4"]
  err = capsys.readouterr().err
  assert err.count("skipped fastv@0:") == 1 and err.count("skipped visionzip@1:") == 1, err


def test_methods_may_pin_their_own_layer(tiny_eval_model, eval_data, tmp_path):
  argv = _common(tiny_eval_model, eval_data, tmp_path / "p", limit=4) + [
      "--tasks", "easyvqa", "--method", "none,fastv@3,clsattn@0", "--layer", "1", "--keep", "4,8"]
  assert jeval.main(argv) == 0
  plans = [r["plan"] for r in _results(tmp_path / "p")["rows"]]
  assert plans == ["none", "fastv@3:4", "fastv@3:8", "clsattn@0:4", "clsattn@0:8"]


def test_blind_then_drop_blind_lowers_n(always_yes_model, eval_data, tmp_path):
  common = _common(always_yes_model, eval_data, None, limit=40)[:-1]
  common[common.index("--max-new-tokens") + 1] = "1"
  assert jeval.main(common + [str(tmp_path / "blind"), "--tasks", "easyvqa", "--blind"]) == 0
  blind = _results(tmp_path / "blind")["rows"]
  assert [r["method"] for r in blind] == ["blind"] and blind[0]["kv_bytes"] > 0
  correct = json.loads((tmp_path / "blind" / "blind_correct.json").read_text())["correct"]["easyvqa"]
  assert 0 < len(correct) < 40  # the yes-answers, answered from the text alone
  assert blind[0]["accuracy"] == pytest.approx(len(correct) / 40)
  drop = str(tmp_path / "blind" / "blind_correct.json")
  assert jeval.main(common + [str(tmp_path / "filtered"), "--tasks", "easyvqa", "--method", "none",
                              "--drop-blind", drop]) == 0
  row = _results(tmp_path / "filtered")["rows"][0]
  assert row["n_total"] == 40 and row["n"] == 40 - len(correct)
  assert row["accuracy"] == 0.0  # an always-yes model gets nothing right once yes-answerable items are gone


def test_killed_run_resumes_to_the_same_results(tiny_eval_model, eval_data, tmp_path):
  env = dict(os.environ, PYTHONUNBUFFERED="1")

  def command(out):
    return [sys.executable, "-m", "jaxprune.eval", *_common(tiny_eval_model, eval_data, out, limit=24),
            "--tasks", "easyvqa", "--method", "none,latesim,random", "--layer", "1", "--keep", "4"]

  assert subprocess.run(command(tmp_path / "whole"), env=env, capture_output=True).returncode == 0
  proc = subprocess.Popen(command(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  samples = tmp_path / "killed" / "samples.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if samples.exists() and len(samples.read_text().splitlines()) >= 8:
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the run finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done_before = len(samples.read_text().splitlines())
  assert done_before < 3 * 24 and not (tmp_path / "killed" / "results.json").exists()
  assert subprocess.run(command(tmp_path / "killed"), env=env, capture_output=True).returncode == 0
  assert len(samples.read_text().splitlines()) == 3 * 24  # resumed: nothing answered twice
  assert _comparable(_results(tmp_path / "killed")) == _comparable(_results(tmp_path / "whole"))


def test_resume_refuses_samples_made_with_other_weights(tiny_eval_model, always_yes_model, eval_data, tmp_path,
                                                         capsys):
  import shutil
  model = tmp_path / "model"
  shutil.copytree(tiny_eval_model, model)
  argv = _common(model, eval_data, tmp_path / "out", limit=4) + ["--tasks", "easyvqa", "--method", "none"]
  assert jeval.main(argv) == 0
  (model / "README.md").write_text("a model card edit changes no weights")
  assert jeval.main(argv) == 0  # same weights: resumes
  shutil.copy(always_yes_model / "model.safetensors", model / "model.safetensors")  # retrained in place
  capsys.readouterr()
  assert jeval.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert "holds samples of a different run" in err and "weights differ" in err and "\n" not in err


@pytest.mark.parametrize("extra, message", [
    (["--tasks", "coco"], "--tasks coco: unknown task"),
    (["--tasks", "datbench:poetry"], "--tasks datbench:poetry: unknown DatBench capability"),
    (["--keep", "0", "--method", "latesim"], "--keep 0: keep at least 1 visual token"),
    (["--layer", "4", "--method", "latesim"], "--layer 4: outside [0, 4)"),
    (["--method", "magic"], "--method magic: unknown method"),
    (["--method", "fastv@9"], "--method fastv@9: outside [0, 4)"),
])
def test_bad_flags_give_one_clear_line(tiny_eval_model, eval_data, tmp_path, capsys, extra, message):
  argv = _common(tiny_eval_model, eval_data, tmp_path / "bad") + ["--tasks", "easyvqa"] + extra
  assert jeval.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and message in err and "\n" not in err


def test_unknown_model_name(eval_data, tmp_path, capsys):
  assert jeval.main(_common("llava-99b", eval_data, tmp_path / "m") + ["--tasks", "easyvqa"]) == 2
  err = capsys.readouterr().err.strip()
  assert "unknown model 'llava-99b'" in err and "\n" not in err


def test_output_directory_not_writable(tiny_eval_model, eval_data, tmp_path, capsys):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  assert jeval.main(_common(tiny_eval_model, eval_data, blocker / "out") + ["--tasks", "easyvqa"]) == 2
  err = capsys.readouterr().err.strip()
  assert "--output-path" in err and "not writable" in err and "\n" not in err
