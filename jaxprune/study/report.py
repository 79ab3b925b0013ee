"""analysis.json -> README.md and PNG plots: the study's one-page report, rendered from that file alone (the
same file gives the same bytes), so a finished study can be re-rendered without its records."""

from __future__ import annotations

import json
from pathlib import Path

from jaxprune.report import sanitize
from jaxprune.study.analysis import ANALYSIS_FILE, BANDS, HORIZON_POINTS
from jaxprune.study.cli import StudyError


def _pct(x: float | None, digits: int = 1, sign: bool = False) -> str:
  if x is None:
    return "-"
  return f"{100 * x:+.{digits}f}" if sign else f"{100 * x:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _cell(c: dict) -> str:
  """A paired comparison: difference in points, its CI, and the Holm verdict."""
  return f"{_pct(c['diff'], sign=True)} [{_pct(c['low'], sign=True)}, {_pct(c['high'], sign=True)}] {c['verdict']}"


def _profile(task: dict, keeps: list[int]) -> list[str]:
  layers = sorted({p["layer"] for points in task["random"].values() for p in points})
  at = {(k, p["layer"]): p for k, points in task["random"].items() for p in points}
  rows = [[str(layer)] + [(f"{_pct(at[(str(k), layer)]['mean'])} ({_pct(at[(str(k), layer)]['low'])}-"
                           f"{_pct(at[(str(k), layer)]['high'])})") if (str(k), layer) in at else "-" for k in keeps]
          for layer in layers]
  rows.append(["horizon"] + [str(task["horizon"].get(str(k), "-")) if task["horizon"].get(str(k)) is not None
                             else "none" for k in keeps])
  return _table(["layer"] + [f"random, keep {k}" for k in keeps], rows)


def _verdict_table(comparisons: list[dict], keeps: list[int], row_key: str) -> list[str]:
  by_row: dict[str, dict] = {}
  for c in comparisons:
    by_row.setdefault(c[row_key], {})[c["keep"]] = c
  rows = [[name] + [_cell(cells[k]) if k in cells else "-" for k in keeps] for name, cells in by_row.items()]
  return _table([row_key] + [f"keep {k}" for k in keeps], rows)


def _latesim_table(comparisons: list[dict], plans: list[dict]) -> list[str]:
  """One row per (budget, layer) where latesim ran: its accuracy, then latesim minus each other signal at that
  layer and budget (points, Holm verdict); the wide form reads across signals at a glance."""
  accuracy = {(p["layer"], p["keep"]): p["accuracy"] for p in plans if p["method"] == "latesim"}
  others = sorted({c["other"].split("@")[0] for c in comparisons})
  cells = {(c["layer"], c["keep"], c["other"].split("@")[0]): c for c in comparisons}
  mark = {"better": "+", "worse": "-", "tie": "=", "-": ""}
  rows = []
  for layer, keep in sorted(accuracy, key=lambda lk: (lk[1], lk[0])):
    row = [str(keep), str(layer), _pct(accuracy[(layer, keep)])]
    for other in others:
      c = cells.get((layer, keep, other))
      row.append("" if c is None else f"{_pct(c['diff'], sign=True)} {mark[c['verdict']]}")
    rows.append(row)
  return _table(["keep", "layer", "latesim %"] + [f"vs {o}" for o in others], rows)


def _position_table(plans: list[dict], keep: int) -> list[str]:
  chosen = [p for p in plans if p["keep"] == keep and p["position"] is not None]
  if not chosen:
    return ["(no kept-token positions recorded)"]
  relevance = any(p["position"]["recall"] is not None for p in chosen)
  bands = [f"band {b + 1}" for b in range(BANDS)]
  header = ["plan"] + [f"kept share, {b}" for b in bands] + ([f"recall, {b}" for b in bands] if relevance else [])
  rows = [["(all slots)"] + [_pct(x) for x in chosen[0]["position"]["slot_share"]] + (["-"] * BANDS if relevance else [])]
  for p in chosen:
    pos = p["position"]
    rows.append([p["plan"]] + [_pct(x) for x in pos["kept_share"]]
                + ([_pct(x) for x in pos["recall"] or [None] * BANDS] if relevance else []))
  return _table(header, rows)


def _bounds(task: dict) -> list[str]:
  if not task.get("full_bounds"):
    return []
  return ["### The bounds on every item (layer 0)", "",
          *_table(["plan", "items", "accuracy %", "relevance recall %"],
                  [[f"`{b['plan']}`", str(b["n"]), _pct(b["accuracy"]), _pct(b["recall"])] for b in task["full_bounds"]]),
          ""]


def task_section(name: str, task: dict, study: dict, plots: dict[str, str]) -> list[str]:
  keeps, acc, items = study["keeps"], task["accuracy"], task["items"]
  lines = [f"## {name}", "",
           f"{items['all']} items; the blind (text-only) control answers {items['blind_correct']} of them, so the "
           f"sweep runs on the other {items['swept']}. Accuracy: unpruned {_pct(acc['full'])} on all items, blind "
           f"{_pct(acc['blind'])}, unpruned {_pct(acc['swept_unpruned'])} on the swept items (every number below "
           f"is on the swept items).", "",
           *_bounds(task), "### Layer profile and information horizon", "",
           f"`random` accuracy by pruning layer (mean of {len(study['seeds'])} per-item draws, range across draws). "
           f"The horizon is the first layer from which `random` loses at most {100 * HORIZON_POINTS:.0f} points to "
           "unpruned at every later swept layer.", "", *_profile(task, keeps), ""]
  if "profile" in plots:
    lines += [f"![layer profile]({plots['profile']})", ""]
  lines += ["### Conclusions per budget", "",
            "Real methods only (not `random`, `uniform` or the oracle bounds). Accuracy per FLOP: accuracy divided by "
            "the plan's prefill FLOPs relative to unpruned.", "",
            *_table(["keep", "most accurate", "FLOPs", "most accuracy per FLOP", "beat same-layer random (Holm)",
                     "oracle at that layer"],
                    [[str(b["keep"]), f"`{b['best']}` {_pct(b['accuracy'])}", f"{b['flops_ratio']:.2f}x",
                      f"`{b['per_flop']}` {_pct(b['per_flop_accuracy'])} at {b['per_flop_flops_ratio']:.2f}x",
                      f"{len(b['beat_random'])} of {b['compared']}"
                      + (": " + ", ".join(f"`{p}`" for p in b["beat_random"]) if b["beat_random"] else ""),
                      _pct(b["oracle_at_best"])] for b in task["best"]]), ""]
  if "frontier" in plots:
    lines += [f"![accuracy vs FLOPs]({plots['frontier']})", ""]
  lines += ["### Against the same-layer random control", "",
            "Accuracy difference in points to `random` at the same layer and budget, with a 95% paired bootstrap CI "
            "over items and the control's draws; the verdict is Holm-corrected across this whole table.", "",
            *_verdict_table(task["vs_random"], keeps, "method@layer"), ""]
  if task["latesim_vs"]:
    lines += ["### latesim against every other signal", "",
              "latesim minus the other signal at the same layer and budget, in points (`random`: the mean over its "
              "draws); `+` better, `-` worse, `=` tie by a paired bootstrap over items and draws, Holm-corrected "
              "across this table.", "", *_latesim_table(task["latesim_vs"], task["plans"]), ""]
  if task["oracle_gap"]:
    lines += ["### Distance from the oracle bound", "",
              *_table(["plan", "oracle acc %", "gap, points"],
                      [[f"`{g['plan']}`", _pct(g["oracle"]), _pct(g["gap"])] for g in task["oracle_gap"]]), ""]
  if task.get("recall_vs_accuracy"):
    rhos = [g["rho"] for g in task["recall_vs_accuracy"] if g["rho"] is not None]
    lines += ["### Does keeping the relevant tokens help?", "",
              "Per pruning layer and budget, over the plans that prune there (bounds excluded): Spearman's rank "
              "correlation between relevance recall and accuracy.", "",
              *_table(["layer", "keep", "plans", "rho"],
                      [[str(g["layer"]), str(g["keep"]), str(g["plans"]),
                        "-" if g["rho"] is None else f"{g['rho']:+.2f}"] for g in task["recall_vs_accuracy"]]),
              "", f"Positive in {sum(r > 0 for r in rhos)} of {len(rhos)} groups with a ranking.", ""]
  keep = keeps[len(keeps) // 2]  # a middle budget: at the smallest every method keeps few cells anywhere
  lines += ["### Where kept tokens lie", "",
            f"Share of kept tokens per horizontal band of each image (band 1 = top) at keep {keep}, against the "
            "bands' share of all slots (what a position-blind method keeps)"
            + ("; recall of the relevant slots per band." if task["plans"] and any(
                p["position"] and p["position"]["recall"] is not None for p in task["plans"]) else "."), "",
            *_position_table(task["plans"], keep), ""]
  return lines


def _plots(name: str, task: dict, study: dict, out: Path) -> dict[str, str]:
  """The layer profile and the accuracy-vs-FLOPs frontier as PNGs (matplotlib Agg, fixed metadata)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  meta = {"Software": None}  # no version string: the same analysis gives the same bytes on any matplotlib
  files = {}
  fig, ax = plt.subplots(figsize=(6, 3.6))
  for keep, points in task["random"].items():
    ax.plot([p["layer"] for p in points], [100 * p["mean"] for p in points], marker="o", label=f"random, keep {keep}")
  ax.axhline(100 * task["accuracy"]["swept_unpruned"], color="k", ls="--", lw=1, label="unpruned")
  ax.set(xlabel="pruning layer", ylabel="accuracy %", title=f"{name}: layer profile")
  ax.legend(fontsize=7)
  files["profile"] = f"profile_{sanitize(name)}.png"
  fig.savefig(out / files["profile"], dpi=110, bbox_inches="tight", metadata=meta)
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(6, 3.6))
  for method in sorted({p["method"] for p in task["plans"]}):
    pts = [p for p in task["plans"] if p["method"] == method]
    ax.scatter([p["flops_ratio"] for p in pts], [100 * p["accuracy"] for p in pts], s=12, label=method)
  front, best = [], -1.0
  for p in sorted(task["plans"], key=lambda p: (p["flops_ratio"], -p["accuracy"])):
    if p["accuracy"] > best and p["method"] not in ("oracle", "anti-oracle"):
      front.append(p)
      best = p["accuracy"]
  ax.plot([p["flops_ratio"] for p in front], [100 * p["accuracy"] for p in front], color="k", lw=1)
  ax.set(xlabel="prefill FLOPs / unpruned", ylabel="accuracy %", title=f"{name}: accuracy vs FLOPs")
  ax.legend(fontsize=6, ncol=2)
  files["frontier"] = f"frontier_{sanitize(name)}.png"
  fig.savefig(out / files["frontier"], dpi=110, bbox_inches="tight", metadata=meta)
  plt.close(fig)
  return files


def render_markdown(analysis: dict, plots: dict[str, dict[str, str]]) -> str:
  study = analysis["study"]
  lines = [f"# Where to prune: {study['model']} on {', '.join(study['tasks'])}", "",
           f"Made by `python -m jaxprune.study` (re-render: `--render-only`). {study['family']} model with "
           f"{study['num_layers']} decoder layers; swept layers {study['layers']}, budgets {study['keeps']} visual "
           f"tokens, `random` draws (seeds) {study['seeds']}, {study['bootstrap']} bootstrap resamples per "
           "comparison.", ""]
  lines += [f"- {note}" for note in study["notes"]] + ([""] if study["notes"] else [])
  for name, task in analysis["tasks"].items():
    lines += task_section(name, task, study, plots.get(name, {}))
  lines += ["## What this study cannot show", "",
            "- One model and the items its blind control got wrong: a verdict here is about this model on these items.",
            "- FLOPs are analytic prefill FLOPs, not measured time; the band analysis sees where kept tokens lie, "
            "not why.",
            "- `random` is the control every verdict is read against; its spread across draws is part of each CI.", ""]
  return "\n".join(lines)


def render(out: Path, *, plots: bool = True) -> int:
  """DIR/analysis.json -> DIR/README.md (+ plots); 0 on success."""
  path = out / ANALYSIS_FILE
  if not path.exists():
    raise StudyError(f"{path}: missing (run the study first; --render-only re-renders a finished one)")
  try:
    analysis = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise StudyError(f"{path}: not JSON ({e})") from None
  for comparisons in (t["vs_random"] for t in analysis["tasks"].values()):
    for c in comparisons:
      c["method@layer"] = f"{c['method']}@{c['layer']}"
  files = {name: _plots(name, task, analysis["study"], out) for name, task in analysis["tasks"].items()} if plots else {}
  (out / "README.md").write_text(render_markdown(analysis, files) + "\n")
  return 0
