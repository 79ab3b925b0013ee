"""report.py on a synthetic results.json: tables, figures (valid PNGs), and the random-control verdicts."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from PIL import Image

from jaxprune import report

GRID = (4, 4)
NV = 16
METHODS = ("latesim", "fastv", "clsattn")
LAYERS = (2, 4)
KEEPS = (4, 8)


def _row(task: str, method: str, layer: int | None, keep: int, acc: float | None, **extra) -> dict:
  plan = method if layer is None else f"{method}@{layer}:{keep}" + ("[seed=0]" if method == "random" else "")
  row = {"task": task, "method": method, "layer": layer, "keep": keep, "plan": plan,
         "n": 100, "n_total": 100, "n_failed": 0, "n_judge": 0, "n_fallback": 0,
         "accuracy": acc, "ci_low": None if acc is None else max(acc - 0.05, 0.0),
         "ci_high": None if acc is None else min(acc + 0.05, 1.0),
         "flops": 1.2e9 * (0.25 + 0.75 * keep / NV), "prefill_ms": 10.0 + keep, "kv_bytes": 1000 * (50 + keep),
         "kept_map": None, "relevance_recall": None}
  row.update(extra)
  return row


def _bottom_heavy(keep: int) -> list[float]:
  """Keep the last `keep` tokens in raster order: the bottom rows, as RoPE-biased attention would."""
  return [1.0 if i >= NV - keep else 0.0 for i in range(NV)]


def make_results() -> dict:
  rows = []
  for task in ("easyvqa", "datbench:chart"):
    rows.append(_row(task, "none", None, NV, 0.97, ci_low=0.95, ci_high=0.99))
    rows.append(_row(task, "blind", None, 0, 0.5, flops=1.0e9, kv_bytes=40000))
    for method in METHODS:
      for layer in LAYERS:
        for keep in KEEPS:
          acc = 0.6 + 0.02 * keep + (0.05 if layer == 2 else 0.0) + 0.01 * METHODS.index(method)
          rows.append(_row(task, method, layer, keep, acc, kept_map=_bottom_heavy(keep), relevance_recall=0.8))
    for layer in LAYERS:
      for keep in KEEPS:
        rows.append(_row(task, "random", layer, keep, 0.55 + 0.01 * keep,
                         kept_map=[keep / NV] * NV, relevance_recall=0.5))
  # A later, partly failed run and an unmeasured latency on one row of the chart task.
  for row in rows:
    if row["task"] == "datbench:chart" and row["plan"] == "latesim@2:4":
      row.update(n=90, prefill_ms=None, kept_map=None)
  rows.append(_row("onlybase", "none", None, NV, 0.9))
  return {"model": "synthetic", "num_visual": NV, "grid": list(GRID), "command": "python -m jaxprune.eval ...",
          "rows": rows}


def _assert_png(path: Path) -> None:
  assert path.exists() and path.stat().st_size > 0
  with Image.open(path) as image:
    image.verify()
  with Image.open(path) as image:
    assert image.format == "PNG" and image.size[0] > 0 and image.size[1] > 0


def test_write_plots_files(tmp_path):
  paths = report.write_plots(make_results(), tmp_path / "plots")
  names = {p.name for p in paths}
  for task in ("easyvqa", "datbench-chart"):
    assert f"accuracy_vs_keep_{task}.png" in names
    assert f"kept_tokens_{task}.png" in names
    for method in METHODS + ("random",):
      assert f"where_to_prune_{method}_{task}.png" in names
  # The baseline-only task has nothing to plot against keep, and no names keep the ':'.
  assert not any("onlybase" in n for n in names)
  assert not any(":" in n for n in names)
  assert len(paths) == len(names) == 2 * (2 + len(METHODS) + 1)
  for path in paths:
    _assert_png(path)


def test_write_plots_skips_cleanly(tmp_path):
  results = make_results()
  # One layer only: no where-to-prune heatmap; no kept maps and no grid: no kept-token figure.
  results["rows"] = [r for r in results["rows"] if r["layer"] in (None, 2) and r["task"] == "easyvqa"]
  for row in results["rows"]:
    row["kept_map"] = None
  paths = report.write_plots(results, tmp_path)
  assert [p.name for p in paths] == ["accuracy_vs_keep_easyvqa.png"]
  results = make_results()
  results["grid"] = None
  names = {p.name for p in report.write_plots(results, tmp_path / "nogrid")}
  assert not any(n.startswith("kept_tokens") for n in names)
  only_base = {"num_visual": NV, "grid": list(GRID), "rows": [_row("easyvqa", "none", None, NV, None)]}
  assert report.write_plots(only_base, tmp_path / "base") == []
  assert report.write_plots({"rows": []}, tmp_path / "empty") == []


def test_all_null_fields_do_not_crash(tmp_path):
  results = make_results()
  for row in results["rows"]:
    for key in ("accuracy", "ci_low", "ci_high", "flops", "prefill_ms", "kv_bytes", "kept_map",
                "relevance_recall", "n", "n_total"):
      row[key] = None
  assert report.write_plots(results, tmp_path) == []
  assert "easyvqa" in report.summary_table(results)
  assert "---" in report.markdown_table(results)


def test_summary_table_order_and_format():
  table = report.summary_table(make_results())
  lines = table.splitlines()
  assert lines[0].split()[:3] == ["task", "plan", "n"]
  assert "recall %" in lines[0]
  assert set(lines[1].replace(" ", "")) == {"-"}
  plans = [(line.split()[0], line.split()[1]) for line in lines[2:]]
  chart = [p for t, p in plans if t == "datbench:chart"]
  easy = [p for t, p in plans if t == "easyvqa"]
  # Tasks sorted; baseline, blind, then method / layer / keep descending.
  assert [t for t, _ in plans] == sorted(t for t, _ in plans)
  assert easy[:6] == ["none", "blind", "clsattn@2:8", "clsattn@2:4", "clsattn@4:8", "clsattn@4:4"]
  assert easy[-1] == "random@4:4[seed=0]"
  assert len(easy) == 2 + 4 * len(METHODS) + 4 and chart[:2] == ["none", "blind"]
  assert [p for t, p in plans if t == "onlybase"] == ["none"]
  base = next(line for line in lines if line.startswith("easyvqa") and " none " in line)
  assert "97.0 [95.0, 99.0]" in base and "1.20 GFLOPs" in base and "1.00x" in base and "26.0" in base
  # keep 4 of 16: 1.2e9 * (0.25 + 0.75/4) = 0.525 GFLOPs -> 0.44x of unpruned; KV 54 kB -> 0.05 MB.
  row = next(line for line in lines if line.startswith("easyvqa") and "latesim@2:4" in line)
  assert "0.525 GFLOPs" in row and "0.750 GFLOPs" in table and "0.44x" in row and "0.05" in row and "80.0" in row
  partial = next(line for line in lines if line.startswith("datbench:chart") and "latesim@2:4" in line)
  assert " 90/100 " in partial and " - " in partial  # n vs n_total; unmeasured prefill


def test_summary_table_units_and_optional_recall():
  results = {"num_visual": NV, "rows": [_row("t", "none", None, NV, 0.5, flops=3.4e12)]}
  table = report.summary_table(results)
  assert "3.40 TFLOPs" in table and "recall" not in table


def test_markdown_table():
  md = report.markdown_table(make_results())
  lines = md.splitlines()
  assert lines[0].startswith("| task | plan | n |")
  assert lines[1].startswith("|---|---|---:|")
  assert lines[1].count("|") == lines[0].count("|")
  assert all(line.startswith("| ") and line.endswith(" |") for line in lines[2:])
  assert "| easyvqa | none | 100 | 97.0 [95.0, 99.0] |" in md
  assert len(lines) == 2 + len(make_results()["rows"])


def _ci_results(ci: dict[str, tuple[float, float]], random_layers=(2,)) -> dict:
  rows = [_row("easyvqa", "none", None, NV, 0.9)]
  for plan, (low, high) in ci.items():
    method, layer = plan.split("@")
    rows.append(_row("easyvqa", method, int(layer), 4, (low + high) / 2, ci_low=low, ci_high=high))
  for layer in random_layers:
    rows.append(_row("easyvqa", "random", layer, 4, 0.5 + 0.01 * layer, ci_low=0.45, ci_high=0.55 + 0.01 * layer))
  rows.append(_row("easyvqa", "random", 2, 8, 0.9, ci_low=0.85, ci_high=0.95))  # another keep: never used
  return {"num_visual": NV, "grid": list(GRID), "rows": rows}


def test_compare_to_random_verdicts():
  results = _ci_results({"latesim@2": (0.60, 0.70), "fastv@2": (0.30, 0.40), "clsattn@2": (0.50, 0.60)})
  out = {d["plan"]: d for d in report.compare_to_random(results, "easyvqa", 4)}
  assert set(out) == {"latesim@2:4", "fastv@2:4", "clsattn@2:4"}
  assert out["latesim@2:4"]["verdict"] == "beats random"
  assert out["fastv@2:4"]["verdict"] == "below random"
  assert out["clsattn@2:4"]["verdict"] == "not distinguishable from random"
  d = out["latesim@2:4"]
  assert (d["ci_low"], d["ci_high"]) == (0.60, 0.70)
  assert (d["random_ci_low"], d["random_ci_high"]) == pytest.approx((0.45, 0.57))
  assert d["accuracy"] == pytest.approx(0.65) and d["random_accuracy"] == pytest.approx(0.52)
  assert report.compare_to_random(results, "easyvqa", 16) == []
  assert report.compare_to_random(results, "other", 4) == []


def test_compare_to_random_prefers_same_layer():
  # Random CIs: [0.45, 0.57] at layer 2, [0.45, 0.59] at layer 4; a low of 0.58 beats only the first.
  results = _ci_results({"latesim@2": (0.58, 0.7), "latesim@4": (0.58, 0.7), "latesim@6": (0.58, 0.7)},
                        random_layers=(2, 4))
  out = {d["plan"]: d for d in report.compare_to_random(results, "easyvqa", 4)}
  assert out["latesim@2:4"]["random_plan"] == "random@2:4[seed=0]"
  assert out["latesim@2:4"]["verdict"] == "beats random"
  assert out["latesim@4:4"]["random_plan"] == "random@4:4[seed=0]"
  assert out["latesim@4:4"]["verdict"] == "not distinguishable from random"
  assert out["latesim@6:4"]["random_plan"] == "random@2:4[seed=0]"  # no layer-6 random: any random row


def test_method_variants_get_their_own_heatmap(tmp_path):
  results = make_results()
  variants = [dict(r, plan=r["plan"] + "[aggregate=max]", accuracy=r["accuracy"] - 0.1)
              for r in results["rows"] if r["method"] == "latesim" and r["task"] == "easyvqa"]
  results["rows"] += variants
  names = {p.name for p in report.write_plots(results, tmp_path)}
  assert {"where_to_prune_latesim_easyvqa.png", "where_to_prune_latesim-aggregate-max_easyvqa.png",
          "where_to_prune_latesim_datbench-chart.png"} <= names
  table = report.summary_table(results)
  assert "latesim@2:4[aggregate=max]" in table


def test_sanitize():
  assert report.sanitize("datbench:chart") == "datbench-chart"
  assert report.sanitize("latesim[aggregate=max]") == "latesim-aggregate-max"
  assert report.sanitize("a/b c") == "a-b-c"


def test_input_not_mutated(tmp_path):
  results = make_results()
  before = copy.deepcopy(results)
  report.summary_table(results)
  report.write_plots(results, tmp_path)
  assert results == before
