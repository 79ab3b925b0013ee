"""Paired bootstrap verdicts for a pruning study: does a method beat its control on the same items?

A study compares a method's per-item scores (0..1, e.g. correctness) with a control's scores on the SAME items.
Either side may have several random draws (seeds), so a side is an array [D, I] (draws x items) or [I] (one
draw). Item-to-item variation and seed-to-seed variation are both real noise, so the bootstrap resamples both;
a table of many such comparisons is then corrected with Holm so "better" means better after multiplicity.

    paired_bootstrap(method, control)   diff, percentile CI, bootstrap SE and its p-value (one Comparison)
    holm(pvalues)                       Holm-Bonferroni adjusted p-values and rejections, input order kept
    verdicts(comparisons)               "better" / "worse" / "tie" / "-" for a whole table, Holm across it
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

# Bound on the elements of one replicate chunk's [rows, items] arrays (8 bytes each), so memory stays flat for
# 50,000 items x 2,000 resamples. Tests patch it small to check chunking leaves the result unchanged.
_CHUNK_ELEMENTS = 1 << 20


@dataclasses.dataclass(frozen=True)
class Comparison:
  """One method-vs-control comparison; p and the CI are unadjusted (Holm happens across a table in `verdicts`)."""

  diff: float  # mean over items of (method mean over its draws - control mean over its draws)
  low: float  # percentile bootstrap CI of diff at level 1 - alpha
  high: float
  se: float  # the bootstrap standard error of diff (items and draws resampled)
  p: float  # two-sided p-value for diff == 0 from diff / se (normal approximation)
  n_items: int
  method_draws: int
  control_draws: int

  def to_json(self) -> dict:
    """Plain floats and ints for json.dump (NaN becomes null, which strict JSON readers accept)."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if isinstance(value, float | np.floating):
        out[field.name] = None if math.isnan(value) else float(value)
      else:
        out[field.name] = int(value)
    return out


def _as_draws(scores: Any, name: str) -> np.ndarray:
  """[I] or [D, I] scores as a float [D, I] array, with a one-line ValueError naming what is wrong."""
  arr = np.asarray(scores, dtype=np.float64)
  if arr.ndim == 1:
    arr = arr[None, :]
  if arr.ndim != 2:
    raise ValueError(f"{name} must have shape [items] or [draws, items], got shape {arr.shape}")
  if arr.shape[0] == 0:
    raise ValueError(f"{name} has no draws")
  if arr.shape[1] == 0:
    raise ValueError(f"{name} has no items")
  bad = ~np.isfinite(arr)
  if bad.any():
    draw, item = np.argwhere(bad)[0]
    raise ValueError(f"{name} has {int(bad.sum())} non-finite values (first at draw {draw}, item {item})")
  return arr


def _row_counts(indices: np.ndarray, size: int) -> np.ndarray:
  """How often each of `size` values appears in each row of `indices` [rows, k], as float [rows, size].
  Offsets `indices` in place (callers pass fresh RNG output) to save one chunk-sized copy."""
  rows = indices.shape[0]
  indices += (np.arange(rows) * size)[:, None]
  return np.bincount(indices.ravel(), minlength=rows * size).reshape(rows, size).astype(np.float64)


def _replicates(method: np.ndarray, control: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
  """The bootstrap statistic of every replicate, chunked over replicates so no [B, I] array is ever built.

  The statistic is linear, so mean over resampled items of (resampled-draw mean) equals the draw-count-weighted
  sum of each draw's item-count-weighted sum: per replicate we only keep a [D] vector of per-draw sums. Item
  indices are drawn chunk by chunk, which yields the same integers as one `rng.integers(0, I, (B, I))` call
  (numpy's bounded-integer stream does not depend on how a request is split; the tests check it)."""
  n_draws_m, n_items = method.shape
  n_draws_c = control.shape[0]
  chunk = max(1, _CHUNK_ELEMENTS // n_items)
  sums_m = np.empty((n_resamples, n_draws_m))
  sums_c = np.empty((n_resamples, n_draws_c))
  for start in range(0, n_resamples, chunk):
    rows = min(chunk, n_resamples - start)
    counts = _row_counts(rng.integers(0, n_items, size=(rows, n_items)), n_items)
    sums_m[start:start + rows] = counts @ method.T
    sums_c[start:start + rows] = counts @ control.T
  weights_m = _row_counts(rng.integers(0, n_draws_m, size=(n_resamples, n_draws_m)), n_draws_m)
  weights_c = _row_counts(rng.integers(0, n_draws_c, size=(n_resamples, n_draws_c)), n_draws_c)
  total_m = np.einsum("bd,bd->b", weights_m, sums_m)
  total_c = np.einsum("bd,bd->b", weights_c, sums_c)
  # One division at the end: for integer scores (0/1 correctness) the numerator is exact, so a replicate whose
  # true statistic is 0 comes out exactly 0 and the p-value's ties are counted correctly.
  return (total_m * n_draws_c - total_c * n_draws_m) / (n_draws_m * n_draws_c * n_items)


def paired_bootstrap(method: Any, control: Any, *, n_resamples: int = 2000, seed: int = 0,
                     alpha: float = 0.05) -> Comparison:
  """Paired bootstrap over items AND draws of mean(method) - mean(control), so seed noise widens the CI.

  `method` and `control` are [I] or [D, I] scores on the same I items. One replicate resamples the I items, the
  method's Dm draws and the control's Dc draws, each with replacement, and takes the mean over resampled items
  of (mean over resampled method draws - mean over resampled control draws).

  RNG order (fixed, so results are reproducible): `rng = np.random.default_rng(seed)`, then
  `items = rng.integers(0, I, size=(n_resamples, I))`, `mdraws = rng.integers(0, Dm, size=(n_resamples, Dm))`,
  `cdraws = rng.integers(0, Dc, size=(n_resamples, Dc))` (drawn even when D == 1, where they are all 0).

  CI: the alpha/2 and 1 - alpha/2 quantiles of the replicates. p: two-sided, from z = diff / se with se the
  replicates' standard deviation. Not the percentile p-value: that one cannot go below 2 / (B + 1), and a Holm
  correction over a study's few hundred comparisons needs p far below 1 / B (0.05 / 300 at B = 2000). A zero se
  (every replicate equal) gives p = 1 when diff is 0, else 0."""
  method_arr = _as_draws(method, "method")
  control_arr = _as_draws(control, "control")
  n_items = method_arr.shape[1]
  if control_arr.shape[1] != n_items:
    raise ValueError(f"method has {n_items} items, control {control_arr.shape[1]}")
  if n_resamples < 1:
    raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha must be in (0, 1), got {alpha}")
  diff = float(np.mean(method_arr.mean(axis=0) - control_arr.mean(axis=0)))
  stats = _replicates(method_arr, control_arr, n_resamples, np.random.default_rng(seed))
  low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
  se = float(np.std(stats, ddof=1)) if n_resamples > 1 else 0.0
  p = (1.0 if diff == 0 else 0.0) if se == 0 else math.erfc(abs(diff) / (se * math.sqrt(2)))
  return Comparison(diff=diff, low=float(low), high=float(high), se=se, p=float(p), n_items=n_items,
                    method_draws=method_arr.shape[0], control_draws=control_arr.shape[0])


def _is_missing(p: float | None) -> bool:
  return p is None or math.isnan(p)


def holm(pvalues: Sequence[float | None], alpha: float = 0.05) -> tuple[list[float], list[bool]]:
  """Holm-Bonferroni step-down: controls the family-wise error over a whole table without assuming independence.

  None / NaN entries are missing: not counted in m, returned as (nan, False). For the i-th smallest of the m
  present p-values, adjusted p = max over j <= i of min(1, (m - j + 1) * p_(j)); a test is rejected iff its
  adjusted p <= alpha. Both lists come back in the input order."""
  present = [i for i, p in enumerate(pvalues) if not _is_missing(p)]
  values = np.array([float(pvalues[i]) for i in present], dtype=np.float64)
  if ((values < 0) | (values > 1)).any():
    raise ValueError(f"p-values must lie in [0, 1], got {values[(values < 0) | (values > 1)][0]}")
  adjusted = [math.nan] * len(pvalues)
  rejected = [False] * len(pvalues)
  m = len(present)
  order = np.argsort(values, kind="stable")
  stepped = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * values[order]))
  for rank, k in enumerate(order):
    index = present[int(k)]
    adjusted[index] = float(stepped[rank])
    rejected[index] = bool(stepped[rank] <= alpha)
  return adjusted, rejected


def verdicts(comparisons: Sequence[Comparison | None], alpha: float = 0.05) -> list[str]:
  """"better" / "worse" / "tie" per comparison, Holm-corrected across the whole table ("-" for None = missing),
  so a table with many cells does not call chance wins "better"."""
  _, rejected = holm([None if c is None else c.p for c in comparisons], alpha)
  out = []
  for comparison, reject in zip(comparisons, rejected):
    if comparison is None:
      out.append("-")
    elif reject and comparison.diff > 0:
      out.append("better")
    elif reject and comparison.diff < 0:
      out.append("worse")
    else:
      out.append("tie")
  return out
