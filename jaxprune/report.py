"""Tables and figures from an eval's results.json: where in the model does pruning cost least accuracy?

Everything here reads the plain dict that `python -m jaxprune.eval` writes (one row per task x plan) and
tolerates any field being null (not measured). Figures go through matplotlib's Agg backend only, so this
runs on headless machines and never opens a window.

    summary_table(results)          fixed-width text for stdout
    markdown_table(results)         the same as a GitHub table, for committing under evals/
    write_plots(results, out_dir)   accuracy_vs_keep_<task>.png, where_to_prune_<method>_<task>.png,
                                    kept_tokens_<task>.png
    compare_to_random(results, task, keep)   which methods beat the random-selection control
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

NONE, BLIND, RANDOM = "none", "blind", "random"
MAX_KEPT_PANELS = 18  # 3 rows of 6: more small grids than this become unreadable on one figure
# The last stage of a plan's text form: method@layer:keep[options], earlier stages joined by "+".
_LAST_STAGE_RE = re.compile(r"^(?P<prefix>.*?)(?P<method>\w+)@(?P<layer>\d+):(?P<keep>[0-9.]+)(?P<opts>\[[^\]]*\])?$")

Row = dict[str, Any]


# ------------------------------------------------------------------------------------------- helpers


def sanitize(name: str) -> str:
  """A task / method name made safe for a file name: `datbench:chart` -> `datbench-chart`."""
  return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "unnamed"


def _num_visual(results: dict) -> int | None:
  return results.get("num_visual")


def _keep(row: Row, num_visual: int | None) -> float | None:
  """Kept visual tokens as a count (a ratio keep in (0, 1) is resolved the way PrunePlan does)."""
  keep = row.get("keep")
  if keep is None:
    return None
  if isinstance(keep, float) and 0 < keep < 1 and num_visual:
    return max(1, round(keep * num_visual))
  return keep


def _is_pruned(row: Row) -> bool:
  return row.get("method") not in (NONE, BLIND)


def _series(row: Row) -> str:
  """One accuracy-vs-keep line: the plan with its last keep removed (method@layer plus any options)."""
  m = _LAST_STAGE_RE.match(row.get("plan") or "")
  if not m:
    layer = row.get("layer")
    return f"{row.get('method')}" + ("" if layer is None else f"@{layer}")
  return f"{m['prefix']}{m['method']}@{m['layer']}{m['opts'] or ''}"


def _family(row: Row) -> str:
  """One where-to-prune heatmap: the plan with its last layer and keep removed (method plus options)."""
  m = _LAST_STAGE_RE.match(row.get("plan") or "")
  if not m:
    return str(row.get("method"))
  return f"{m['prefix']}{m['method']}{m['opts'] or ''}"


def _sort_key(row: Row) -> tuple:
  """Task, then baseline, blind, then method, layer, keep descending."""
  method = row.get("method") or ""
  rank = {NONE: 0, BLIND: 1}.get(method, 2)
  layer = row.get("layer")
  keep = row.get("keep")
  return (row.get("task") or "", rank, method, -1 if layer is None else layer,
          -(keep if keep is not None else -1), row.get("plan") or "")


def sorted_rows(results: dict) -> list[Row]:
  return sorted(results.get("rows") or [], key=_sort_key)


def _tasks(results: dict) -> list[str]:
  return sorted({r.get("task") or "" for r in results.get("rows") or []})


def _baseline(rows: Sequence[Row], method: str = NONE) -> Row | None:
  return next((r for r in rows if r.get("method") == method), None)


def _pct(x: float | None, digits: int = 1) -> str:
  return "-" if x is None else f"{100 * x:.{digits}f}"


def _accuracy(row: Row) -> str:
  acc = row.get("accuracy")
  if acc is None:
    return "-"
  low, high = row.get("ci_low"), row.get("ci_high")
  ci = f" [{_pct(low)}, {_pct(high)}]" if low is not None and high is not None else ""
  return f"{_pct(acc)}{ci}"


def format_flops(flops: float | None) -> str:
  """FLOPs with a unit: TFLOPs from 1e12, else GFLOPs (3 significant digits below 1, for toy models)."""
  if flops is None:
    return "-"
  if abs(flops) >= 1e12:
    return f"{flops / 1e12:.2f} TFLOPs"
  giga = flops / 1e9
  if abs(giga) >= 1 or giga == 0:
    return f"{giga:.2f} GFLOPs"
  return f"{giga:.3f} GFLOPs" if abs(giga) >= 0.01 else f"{giga:.3g} GFLOPs"


def _relative_flops(row: Row, base: Row | None) -> str:
  flops, ref = row.get("flops"), (base or {}).get("flops")
  if flops is None or not ref:
    return "-"
  return f"{flops / ref:.2f}x"


def _n(row: Row) -> str:
  n, total = row.get("n"), row.get("n_total")
  if n is None:
    return "-"
  return f"{n}/{total}" if total is not None and total != n else f"{n}"


def _table_cells(results: dict) -> tuple[list[str], list[list[str]], list[bool]]:
  """(header, rows of cells, right-align flags) shared by the text and markdown tables."""
  rows = sorted_rows(results)
  with_recall = any(r.get("relevance_recall") is not None for r in rows)
  header = ["task", "plan", "n", "acc % [95% CI]", "FLOPs", "vs none", "prefill ms", "KV MB"]
  right = [False, False, True, True, True, True, True, True]
  if with_recall:
    header.append("recall %")
    right.append(True)
  bases = {t: _baseline([r for r in rows if r.get("task") == t]) for t in _tasks(results)}
  body = []
  for r in rows:
    ms, kv = r.get("prefill_ms"), r.get("kv_bytes")
    cells = [str(r.get("task") or ""), str(r.get("plan") or r.get("method") or ""), _n(r), _accuracy(r),
             format_flops(r.get("flops")), _relative_flops(r, bases.get(r.get("task") or "")),
             "-" if ms is None else f"{ms:.1f}", "-" if kv is None else f"{kv / 1e6:.2f}"]
    if with_recall:
      cells.append(_pct(r.get("relevance_recall")))
    body.append(cells)
  return header, body, right


# -------------------------------------------------------------------------------------------- tables


def summary_table(results: dict) -> str:
  """A fixed-width text table, one line per row: by task, then baseline, blind, method, layer, keep descending."""
  header, body, right = _table_cells(results)
  widths = [max(len(c) for c in col) for col in zip(header, *body)]

  def line(cells: Sequence[str]) -> str:
    return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

  out = [line(header), "  ".join("-" * w for w in widths)]
  out += [line(cells) for cells in body]
  note = timing_note(results)
  return "\n".join(out + ([note] if note else []))


def timing_note(results: dict) -> str | None:
  """What the prefill ms column is and how noisy it was (results with interleaved timings only)."""
  noise, rounds = results.get("prefill_noise"), (results.get("prefill") or {}).get("rounds")
  if noise is None:
    return None
  return (f"prefill ms: {rounds} interleaved rounds per timed batch, each plan against the unpruned prefill in the "
          f"same rounds (median ratio x the unpruned median); timing noise ±{100 * noise:.1f}%: rows closer "
          f"than that are a tie")


def markdown_table(results: dict) -> str:
  """The summary table as GitHub markdown (numbers right-aligned)."""
  header, body, right = _table_cells(results)
  esc = lambda c: c.replace("|", "\\|")
  out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if r else "---" for r in right) + "|"]
  out += ["| " + " | ".join(esc(c) for c in cells) + " |" for cells in body]
  note = timing_note(results)
  return "\n".join(out + (["", note] if note else []))


# ------------------------------------------------------------------------------------ random control


def _verdict(row: Row, ref: Row) -> str:
  lo, hi = row.get("ci_low"), row.get("ci_high")
  rlo, rhi = ref.get("ci_low"), ref.get("ci_high")
  if None in (lo, hi, rlo, rhi):
    return "not measured"
  if lo > rhi:
    return "beats random"
  if hi < rlo:
    return "below random"
  return "not distinguishable from random"


def compare_to_random(results: dict, task: str, keep: int) -> list[dict]:
  """Each non-random method at `keep` tokens vs the random-selection row at the same keep.

  The random row at the same layer is used when there is one, else any random row at that keep. A verdict
  needs non-overlapping 95% CIs; overlapping ones are "not distinguishable from random". Rows without a
  random counterpart are left out (an empty list when `task` has no random row at `keep`).
  """
  nv = _num_visual(results)
  rows = [r for r in sorted_rows(results) if r.get("task") == task and _keep(r, nv) == keep]
  randoms = [r for r in rows if r.get("method") == RANDOM]
  if not randoms:
    return []
  out = []
  for r in rows:
    if not _is_pruned(r) or r.get("method") == RANDOM:
      continue
    ref = next((x for x in randoms if x.get("layer") == r.get("layer")), randoms[0])
    out.append({
        "plan": r.get("plan"), "layer": r.get("layer"),
        "accuracy": r.get("accuracy"), "ci_low": r.get("ci_low"), "ci_high": r.get("ci_high"),
        "random_plan": ref.get("plan"), "random_accuracy": ref.get("accuracy"),
        "random_ci_low": ref.get("ci_low"), "random_ci_high": ref.get("ci_high"),
        "verdict": _verdict(r, ref),
    })
  return out


# ------------------------------------------------------------------------------------------- figures


def _colors(names: Sequence[str]) -> dict[str, Any]:
  """A stable colour per method family (tab10, tab20 when there are more than 10)."""
  import matplotlib
  cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
  return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _layer_style(layer: int | None, layers: Sequence[int]) -> dict[str, Any]:
  """Line style and marker by pruning layer (colour is by method)."""
  i = layers.index(layer) if layer in layers else 0
  return {"linestyle": _LINESTYLES[i % len(_LINESTYLES)], "marker": _MARKERS[i % len(_MARKERS)]}


def _save(fig, path: Path) -> Path:
  import matplotlib.pyplot as plt
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)
  return path


def _plot_accuracy_vs_keep(rows: list[Row], task: str, nv: int | None, path: Path) -> Path | None:
  import matplotlib.pyplot as plt
  pruned = [r for r in rows if _is_pruned(r) and r.get("accuracy") is not None and _keep(r, nv)]
  if not pruned:
    return None
  series: dict[str, list[Row]] = {}
  for r in pruned:
    series.setdefault(_series(r), []).append(r)
  families = sorted({_family(r) for r in pruned})
  colors = _colors(families)
  layers = sorted({r.get("layer") for r in pruned if r.get("layer") is not None})

  fig, ax = plt.subplots(figsize=(8, 5))
  for name, group in sorted(series.items(), key=lambda kv: _sort_key(kv[1][0])):
    group = sorted(group, key=lambda r: _keep(r, nv))
    x = np.array([_keep(r, nv) for r in group], dtype=float)
    y = np.array([100 * r["accuracy"] for r in group])
    low = np.array([y_ - 100 * r["ci_low"] if r.get("ci_low") is not None else 0.0 for y_, r in zip(y, group)])
    high = np.array([100 * r["ci_high"] - y_ if r.get("ci_high") is not None else 0.0 for y_, r in zip(y, group)])
    ax.errorbar(x, y, yerr=[np.maximum(low, 0), np.maximum(high, 0)], label=name, capsize=3,
                color=colors[_family(group[0])], markersize=4, **_layer_style(group[0].get("layer"), layers))
  for method, label, color in ((NONE, "unpruned", "black"), (BLIND, "blind (no image)", "gray")):
    ref = _baseline(rows, method)
    if ref is not None and ref.get("accuracy") is not None:
      acc = 100 * ref["accuracy"]
      ax.axhline(acc, linestyle="--", color=color, linewidth=1, label=f"{label}: {acc:.1f}%")
  keeps = sorted({float(_keep(r, nv)) for r in pruned})
  if keeps[-1] / keeps[0] > 4:
    ax.set_xscale("log", base=2)
  ax.set_xticks(keeps, [f"{k:g}" for k in keeps])
  ax.minorticks_off()
  ax.set_xlabel("visual tokens kept" + (f" (of {nv})" if nv else ""))
  ax.set_ylabel("accuracy % (95% CI)")
  ax.set_title(f"{task}: accuracy vs visual tokens kept")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
  return _save(fig, path)


def _plot_where_to_prune(rows: list[Row], task: str, family: str, nv: int | None, path: Path) -> Path | None:
  """Layer x keep heatmap of accuracy for one method family (None unless it has >= 2 layers and keeps)."""
  import matplotlib.pyplot as plt
  cells = [r for r in rows if _is_pruned(r) and _family(r) == family and r.get("layer") is not None
           and _keep(r, nv) is not None]
  layers = sorted({r["layer"] for r in cells})
  keeps = sorted({_keep(r, nv) for r in cells})
  if len(layers) < 2 or len(keeps) < 2 or all(r.get("accuracy") is None for r in cells):
    return None
  acc = np.full((len(layers), len(keeps)), np.nan)
  half = np.full_like(acc, np.nan)
  for r in cells:
    i, j = layers.index(r["layer"]), keeps.index(_keep(r, nv))
    if r.get("accuracy") is None or not np.isnan(acc[i, j]):
      continue  # first row wins when a cell repeats
    acc[i, j] = 100 * r["accuracy"]
    if r.get("ci_low") is not None and r.get("ci_high") is not None:
      half[i, j] = 50 * (r["ci_high"] - r["ci_low"])
  base = _baseline(rows)
  base_acc = None if base is None or base.get("accuracy") is None else 100 * base["accuracy"]
  vmin, vmax = np.nanmin(acc), np.nanmax(acc)
  if base_acc is not None:
    vmax = max(vmax, base_acc)  # the top of the scale is "as good as unpruned"
  if vmax - vmin < 1e-9:
    vmin, vmax = vmin - 1, vmax + 1

  fig, ax = plt.subplots(figsize=(1.1 * len(keeps) + 2.5, 0.7 * len(layers) + 1.8))
  cmap = plt.get_cmap("viridis").with_extremes(bad="lightgray")  # missing cells
  im = ax.imshow(np.ma.masked_invalid(acc), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
  for i in range(len(layers)):
    for j in range(len(keeps)):
      if np.isnan(acc[i, j]):
        ax.text(j, i, "n/a", ha="center", va="center", fontsize=8, color="black")
        continue
      text = f"{acc[i, j]:.1f}" + ("" if np.isnan(half[i, j]) else f"\n±{half[i, j]:.1f}")
      shade = (acc[i, j] - vmin) / (vmax - vmin)
      ax.text(j, i, text, ha="center", va="center", fontsize=8, color="black" if shade > 0.6 else "white")
  ax.set_xticks(range(len(keeps)), [f"{k:g}" for k in keeps])
  ax.set_yticks(range(len(layers)), [str(layer) for layer in layers])
  ax.set_xlabel("visual tokens kept" + (f" (of {nv})" if nv else ""))
  ax.set_ylabel("prune at decoder layer")
  base_note = "" if base_acc is None else f" (unpruned {base_acc:.1f}%)"
  ax.set_title(f"{task}: where to prune with {family}\naccuracy %{base_note}", fontsize=10)
  fig.colorbar(im, ax=ax, label="accuracy %")
  return _save(fig, path)


def _plot_kept_tokens(rows: list[Row], task: str, grid: Sequence[int] | None, nv: int | None,
                      path: Path) -> Path | None:
  """Small kept-token grids (one keep per method@layer) plus the fraction kept per image row.

  With RoPE, attention-derived scores favour tokens near the text (the bottom of the image in raster
  order); the row profile makes that position bias visible next to the spatial maps. Each series shows
  its keep nearest a quarter of the tokens: at tiny keeps every map is near-black, at large ones near-white.
  """
  import matplotlib.pyplot as plt
  if not grid or len(grid) != 2:
    return None
  gh, gw = int(grid[0]), int(grid[1])
  with_map = [r for r in rows if _is_pruned(r) and r.get("kept_map") is not None
              and len(r["kept_map"]) == gh * gw]
  target = (nv or gh * gw) / 4

  def distance(r: Row) -> tuple[float, float]:  # log-distance to the target keep; ties go to the smaller keep
    keep = max(float(_keep(r, nv) or 1), 1.0)
    return abs(math.log(keep / target)), keep

  chosen: dict[str, Row] = {}
  for r in with_map:
    name = _series(r)
    if name not in chosen or distance(r) < distance(chosen[name]):
      chosen[name] = r
  panels = sorted(chosen.values(), key=_sort_key)[:MAX_KEPT_PANELS]
  if not panels:
    return None
  ncols = min(len(panels), 6)
  nrows = math.ceil(len(panels) / ncols)
  fig = plt.figure(figsize=(1.9 * ncols + 1.0, 2.0 * nrows + 3.2))
  spec = fig.add_gridspec(nrows + 1, ncols, height_ratios=[1.0] * nrows + [1.5], hspace=0.55, wspace=0.25)
  colors = _colors(sorted({_family(r) for r in panels}))
  image = None
  for k, r in enumerate(panels):
    ax = fig.add_subplot(spec[k // ncols, k % ncols])
    image = ax.imshow(np.asarray(r["kept_map"], dtype=float).reshape(gh, gw), cmap="magma", vmin=0, vmax=1,
                      interpolation="nearest")
    ax.set_title(str(r.get("plan") or _series(r)), fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
  if image is not None:
    fig.colorbar(image, ax=fig.axes, shrink=0.6, label="fraction of items keeping the token",
                 location="right")
  from matplotlib.ticker import MaxNLocator
  ax = fig.add_subplot(spec[nrows, :])
  layers = sorted({r.get("layer") for r in panels if r.get("layer") is not None})
  for r in panels:
    profile = np.asarray(r["kept_map"], dtype=float).reshape(gh, gw).mean(axis=1)
    ax.plot(np.arange(gh), profile, markersize=3, label=str(r.get("plan") or _series(r)),
            color=colors[_family(r)], **_layer_style(r.get("layer"), layers))
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set_xlabel("image row (0 = top)")
  ax.set_ylabel("fraction kept")
  ax.set_ylim(bottom=0)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6, ncol=max(1, min(4, len(panels) // 3 + 1)), loc="best")
  fig.suptitle(f"{task}: which visual tokens survive (fraction of items; rows are top to bottom)", fontsize=10)
  return _save(fig, path)


def write_plots(results: dict, out_dir: Path) -> list[Path]:
  """Write every figure that has data, per task, into out_dir; return the paths written."""
  import matplotlib
  matplotlib.use("Agg")  # headless: never open a window, whatever the caller's default backend is
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  nv, grid = _num_visual(results), results.get("grid")
  written: list[Path] = []
  for task in _tasks(results):
    rows = [r for r in sorted_rows(results) if (r.get("task") or "") == task]
    name = sanitize(task)
    path = _plot_accuracy_vs_keep(rows, task, nv, out_dir / f"accuracy_vs_keep_{name}.png")
    if path:
      written.append(path)
    families = sorted({_family(r) for r in rows if _is_pruned(r)})
    for family in families:
      # The file is named by the method; options (random's seed=0) join the name only to tell variants apart.
      method = next(r.get("method") for r in rows if _is_pruned(r) and _family(r) == family)
      variants = {f for f in families if any(r.get("method") == method and _family(r) == f for r in rows)}
      label = sanitize(str(method) if len(variants) == 1 else family)
      path = _plot_where_to_prune(rows, task, family, nv, out_dir / f"where_to_prune_{label}_{name}.png")
      if path:
        written.append(path)
    path = _plot_kept_tokens(rows, task, grid, nv, out_dir / f"kept_tokens_{name}.png")
    if path:
      written.append(path)
  return written
