"""`python -m jaxprune.eval` on a Qwen2.5-VL checkpoint directory: the family's own chat template and image
processor, dynamic-resolution batches, per-prompt visual counts in the records and rows."""

from __future__ import annotations

import json

import pytest
from families.qwen2_5_vl import save_tiny_qwen
from test_qwen2_5_vl import local_processor_files

from jaxprune import eval as jeval


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("qwen_eval") / "model"
  save_tiny_qwen(path, seed=2)
  local_processor_files(path)
  return path


def test_eval_grid_on_qwen(qwen_dir, eval_data, tmp_path, capsys):
  data_dir, _ = eval_data
  out = tmp_path / "run"
  code = jeval.main(["--model", str(qwen_dir), "--tasks", "easyvqa", "--limit", "4", "--batch-size", "2",
                     "--method", "none,latesim@1:8,fastv@1:8,random@0:8,uniform@0:8,divprune@0:8,clsattn@0:8",
                     "--dtype", "float32", "--data-dir", str(data_dir), "--output-path", str(out), "--no-plots",
                     "--max-new-tokens", "2"])
  assert code == 0, capsys.readouterr().err
  results = json.loads((out / "results.json").read_text())
  rows = {r["plan"]: r for r in results["rows"]}
  assert results["num_visual"] is None  # it depends on the image
  base = rows["none"]
  assert base["n"] == 4 and base["keep"] == 64  # 64x64 images -> 16x16 patches -> 8x8 merged tokens
  for plan, row in rows.items():
    assert row["n"] == 4 and row["n_failed"] == 0, plan
    if plan != "none":
      assert row["keep"] == 8 and row["flops"] < base["flops"] and row["kv_bytes"] < base["kv_bytes"], plan
  records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
  assert all(r["n_visual"] == 64 for r in records)


def test_qwen_refuses_a_fixed_grid_method_in_one_line(qwen_dir, eval_data, tmp_path, capsys):
  data_dir, _ = eval_data
  code = jeval.main(["--model", str(qwen_dir), "--tasks", "easyvqa", "--limit", "2", "--method", "pool@0:4",
                     "--dtype", "float32", "--data-dir", str(data_dir), "--output-path", str(tmp_path / "r")])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and "pool" in err[0] and "fixed token grid" in err[0]
