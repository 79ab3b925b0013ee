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


def _mean(values) -> float | None:
  present = [v for v in values if v is not None]  # a band without relevant slots has no recall
  return sum(present) / len(present) if present else None


def _position_rows(plans: list[dict], keep: int) -> list[tuple[str, dict]]:
  """(label, position) per method and layer at `keep`: `random`'s draws averaged, and layers at which a method
  keeps the very same cells (vision-side signals, the bounds) folded into one row."""
  groups: dict[tuple, list[dict]] = {}
  for p in plans:
    if p["keep"] == keep and p["position"] is not None:
      groups.setdefault((p["method"], p["layer"]), []).append(p["position"])
  folded: dict[tuple, tuple[dict, list[int]]] = {}  # (method, the mean's values) -> (mean, layers)
  for (method, layer), positions in groups.items():
    mean = {k: None if positions[0][k] is None else [_mean(x) for x in zip(*(pos[k] for pos in positions))]
            for k in positions[0]}
    key = (method, tuple(tuple(v) if v is not None else None for v in mean.values()))
    folded.setdefault(key, (mean, []))[1].append(layer)
  rows = []
  for (method, _), (mean, layers) in folded.items():
    draws = len(groups[(method, layers[0])])
    label = f"{method}@{','.join(map(str, layers))}:{keep}" + (f" ({draws} draws)" if draws > 1 else "")
    rows.append((label, mean))
  return rows


def _position_table(plans: list[dict], keep: int) -> list[str]:
  rows = _position_rows(plans, keep)
  if not rows:
    return ["(no kept-token positions recorded)"]
  relevance = any(pos["recall"] is not None for _, pos in rows)
  bands = [f"band {b + 1}" for b in range(BANDS)]
  header = ["plan"] + [f"kept share, {b}" for b in bands] + ([f"recall, {b}" for b in bands] if relevance else [])
  table = [["(all slots)"] + [_pct(x) for x in rows[0][1]["slot_share"]] + (["-"] * BANDS if relevance else [])]
  for label, pos in rows:
    table.append([label] + [_pct(x) for x in pos["kept_share"]]
                 + ([_pct(x) for x in pos["recall"] or [None] * BANDS] if relevance else []))
  return _table(header, table)


def _wide(entries: list[dict], keeps: list[int], value) -> list[list[str]]:
  """Rows method@layer (in entry order), one column per budget, cells value(entry)."""
  cells: dict[str, dict] = {}
  for e in entries:
    cells.setdefault(f"{e['method']}@{e['layer']}" if "method" in e else str(e["layer"]), {})[e["keep"]] = e
  return [[name] + [value(by_keep[k]) if k in by_keep else "-" for k in keeps] for name, by_keep in cells.items()]


def _bounds(task: dict) -> list[str]:
  if not task.get("full_bounds"):
    return []
  return ["### The bounds on every item (layer 0)", "",
          *_table(["plan", "items", "accuracy %", "relevance recall %"],
                  [[f"`{b['plan']}`", str(b["n"]), _pct(b["accuracy"]), _pct(b["recall"])] for b in task["full_bounds"]]),
          ""]


def _summary(task: dict, keeps: list[int]) -> list[str]:
  """The findings a reader wants first, stated from the tables below (no judgement beyond them)."""
  horizon = {k: task["horizon"].get(str(k)) for k in keeps}
  lines = ["### Summary", "",
           "- Information horizon (first layer from which `random` stays within "
           f"{100 * HORIZON_POINTS:.0f} points of unpruned): "
           + ", ".join(f"keep {k}: {'none' if h is None else f'layer {h}'}" for k, h in horizon.items()) + "."]
  for b in task["best"]:
    beat = ", ".join(f"`{p}`" for p in b["beat_random"]) or "none"
    lines.append(f"- keep {b['keep']}: beat the same-layer `random` after Holm: {beat}; most accuracy per FLOP: "
                 f"`{b['per_flop']}` ({_pct(b['per_flop_accuracy'])} at {b['per_flop_flops_ratio']:.2f}x FLOPs).")
  ours = [c for c in task["vs_random"] if c["method"] == "latesim"]
  if ours:
    count = {v: sum(c["verdict"] == v for c in ours) for v in ("better", "tie", "worse")}
    lines.append(f"- `latesim` against the same-layer `random` over {len(ours)} (layer, budget) cells: better in "
                 f"{count['better']}, tied in {count['tie']}, worse in {count['worse']}.")
  rivals: dict[tuple, list[str]] = {}
  for c in task["latesim_vs"]:
    rivals.setdefault((c["layer"], c["keep"]), []).append(c["verdict"])
  if rivals:
    top = sum(all(v == "better" for v in vs) for vs in rivals.values())
    beaten = sum(any(v == "worse" for v in vs) for vs in rivals.values())
    lines.append(f"- `latesim` against every other signal at its layer and budget: better than all of them in {top} "
                 f"of {len(rivals)} cells; some other signal is better in {beaten}.")
  lines += _position_summary(task, keeps[len(keeps) // 2])
  return lines + [""]


def _position_summary(task: dict, keep: int) -> list[str]:
  """latesim's most over-represented band per layer at `keep` (against the bands' share of all slots)."""
  by_band: dict[int, list[tuple[int, float]]] = {}
  for p in task["plans"]:
    if p["method"] == "latesim" and p["keep"] == keep and p["position"]:
      share, slots = p["position"]["kept_share"], p["position"]["slot_share"]
      band = max(range(BANDS), key=lambda b: share[b] - slots[b])
      by_band.setdefault(band, []).append((p["layer"], share[band]))
  if not by_band:
    return []
  parts = [f"band {band + 1} at layer(s) {','.join(str(layer) for layer, _ in at)} "
           f"({'-'.join(dict.fromkeys(_pct(f(s for _, s in at), 0) for f in (min, max)))}% of kept tokens)"
           for band, at in sorted(by_band.items(), key=lambda kv: kv[1][0][0])]
  return [f"- Where `latesim` keeps tokens at keep {keep} (band 1 = top, against each band's share of all slots): most "
          f"over-represented is {'; '.join(parts)}. Not free of position bias: see the last table."]


def task_section(name: str, task: dict, study: dict, plots: dict[str, str]) -> list[str]:
  keeps, acc, items = study["keeps"], task["accuracy"], task["items"]
  lines = [f"## {name}", "",
           f"{items['all']} items; the blind (text-only) control answers {items['blind_correct']} of them, so the "
           f"sweep runs on the other {items['swept']}. Accuracy: unpruned {_pct(acc['full'])} on all items, blind "
           f"{_pct(acc['blind'])}, unpruned {_pct(acc['swept_unpruned'])} on the swept items (every number below "
           f"is on the swept items).", "",
           *_summary(task, keeps), *_bounds(task), "### Layer profile and information horizon", "",
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
            *_table(["method@layer"] + [f"keep {k}" for k in keeps], _wide(task["vs_random"], keeps, _cell)), ""]
  if task["latesim_vs"]:
    lines += ["### latesim against every other signal", "",
              "latesim minus the other signal at the same layer and budget, in points (`random`: the mean over its "
              "draws); `+` better, `-` worse, `=` tie by a paired bootstrap over items and draws, Holm-corrected "
              "across this table.", "", *_latesim_table(task["latesim_vs"], task["plans"]), ""]
  if task["oracle_gap"]:
    lines += ["### Distance from the oracle bound", "",
              "Points below `oracle` at the same layer and budget.", "",
              *_table(["method@layer"] + [f"keep {k}" for k in keeps],
                      _wide(task["oracle_gap"], keeps, lambda g: _pct(g["gap"]))), ""]
  if task.get("recall_vs_accuracy"):
    rhos = [g["rho"] for g in task["recall_vs_accuracy"] if g["rho"] is not None]
    lines += ["### Does keeping the relevant tokens help?", "",
              "Per pruning layer and budget, over the plans that prune there (bounds excluded): Spearman's rank "
              "correlation between relevance recall and accuracy (plans in brackets).", "",
              *_table(["layer"] + [f"keep {k}" for k in keeps],
                      _wide(task["recall_vs_accuracy"], keeps,
                            lambda g: "-" if g["rho"] is None else f"{g['rho']:+.2f} ({g['plans']})")),
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
  for keep, points in sorted(task["random"].items(), key=lambda kv: int(kv[0])):  # JSON keys sort as text
    ax.plot([p["layer"] for p in points], [100 * p["mean"] for p in points], marker="o", label=f"random, keep {keep}")
  ax.axhline(100 * task["accuracy"]["swept_unpruned"], color="k", ls="--", lw=1, label="unpruned")
  ax.set(xlabel="pruning layer", ylabel="accuracy %", title=f"{name}: layer profile")
  ax.legend(fontsize=7)
  files["profile"] = f"profile_{sanitize(name)}.png"
  fig.savefig(out / files["profile"], dpi=110, bbox_inches="tight", metadata=meta)
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(6, 3.6))
  colors = plt.get_cmap("tab20")  # more methods than the default cycle's ten colours
  for i, method in enumerate(sorted({p["method"] for p in task["plans"]})):
    pts = [p for p in task["plans"] if p["method"] == method]
    ax.scatter([p["flops_ratio"] for p in pts], [100 * p["accuracy"] for p in pts], s=12, label=method,
               color=colors(i % 20))
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
  files = {name: _plots(name, task, analysis["study"], out) for name, task in analysis["tasks"].items()} if plots else {}
  (out / "README.md").write_text(render_markdown(analysis, files) + "\n")
  return 0
