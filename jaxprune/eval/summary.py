"""One results row from the sample records of a (task, config)."""

from __future__ import annotations

import statistics

import numpy as np

from jaxprune.data.tasks import has_harness
from jaxprune.eval.common import BLIND, NONE
from jaxprune.eval.records import unbits
from jaxprune.metrics import bootstrap_ci, summarise_scores
from jaxprune.prune.plan import PrunePlan


def _timings(records: list[dict]) -> list:
  return [r["batch_prefill_ms"] for r in records if r.get("batch_prefill_ms") is not None]


def prefill_reference(records: list[dict]) -> float | None:
  """The unpruned prefill's median ms over every interleaved round timed with any of `records` (one task's, all
  its configs): the one reference every row of the task is scaled from."""
  times = [t for timing in _timings(records) if isinstance(timing, dict) for t in timing["none"]]
  return statistics.median(times) if times else None


def prefill_timing(records: list[dict]) -> dict:
  """One config's prefill timings -> measured_ms (median of its own times), vs_none (median over rounds of its time
  over the unpruned's in the same round) and noise (the median absolute deviation of those ratios, relative to
  their median: load that changes within a round moves some ratios, and this says by how much). Older logs hold
  one float per batch: measured_ms only."""
  timings = _timings(records)
  rounds = [pair for t in timings if isinstance(t, dict) for pair in zip(t["plan"], t["none"])]
  if not rounds:
    return {"measured_ms": statistics.median(timings) if timings else None, "vs_none": None, "noise": None}
  ratios = [plan / none for plan, none in rounds]
  mid = statistics.median(ratios)
  return {"measured_ms": statistics.median(plan for plan, _ in rounds), "vs_none": mid,
          "noise": statistics.median(abs(r - mid) for r in ratios) / mid}


def summarise(task: str, config: str, records: list[dict], n_total: int, nv: int | None, seed: int,
              reference_ms: float | None = None) -> dict:
  """`nv`: the model's visual tokens per prompt when fixed (None: each record says its own `n_visual`).
  `keep` is what was actually kept: a plan's keep capped by the prompt's visual count (a mean over items when
  counts vary). `prefill_ms`: `reference_ms` (`prefill_reference`) times the plan's median same-round ratio to the
  reference unpruned prefill (for the unpruned row an A/A ratio near 1), so rows timed in different rounds still
  compare; without a reference (older logs), the plan's median.
  `harness_accuracy` (DatBench only): what the official harness's `compute_metrics` reports as the capability's
  accuracy (`jaxprune.metrics.summarise_scores`)."""
  records = sorted(records, key=lambda r: r["index"])
  scored = [r for r in records if not r["failed"]]
  judged = summarise_scores(scored)  # accuracy = mean score of direct items; judge items apart
  scores = [r["score"] for r in scored if r["eval_mode"] != "judge" and r.get("supported", True)]
  low, high = bootstrap_ci(scores, seed=seed)
  mean = lambda key: float(np.mean([r[key] for r in scored])) if scored else None
  timing = prefill_timing(records)
  prefill_ms = timing["measured_ms"] if timing["vs_none"] is None or reference_ms is None else \
      reference_ms * timing["vs_none"]
  maps = [unbits(r["kept"], r.get("n_visual", nv)) for r in scored if r.get("kept")]
  if len({len(m) for m in maps}) > 1:
    maps = []  # prompts with different visual counts: no common map to average
  recalls = [r["recall"] for r in scored if r.get("recall") is not None]
  counts = [r.get("n_visual", nv) for r in scored if r.get("n_visual", nv) is not None] or [nv or 0]
  if config in (NONE, BLIND):
    method, layer, cap = config, None, (None if config == NONE else 0)
  else:
    stage = PrunePlan.parse(config).stages[-1]
    method, layer, cap = stage.method, stage.layer, stage.keep
  kept = [n if cap is None else min(cap, n) for n in counts]
  keep = kept[0] if len(set(kept)) == 1 else round(float(np.mean(kept)), 2)
  return {
      "task": task, "method": method, "layer": layer, "keep": keep, "plan": config,
      "n": len(scored), "n_total": n_total, "n_failed": len(records) - len(scored),
      "n_judge": sum(r["eval_mode"] == "judge" for r in scored),
      "n_fallback": sum(bool(r.get("fallback")) for r in scored),
      "accuracy": judged["accuracy"], "correct_rate": judged["correct_rate"],
      "harness_accuracy": judged["harness_accuracy"] if has_harness(task) else None,
      "n_unsupported": judged["n_unsupported"], "n_judged": judged["n_judged"],
      "judge_accuracy": judged["judge_accuracy"], "accuracy_with_judge": judged["accuracy_with_judge"],
      "ci_low": None if not scores else float(low), "ci_high": None if not scores else float(high),
      "flops": mean("flops"), "prefill_ms": prefill_ms,
      "kv_bytes": mean("kv_bytes"),
      "kept_map": [round(float(x), 4) for x in np.mean(maps, axis=0)] if maps else None,
      "relevance_recall": float(np.mean(recalls)) if recalls else None,
      # items whose first-token logits held NaN/inf (their answers are garbage, not a model's 0%)
      "n_nonfinite": sum(bool(r.get("nonfinite")) for r in scored),
      "n_no_query": sum(bool(r.get("no_query")) for r in scored),
  }
