"""A finished study's records -> analysis.json: every number its report shows, and nothing the report must
recompute (the report renders from this file alone).

Per task: accuracy unpruned / blind / on the swept (blind-filtered) items; every plan's accuracy, FLOPs and
relevance recall; the `random` control per (layer, budget) over its draws; the layer profile and the
information horizon; the best plan and the best accuracy per FLOP per budget; every method against the
same-layer `random` and `latesim` against every other signal (paired bootstrap over items and draws, Holm
across each table); the gap to `oracle`; where kept tokens lie, by horizontal band of each image.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxprune.eval.common import NONE
from jaxprune.eval.records import SampleLog, unbits
from jaxprune.prune.plan import PrunePlan
from jaxprune.study import stats
from jaxprune.study.cli import StudyError

ANALYSIS_FILE = "analysis.json"
BANDS = 4  # horizontal bands of every image (top to bottom) for the position section
HORIZON_POINTS = 0.02  # the information horizon: random loses at most this much accuracy to unpruned
BOUNDS = ("oracle", "anti-oracle")
CONTROLS = ("random",)
OURS = "latesim"


def _records(path: Path) -> dict:
  if not path.exists():
    raise StudyError(f"{path}: missing (the stage did not run; rerun the study to resume)")
  return SampleLog(path, writer=False).records


def _stage_of(config: str):
  """A one-stage plan's (method, layer, keep, seed or None)."""
  stage = PrunePlan.parse(config).stages[0]
  return stage.method, stage.layer, stage.keep, dict(stage.options).get("seed")


def _accuracy(records: Sequence[dict]) -> float | None:
  return float(np.mean([r["score"] for r in records])) if records else None


def _bands(record: dict) -> np.ndarray:
  """[n_visual] the band (0 = top) of each visual slot, from the item's image grids in slot order."""
  return _bands_of(tuple(map(tuple, record["grids"])))


@functools.lru_cache(maxsize=4096)
def _bands_of(grids: tuple[tuple[int, int, int], ...]) -> np.ndarray:
  """One layout's bands, computed once: every plan's record of an item carries the same grids."""
  out = []
  for t, h, w in grids:
    rows = np.repeat(np.arange(h), w)  # raster order within one frame
    out.append(np.tile(rows * BANDS // h, t))
  return np.concatenate(out) if out else np.zeros(0, int)


def position(records: Sequence[dict]) -> dict | None:
  """Kept share per band (of all kept tokens), the band's share of all slots (what a position-blind method
  keeps), and recall of the relevant slots per band when the task gives relevance; pooled over items."""
  kept_in, slots_in, hit, relevant_in = (np.zeros(BANDS) for _ in range(4))
  with_relevance = False
  for r in records:
    if "kept" not in r or not r.get("grids"):
      continue
    bands = _bands(r)
    kept = unbits(r["kept"], r["n_visual"])
    kept_in += np.bincount(bands[kept], minlength=BANDS)
    slots_in += np.bincount(bands, minlength=BANDS)
    if "relevant" in r:
      with_relevance = True
      relevant = unbits(r["relevant"], r["n_visual"])
      hit += np.bincount(bands[kept & relevant], minlength=BANDS)
      relevant_in += np.bincount(bands[relevant], minlength=BANDS)
  if not slots_in.sum():
    return None
  share = lambda x: (x / max(x.sum(), 1)).tolist()
  recall = [float(h / n) if n else None for h, n in zip(hit, relevant_in)] if with_relevance else None
  return {"kept_share": share(kept_in), "slot_share": share(slots_in), "recall": recall}


def _plan_rows(sweep: dict, task: str, ids: list[str], base_flops: float) -> list[dict]:
  """One row per swept plan of `task` (its per-item scores aligned with `ids`, kept out of the JSON)."""
  by_config = collections.defaultdict(dict)
  for (t, config, item), r in sweep.items():
    if t == task and config != NONE and not r.get("failed"):
      by_config[config][item] = r
  rows = []
  for config, recs in by_config.items():
    method, layer, keep, seed = _stage_of(config)
    have = [recs[i] for i in ids if i in recs]
    if len(have) < len(ids):  # a stage that is still incomplete: the study resumes before analysing
      raise StudyError(f"sweep: plan {config} answered {len(have)} of {len(ids)} items of {task}; rerun to resume")
    recalls = [r["recall"] for r in have if "recall" in r]
    rows.append({"plan": config, "method": method, "layer": layer, "keep": keep, "seed": seed,
                 "accuracy": _accuracy(have), "flops_ratio": float(np.mean([r["flops"] for r in have]) / base_flops),
                 "recall": float(np.mean(recalls)) if recalls else None, "position": position(have),
                 "_scores": np.array([r["score"] for r in have], np.float64)})
  return sorted(rows, key=lambda r: (r["method"], r["layer"], r["keep"], r["seed"] or 0))  # as tables read


def _controls(rows: list[dict]) -> dict[tuple[int, int], dict]:
  """(layer, keep) -> the `random` control there: scores [draws, items], accuracy per draw."""
  out = collections.defaultdict(list)
  for row in rows:
    if row["method"] in CONTROLS:
      out[(row["layer"], row["keep"])].append(row)
  return {at: {"scores": np.stack([r["_scores"] for r in draws]), "accuracy": [r["accuracy"] for r in draws],
               "seeds": [r["seed"] or 0 for r in draws]}
          for at, draws in out.items()}  # draws in seed order: `_plan_rows` sorts by seed


def _compare_table(pairs: list[tuple[dict, np.ndarray, np.ndarray]], n_resamples: int) -> list[dict]:
  """Paired bootstrap per (info, method scores, control scores); Holm across the whole table."""
  comparisons = [stats.paired_bootstrap(m, c, n_resamples=n_resamples, seed=k) for k, (_, m, c) in enumerate(pairs)]
  adjusted, _ = stats.holm([c.p for c in comparisons])
  verdicts = stats.verdicts(comparisons)
  return [{**info, **c.to_json(), "p_holm": p, "verdict": v}
          for (info, _, _), c, p, v in zip(pairs, comparisons, adjusted, verdicts)]


def layer_profile(rows: list[dict], controls: dict, unpruned: float, keeps: list[int]) -> dict:
  """Per budget: random's mean accuracy (and its spread over draws) by layer, and the information horizon: the
  first layer from which random, at that layer and every later swept one, loses at most HORIZON_POINTS."""
  profile, horizon = {}, {}
  for keep in keeps:
    layers = sorted(layer for layer, k in controls if k == keep)
    points = [{"layer": layer, "mean": float(np.mean(controls[(layer, keep)]["accuracy"])),
               "low": min(controls[(layer, keep)]["accuracy"]), "high": max(controls[(layer, keep)]["accuracy"])}
              for layer in layers]
    profile[str(keep)] = points
    ok = [p["mean"] >= unpruned - HORIZON_POINTS for p in points]
    first = next((i for i in range(len(ok)) if all(ok[i:])), None)
    horizon[str(keep)] = None if first is None else points[first]["layer"]
  return {"random": profile, "horizon": horizon}


def best_plans(rows: list[dict], keeps: list[int], vs_random: list[dict], oracle: dict) -> list[dict]:
  """Per budget: the most accurate plan, the plan with the most accuracy per unit of relative FLOPs, which plans
  beat the same-layer random (Holm), and the most accurate plan's gap to the oracle at its layer. Bounds and
  controls are not candidates: they are not methods one would deploy."""
  out = []
  for keep in keeps:
    real = [r for r in rows if r["keep"] == keep and r["method"] not in BOUNDS + CONTROLS + ("uniform",)]
    if not real:
      continue
    best = max(real, key=lambda r: (r["accuracy"], -r["flops_ratio"]))
    thrifty = max(real, key=lambda r: (r["accuracy"] / r["flops_ratio"], r["accuracy"]))
    compared = [c for c in vs_random if c["keep"] == keep and c["method"] != "uniform"]
    out.append({"keep": keep, "best": best["plan"], "accuracy": best["accuracy"], "flops_ratio": best["flops_ratio"],
                "per_flop": thrifty["plan"], "per_flop_accuracy": thrifty["accuracy"],
                "per_flop_flops_ratio": thrifty["flops_ratio"],
                "beat_random": [c["plan"] for c in compared if c["verdict"] == "better"], "compared": len(compared),
                "oracle_at_best": oracle.get((best["layer"], keep))})
  return out


def _ranks(x: np.ndarray) -> np.ndarray:
  """Ranks 0.. with ties given their mean rank (what Spearman's rho needs)."""
  order = np.argsort(x, kind="stable")
  ranks = np.empty(len(x))
  ranks[order] = np.arange(len(x))
  for value in np.unique(x):
    tied = x == value
    ranks[tied] = ranks[tied].mean()
  return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
  """Spearman's rank correlation; None when either side is constant (no ranking to compare)."""
  rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
  if rx.std() == 0 or ry.std() == 0:
    return None
  return float(np.corrcoef(rx, ry)[0, 1])


def recall_vs_accuracy(rows: list[dict]) -> list[dict]:
  """Per (layer, budget) with at least 3 real plans: do plans that keep more relevant tokens answer better?
  Within one budget, so that "more tokens" does not drive both numbers."""
  groups = collections.defaultdict(list)
  for r in rows:
    if r["recall"] is not None and r["method"] not in BOUNDS:
      groups[(r["layer"], r["keep"])].append(r)
  out = []
  for (layer, keep), at in sorted(groups.items()):
    if len(at) >= 3:
      out.append({"layer": layer, "keep": keep, "plans": len(at),
                  "rho": spearman([r["recall"] for r in at], [r["accuracy"] for r in at])})
  return out


def full_bounds(full: dict, task: str, configs: list[str]) -> list[dict]:
  """The bound plans run on every item (the full stage): accuracy and relevance recall."""
  out = []
  for config in configs:
    recs = [r for (t, c, _), r in full.items() if t == task and c == config]
    recalls = [r["recall"] for r in recs if "recall" in r]
    out.append({"plan": config, "n": len(recs), "accuracy": _accuracy(recs),
                "recall": float(np.mean(recalls)) if recalls else None})
  return out


def analyse_task(task: str, full: dict, blind: dict, sweep: dict, plan: dict) -> dict:
  full_none = [r for (t, c, _), r in full.items() if t == task and c == NONE]
  blind_recs = [r for (t, _, _), r in blind.items() if t == task]
  # items that could not run (an unreadable image) fail for every plan alike: compared on the others
  swept = {i: r for (t, c, i), r in sweep.items() if t == task and c == NONE and not r.get("failed")}
  ids = sorted(swept)
  if not ids:
    raise StudyError(f"sweep: no unpruned answers for {task} (every item answered blind, or the stage did not run)")
  base = [swept[i] for i in ids]
  base_flops = float(np.mean([r["flops"] for r in base]))
  rows = _plan_rows(sweep, task, ids, base_flops)
  controls = _controls(rows)
  none_scores = np.array([r["score"] for r in base], np.float64)
  unpruned = float(none_scores.mean())
  n = plan["bootstrap"]
  pairs = [({"plan": r["plan"], "method": r["method"], "layer": r["layer"], "keep": r["keep"]}, r["_scores"],
            controls[(r["layer"], r["keep"])]["scores"])
           for r in rows if r["method"] not in CONTROLS + BOUNDS and (r["layer"], r["keep"]) in controls]
  ours = {(r["layer"], r["keep"]): r for r in rows if r["method"] == OURS}
  rivals = [({"layer": r["layer"], "keep": r["keep"], "other": r["plan"]}, ours[(r["layer"], r["keep"])]["_scores"],
             r["_scores"]) for r in rows
            if r["method"] not in (OURS, *CONTROLS, *BOUNDS) and (r["layer"], r["keep"]) in ours]
  rivals += [({"layer": layer, "keep": keep, "other": f"random@{layer}:{keep} (all draws)"}, ours[(layer, keep)]["_scores"],
              c["scores"]) for (layer, keep), c in controls.items() if (layer, keep) in ours]
  oracle = {(r["layer"], r["keep"]): r["accuracy"] for r in rows if r["method"] == "oracle"}
  gaps = [{"plan": r["plan"], "method": r["method"], "layer": r["layer"], "keep": r["keep"],
           "oracle": oracle[(r["layer"], r["keep"])], "gap": oracle[(r["layer"], r["keep"])] - r["accuracy"]}
          for r in rows if r["method"] not in BOUNDS + CONTROLS and (r["layer"], r["keep"]) in oracle]
  vs_random = _compare_table(pairs, n)
  return {
      "full_bounds": full_bounds(full, task, plan.get("full_plans", [])),
      "items": {"all": len(full_none), "blind_correct": int(sum(r["score"] >= 0.5 for r in blind_recs)),
                "swept": len(ids)},
      "accuracy": {"full": _accuracy(full_none), "blind": _accuracy(blind_recs), "swept_unpruned": unpruned},
      "plans": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
      "controls": [{"layer": layer, "keep": keep, "seeds": c["seeds"], "accuracy": c["accuracy"]}
                   for (layer, keep), c in sorted(controls.items())],
      **layer_profile(rows, controls, unpruned, plan["keeps"]),
      "best": best_plans(rows, plan["keeps"], vs_random, oracle),
      "vs_random": vs_random,
      "latesim_vs": _compare_table(rivals, n),
      "oracle_gap": gaps,
      "recall_vs_accuracy": recall_vs_accuracy(rows),
  }


def analyse(out: Path, plan: dict) -> dict:
  """The study directory's three stages -> the analysis dict (JSON-ready)."""
  full, blind, sweep = (_records(out / stage / "samples.jsonl") for stage in ("full", "blind", "sweep"))
  return {"version": 1, "study": {k: v for k, v in plan.items() if k != "plans"},
          "tasks": {task: analyse_task(task, full, blind, sweep, plan) for task in plan["tasks"]}}
