"""Every bad input of issue 14 item 7 ends in exit 2 (Ctrl-C: 130) with one line on stderr and no traceback.

Most cases run `jaxprune.eval.main(argv)` in-process (the error is raised before or right after the tiny model
loads); Ctrl-C runs the real CLI in a subprocess and interrupts it mid-run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxprune import eval as jeval


def _argv(model, data, out, *extra, limit=4):
  data_dir, datbench = data
  local = ["--datbench-dir", str(datbench)] if datbench is not None else []
  return ["--model", str(model), "--limit", str(limit), "--batch-size", "4", "--data-dir", str(data_dir), *local,
          "--max-new-tokens", "2", "--time-batches", "0", "--no-plots", "--output-path", str(out),
          "--tasks", "easyvqa", *extra]


def _one_error_line(capsys, argv, *needles, code=2) -> str:
  assert jeval.main(argv) == code
  err = capsys.readouterr().err
  lines = [line for line in err.splitlines() if line.strip()]
  assert len(lines) == 1, err
  assert "Traceback" not in err and lines[0].startswith("error: "), err
  for needle in needles:
    assert needle in lines[0], lines[0]
  return lines[0]


@pytest.mark.parametrize("extra, needle", [
    (["--max-new-tokens", "0"], "--max-new-tokens 0: must be >= 1"),
    (["--bucket", "0"], "--bucket 0: must be >= 1"),
    (["--bucket", "-8"], "--bucket -8: must be >= 1"),
    (["--fork-rows", "0"], "--fork-rows 0: must be >= 1"),
    (["--dtype", "float64"], "--dtype float64: not supported"),
    (["--dtype", "int8"], "--dtype int8: not supported"),
    (["--dtype", "float16"], "--dtype float16: not supported on CPU"),
    (["--keep", ""], "--keep '': empty list"),
    (["--keep", " , "], "--keep ' , ': empty list"),
    (["--method", ""], "--method '': empty list"),
    (["--layer", ""], "--layer '': empty list"),
    (["--tasks", ""], "--tasks '': empty list"),
])
def test_bad_flags(tiny_eval_model, eval_data, tmp_path, capsys, extra, needle):
  _one_error_line(capsys, _argv(tiny_eval_model, eval_data, tmp_path / "out", *extra), needle)


def test_unknown_architecture(tiny_eval_model, eval_data, tmp_path, capsys):
  model = tmp_path / "gpt2"
  shutil.copytree(tiny_eval_model, model)
  config = json.loads((model / "config.json").read_text())
  config.update(architectures=["GPT2LMHeadModel"], model_type="gpt2")
  (model / "config.json").write_text(json.dumps(config))
  _one_error_line(capsys, _argv(model, eval_data, tmp_path / "out"), "unknown architecture 'GPT2LMHeadModel'",
                  str(model / "config.json"))


def test_datbench_without_network_or_local_copy(tiny_eval_model, eval_data, tmp_path, capsys, monkeypatch):
  import huggingface_hub.constants
  monkeypatch.delenv("JAXPRUNE_DATBENCH_DIR", raising=False)
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network here either way; fast
  argv = _argv(tiny_eval_model, (tmp_path / "tfds", None), tmp_path / "out")
  argv[argv.index("easyvqa")] = "datbench:chart"
  _one_error_line(capsys, argv, "--tasks datbench:chart", "no local copy", "unreachable")


@pytest.fixture(scope="module")
def tiny_orbax(tiny_eval_model, tmp_path_factory) -> Path:
  from jaxprune.convert.hf import load_model, save_orbax
  return save_orbax(load_model(tiny_eval_model, dtype="float32"), tmp_path_factory.mktemp("orbax") / "tiny")


def _orbax_copy(tiny_orbax, tmp_path) -> tuple[Path, list[Path]]:
  model = tmp_path / "orbax"
  shutil.copytree(tiny_orbax, model)
  data_files = sorted((model / "params").rglob("ocdbt.process_0/d/*"), key=lambda f: -f.stat().st_size)
  assert data_files, "orbax wrote no OCDBT data files: the layout changed"
  return model, data_files


def test_orbax_missing_array_file(tiny_orbax, eval_data, tmp_path, capsys):
  model, data_files = _orbax_copy(tiny_orbax, tmp_path)
  data_files[0].unlink()
  _one_error_line(capsys, _argv(model, eval_data, tmp_path / "out"), "array '", "cannot be read",
                  "missing or truncated")


def test_orbax_truncated_array_file(tiny_orbax, eval_data, tmp_path, capsys):
  model, data_files = _orbax_copy(tiny_orbax, tmp_path)
  data = data_files[0].read_bytes()
  data_files[0].write_bytes(data[:len(data) // 2])
  _one_error_line(capsys, _argv(model, eval_data, tmp_path / "out"), "array '", "cannot be read")


GOOD_RECORD = json.dumps({"task": "easyvqa", "config": "none", "id": "test-00000", "index": 0,
                          "eval_mode": "direct", "failed": None, "score": 1.0})


@pytest.mark.parametrize("bad", ["not json at all", "[1, 2, 3]", '{"task": "easyvqa"}', '{"task": []}'])
def test_malformed_sample_line(tiny_eval_model, eval_data, tmp_path, capsys, bad):
  out = tmp_path / "out"
  out.mkdir()
  (out / "samples.jsonl").write_text("\n".join([GOOD_RECORD, bad, GOOD_RECORD]) + "\n")
  _one_error_line(capsys, _argv(tiny_eval_model, eval_data, out), f"{out / 'samples.jsonl'}:2: not a sample record")


def test_torn_last_sample_line_is_dropped_not_an_error(tiny_eval_model, eval_data, tmp_path):
  out = tmp_path / "out"
  argv = _argv(tiny_eval_model, eval_data, out)
  assert jeval.main(argv) == 0
  whole = json.loads((out / "results.json").read_text())["rows"]
  text = (out / "samples.jsonl").read_text()
  (out / "samples.jsonl").write_text(text[:-25])  # a kill mid-write leaves a cut last line
  assert jeval.main(argv) == 0
  assert (out / "samples.jsonl").read_text().count("\n") == 4
  again = json.loads((out / "results.json").read_text())["rows"]
  assert [r["accuracy"] for r in again] == [r["accuracy"] for r in whole]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_malformed_run_json(tiny_eval_model, eval_data, tmp_path, capsys, content):
  out = tmp_path / "out"
  out.mkdir()
  (out / "samples.jsonl").write_text(GOOD_RECORD + "\n")
  (out / "run.json").write_text(content)
  _one_error_line(capsys, _argv(tiny_eval_model, eval_data, out), str(out / "run.json"))


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tiny_eval_model, eval_data, tmp_path):
  out = tmp_path / "out"
  command = [sys.executable, "-m", "jaxprune.eval",
             *_argv(tiny_eval_model, eval_data, out, "--method", "none,random", "--layer", "1", "--keep", "4",
                    limit=40)]
  proc = subprocess.Popen(command, env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  samples = out / "samples.jsonl"
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if samples.exists() and samples.read_text().count("\n") >= 4:
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the run finished before it could be interrupted"
  proc.send_signal(signal.SIGINT)
  err = proc.communicate(timeout=120)[1]
  assert proc.returncode == 130, err
  lines = [line for line in err.splitlines() if line.strip()]
  assert "Traceback" not in err and len(lines) == 1, err
  assert lines[0].startswith("interrupted: ") and "rerun the same command to resume" in lines[0]
  assert str(samples) in lines[0]
  assert not (out / "results.json").exists()
