"""benchmarks/gpu_check.py: its report computes the issue's targets right, one failing sub-benchmark never stops
a stage, and its CPU dry run (tiny widths, --quick) runs every stage end to end so the GPU command cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def timing(median, **extra):
  return {"min_ms": median * 0.9, "median_ms": median, "max_ms": median * 1.2, **extra}


def test_report_targets_from_stage_records():
  plan_ok, plan_slow = gpu_check.PLANS[0], gpu_check.PLANS[1]
  stages = {
      "jax": {"results": {"prefill_b8_none": timing(100.0, mfu=0.6),
                          f"prefill_b8_{plan_ok}": timing(50.0, bound_efficiency=0.9),
                          f"prefill_b8_{plan_slow}": timing(80.0, bound_efficiency=0.5),
                          "decode_b8": timing(20.0)},
              "skipped": {"decode_b1": "time budget: 3 s left, needs ~30 s"}, "failed": {}},
      "torch": {"results": {"prefill_b8": timing(150.0), "decode_b8": timing(10.0)}, "skipped": {},
                "failed": {"decode_b1": {"error": "RuntimeError: CUDA out of memory"}}},
  }
  meta = {"dry_run": False, "date": "d", "model": "m", "dtype": "bfloat16", "runs": 3, "wall_s": 1.0,
          "budget_s": 450, "skipped": {"qwen": "not in the registry"}}
  report, lines = gpu_check.build_report(stages, meta)
  by_name = {t["name"]: t for t in report["targets"]}
  speed = by_name["unpruned prefill speed vs transformers SDPA, batch 8"]
  assert speed["measured"] == pytest.approx(1.5) and speed["result"] == "PASS"  # torch 150 ms / jax 100 ms
  assert by_name["unpruned prefill MFU, batch 8"]["result"] == "PASS"
  assert by_name[f"pruned speedup / FLOPs ratio, {plan_ok}"]["result"] == "PASS"
  assert by_name[f"pruned speedup / FLOPs ratio, {plan_slow}"]["result"] == "FAIL"
  missing = by_name[f"pruned speedup / FLOPs ratio, {gpu_check.PLANS[2]}"]
  assert missing["result"] == "not measured" and "prefill_b8_" in missing["why_missing"]
  decode = {c["name"]: c for c in report["comparisons"]}["decode b8"]
  assert decode["jax_speed_vs_torch"] == pytest.approx(0.5)  # slower than torch is reported as such
  assert report["failed"] == {"torch/decode_b1": "RuntimeError: CUDA out of memory"}
  assert set(report["skipped"]) == {"jax/decode_b1", "qwen"}
  text = "\n".join(lines)
  assert "| unpruned prefill speed vs transformers SDPA, batch 8 | 1.50x | >= 1.30x | PASS |" in text
  assert "FAILED torch/decode_b1: RuntimeError: CUDA out of memory" in text


def test_record_survives_a_failure_and_skips_what_does_not_fit(tmp_path):
  record = gpu_check.Record(tmp_path / "stage.json", "jax", {})
  deadline = gpu_check.Deadline(60)
  assert record.run("broken", lambda: 1 / 0, deadline, 0) is None
  assert record.run("fine", lambda: {"x": 1}, deadline, 0) == {"x": 1}
  assert record.run("too_long", lambda: {"x": 2}, deadline, need_s=600) is None
  saved = json.loads((tmp_path / "stage.json").read_text())  # written as it goes
  assert saved["failed"]["broken"]["error"].startswith("ZeroDivisionError")
  assert saved["results"]["fine"]["x"] == 1
  assert saved["skipped"]["too_long"].startswith("time budget")


def test_cpu_dry_run_end_to_end(tmp_path):
  out = tmp_path / "gpu"
  proc = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), "--dry-run", "--quick", "--runs", "1",
                         "--budget-s", "400", "--out-dir", str(out)], capture_output=True, text=True, timeout=420)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  report = json.loads((out / "gpu_check.json").read_text())
  assert (out / "gpu_check.md").read_text().startswith("# GPU check (CPU dry run")
  assert report["failed"] == {}, report["failed"]
  jax_r, torch_r = report["stages"]["jax"]["results"], report["stages"]["torch"]["results"]
  for name in ("matmul_peak", "prefill_b8_none", f"prefill_b8_{gpu_check.PLANS[0]}", "attention_xla",
               "attention_pallas"):
    assert name in jax_r, (name, report["skipped"])
    assert jax_r[name]["min_ms"] <= jax_r[name]["median_ms"] <= jax_r[name]["max_ms"]
  assert jax_r["attention_pallas"]["path"] == "pallas-tpu"  # the TPU kernel, interpreted on CPU
  assert jax_r["attention_pallas"]["max_abs_diff_vs_xla"] <= 1e-4
  assert "prefill_b8" in torch_r
  assert report["skipped"]["jax/attention_cudnn"] == "cuDNN needs a GPU (dry run)"
  assert all(reason for reason in report["skipped"].values())
  measured = {t["name"]: t for t in report["targets"]}
  assert measured["unpruned prefill speed vs transformers SDPA, batch 8"]["measured"] > 0
