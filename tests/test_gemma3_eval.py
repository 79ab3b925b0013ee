"""`python -m jaxprune.eval` on a Gemma 3 checkpoint directory: the family's host side (chat template, the
processor's image expansion, Gemma3ImageProcessor) reloaded from disk, and plans on the fixed 4x4 token grid."""

from __future__ import annotations

import json

import pytest
from families.gemma3 import NV, save_tiny_gemma
from test_gemma3 import processor_parts

from jaxprune import eval as jeval


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("gemma_eval") / "model"
  save_tiny_gemma(path, seed=3)
  tokenizer, image_processor, _ = processor_parts()
  tokenizer.save_pretrained(path)
  image_processor.save_pretrained(path)
  return path


def test_eval_grid_on_gemma3(gemma_dir, eval_data, tmp_path, capsys):
  data_dir, _ = eval_data
  out = tmp_path / "run"
  code = jeval.main(["--model", str(gemma_dir), "--tasks", "easyvqa", "--limit", "2", "--batch-size", "2",
                     "--method", "none,fastv@2:8,pool@0:4", "--dtype", "float32", "--data-dir", str(data_dir),
                     "--output-path", str(out), "--no-plots", "--max-new-tokens", "2"])
  assert code == 0, capsys.readouterr().err
  rows = {r["plan"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
  base = rows["none"]
  assert base["n"] == 2 and base["keep"] == NV
  for plan, keep in (("fastv@2:8", 8), ("pool@0:4", 4)):
    row = rows[plan]
    assert row["n"] == 2 and row["n_failed"] == 0 and row["keep"] == keep, plan
    assert row["flops"] < base["flops"] and row["kv_bytes"] < base["kv_bytes"], plan
