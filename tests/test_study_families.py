"""The study end to end on the tiny Qwen2.5-VL, Gemma 3 and LLaVA-OneVision checkpoints (LLaVA-1.5:
tests/test_study.py). Gemma 3's fixed grid maps easy-VQA's relevance (oracle bounds, recall by band); Qwen's
dynamic grids and OneVision's views have no single grid, so the same task runs without relevance, beside a
DatBench-format task; kept tokens are placed by band from each item's own layout either way."""

from __future__ import annotations

import json

import pytest
from families.gemma3 import save_tiny_gemma
from families.llava_onevision import save_tiny_onevision
from families.qwen2_5_vl import save_tiny_qwen
from test_gemma3 import processor_parts
from test_llava_onevision import local_processor_files as onevision_files
from test_qwen2_5_vl import local_processor_files as qwen_files
from test_study import assert_rerenders_identically

from jaxprune.study import cli as study_cli


def _qwen(path):
  save_tiny_qwen(path, seed=2)
  qwen_files(path)


def _gemma(path):
  save_tiny_gemma(path, seed=3)
  tokenizer, image_processor, _ = processor_parts()
  tokenizer.save_pretrained(path)
  image_processor.save_pretrained(path)


def _onevision(path):
  save_tiny_onevision(path, seed=4)
  onevision_files(path)


# family -> (checkpoint maker, the study's tasks, whether they give relevance on this family)
CASES = {"qwen2_5_vl": (_qwen, "easyvqa,datbench:chart", False),
         "gemma3": (_gemma, "easyvqa", True),
         "gemma3-datbench": (_gemma, "datbench:chart", False),
         "llava_onevision": (_onevision, "easyvqa,datbench:chart", False)}


@pytest.mark.parametrize("case", CASES)
def test_study_end_to_end(case, eval_data, tmp_path):
  make, tasks, relevance = CASES[case]
  make(tmp_path / "model")
  data_dir, datbench = eval_data
  out = tmp_path / "study"
  argv = ["--model", str(tmp_path / "model"), "--tasks", tasks, "--data-dir", str(data_dir), "--datbench-dir",
          str(datbench), "--output-path", str(out), "--layer", "0,1", "--keep", "4", "--seeds", "0,1",
          "--method", "latesim,fastv,clsattn,oracle", "--dtype", "float32", "--limit", "4", "--batch-size", "2",
          "--max-new-tokens", "2", "--time-batches", "0", "--bootstrap", "100"]
  assert study_cli.main(argv) == 0
  analysis = json.loads((out / "analysis.json").read_text())
  assert analysis["study"]["relevance"] == relevance
  for name in tasks.split(","):
    task = analysis["tasks"][name]
    plans = {p["plan"]: p for p in task["plans"]}
    assert {"random@0:4[seed=0]", "random@1:4[seed=1]", "latesim@1:4", "fastv@1:4", "clsattn@0:4"} <= set(plans)
    assert ("oracle@1:4[seed=0]" in plans) == relevance and bool(task["full_bounds"]) == relevance
    for plan in plans.values():
      position = plan["position"]
      assert sum(position["kept_share"]) == pytest.approx(1.0) and sum(position["slot_share"]) == pytest.approx(1.0)
      assert (position["recall"] is not None) == relevance, plan["plan"]
    assert {c["plan"] for c in task["vs_random"]} == {"latesim@0:4", "latesim@1:4", "fastv@1:4", "clsattn@0:4",
                                                      "clsattn@1:4"}
  assert_rerenders_identically(out)
