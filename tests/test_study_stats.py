"""study/stats.py against naive loop references: the paired bootstrap over items and draws, Holm, verdicts."""

from __future__ import annotations

import json
import math
import statistics
import tracemalloc

import numpy as np
import pytest

from jaxprune.study import stats


def _naive_bootstrap(method, control, n_resamples: int, seed: int, alpha: float) -> tuple[float, float, float, float]:
  """The textbook definition with explicit loops, drawing from the RNG in the documented order."""
  method = np.atleast_2d(np.asarray(method, dtype=float))
  control = np.atleast_2d(np.asarray(control, dtype=float))
  dm, n = method.shape
  dc = control.shape[0]
  rng = np.random.default_rng(seed)
  items = rng.integers(0, n, size=(n_resamples, n))
  mdraws = rng.integers(0, dm, size=(n_resamples, dm))
  cdraws = rng.integers(0, dc, size=(n_resamples, dc))
  reps = []
  for b in range(n_resamples):
    total = 0.0
    for k in range(n):
      i = items[b, k]
      m = sum(method[mdraws[b, j], i] for j in range(dm)) / dm
      c = sum(control[cdraws[b, j], i] for j in range(dc)) / dc
      total += m - c
    reps.append(total / n)
  reps = np.array(reps)
  diff = float(np.mean([method[:, i].mean() - control[:, i].mean() for i in range(n)]))
  low, high = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
  se = math.sqrt(sum((r - reps.mean()) ** 2 for r in reps) / (n_resamples - 1))
  p = 2 * (1 - statistics.NormalDist().cdf(abs(diff) / se))  # two-sided normal tail of z = diff / se
  return diff, float(low), float(high), se, p


def _naive_holm(pvalues, alpha: float) -> tuple[list[float], list[bool]]:
  """Holm by the book: sort, multiply by (m - j + 1), running max, cap at 1; missing entries skipped."""
  present = [(p, i) for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
  present.sort()
  m = len(present)
  adjusted = [math.nan] * len(pvalues)
  running = 0.0
  for j, (p, i) in enumerate(present, start=1):
    running = max(running, min(1.0, (m - j + 1) * p))
    adjusted[i] = running
  return adjusted, [not math.isnan(a) and a <= alpha for a in adjusted]


def _scores(rng: np.random.Generator, shape, shift: float = 0.0) -> np.ndarray:
  return np.clip(rng.uniform(size=shape) + shift, 0.0, 1.0)


# ------------------------------------------------------------------------------------------- paired_bootstrap


@pytest.mark.parametrize("m_draws,c_draws,n_items,seed", [
    (None, None, 7, 0), (None, 3, 23, 1), (2, 4, 40, 2), (3, 1, 11, 3),
])
def test_bootstrap_matches_naive_loops(m_draws, c_draws, n_items, seed):
  rng = np.random.default_rng(100 + seed)
  method = _scores(rng, (n_items,) if m_draws is None else (m_draws, n_items), 0.1)
  control = _scores(rng, (n_items,) if c_draws is None else (c_draws, n_items))
  got = stats.paired_bootstrap(method, control, n_resamples=200, seed=seed, alpha=0.1)
  want = _naive_bootstrap(method, control, 200, seed, 0.1)
  np.testing.assert_allclose([got.diff, got.low, got.high, got.se, got.p], want, rtol=1e-9, atol=1e-12)
  assert (got.n_items, got.method_draws, got.control_draws) == (n_items, m_draws or 1, c_draws or 1)


def test_diff_is_mean_of_per_item_differences():
  rng = np.random.default_rng(5)
  method, control = _scores(rng, (3, 17)), _scores(rng, (5, 17))
  per_item = [method[:, i].mean() - control[:, i].mean() for i in range(17)]
  got = stats.paired_bootstrap(method, control, n_resamples=50)
  assert got.diff == pytest.approx(sum(per_item) / 17, rel=1e-12)


def test_identical_inputs_are_a_degenerate_tie():
  scores = (np.arange(30) % 3 == 0).astype(float)
  got = stats.paired_bootstrap(scores, scores.copy(), n_resamples=300)
  assert (got.diff, got.low, got.high, got.p) == (0.0, 0.0, 0.0, 1.0)


def test_binary_scores_keep_exact_zero_replicates_with_draws():
  """0/1 scores with several draws: a method equal to the control on every draw gives exact-zero replicates."""
  rng = np.random.default_rng(9)
  row = (rng.uniform(size=25) < 0.5).astype(float)
  got = stats.paired_bootstrap(np.stack([row] * 2), np.stack([row] * 3), n_resamples=200)
  assert (got.diff, got.low, got.high, got.p) == (0.0, 0.0, 0.0, 1.0)


def test_all_correct_vs_all_wrong():
  b = 400
  got = stats.paired_bootstrap(np.ones((2, 12)), np.zeros((3, 12)), n_resamples=b)
  assert (got.diff, got.low, got.high) == (1.0, 1.0, 1.0)
  assert (got.se, got.p) == (0.0, 0.0)  # every replicate is 1: certain
  worse = stats.paired_bootstrap(np.zeros(12), np.ones(12), n_resamples=b)
  assert worse.diff == -1.0 and worse.p == 0.0


@pytest.mark.parametrize("method,control,match", [
    (np.zeros(10), np.zeros(12), "method has 10 items, control 12"),
    (np.zeros((2, 10)), np.zeros((3, 12)), "method has 10 items, control 12"),
    (np.zeros(0), np.zeros(0), "method has no items"),
    (np.zeros((0, 4)), np.zeros(4), "method has no draws"),
    (np.zeros(4), [0.0, math.nan, 1.0, 0.0], "control has 1 non-finite values"),
    (np.array([[0.0, math.inf]]), np.zeros(2), "method has 1 non-finite values"),
    (np.zeros((2, 3, 4)), np.zeros(4), r"method must have shape \[items\] or \[draws, items\], got shape \(2, 3, 4\)"),
])
def test_bad_inputs_raise(method, control, match):
  with pytest.raises(ValueError, match=match):
    stats.paired_bootstrap(method, control, n_resamples=10)


def test_bad_options_raise():
  with pytest.raises(ValueError, match="n_resamples"):
    stats.paired_bootstrap(np.zeros(3), np.zeros(3), n_resamples=0)
  with pytest.raises(ValueError, match="alpha"):
    stats.paired_bootstrap(np.zeros(3), np.zeros(3), alpha=1.5)


@pytest.mark.parametrize("chunk_elements", [1, 13, 40, 333])
def test_chunking_does_not_change_the_result(monkeypatch, chunk_elements):
  rng = np.random.default_rng(11)
  method, control = _scores(rng, (2, 37), 0.05), _scores(rng, (3, 37))
  whole = stats.paired_bootstrap(method, control, n_resamples=257, seed=4)
  monkeypatch.setattr(stats, "_CHUNK_ELEMENTS", chunk_elements)
  chunked = stats.paired_bootstrap(method, control, n_resamples=257, seed=4)
  # Same replicates; only BLAS summation order may differ with the chunk's row count.
  np.testing.assert_allclose([chunked.diff, chunked.low, chunked.high, chunked.p],
                             [whole.diff, whole.low, whole.high, whole.p], rtol=1e-12, atol=1e-15)
  assert (chunked.n_items, chunked.method_draws, chunked.control_draws) == (37, 2, 3)


def test_large_study_memory_stays_bounded():
  """50,000 items x 5 draws: peak allocation stays near one chunk, far below the [B, I] index array (80 MB)."""
  rng = np.random.default_rng(0)
  method = (rng.uniform(size=(5, 50_000)) < 0.6).astype(float)
  control = (rng.uniform(size=(5, 50_000)) < 0.5).astype(float)
  tracemalloc.start()
  try:
    got = stats.paired_bootstrap(method, control, n_resamples=200)
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert peak < 50e6, peak
  assert got.low < got.diff < got.high and got.p < 0.01


def test_to_json_is_plain():
  got = stats.paired_bootstrap(np.ones(5), np.zeros(5), n_resamples=20).to_json()
  assert json.loads(json.dumps(got)) == got
  assert {type(v) for v in got.values()} == {float, int}
  nan = stats.Comparison(math.nan, math.nan, math.nan, math.nan, math.nan, 0, 1, 1).to_json()
  assert nan["diff"] is None and nan["p"] is None and nan["n_items"] == 0


# ------------------------------------------------------------------------------------------- holm, verdicts


def test_holm_hand_example():
  adjusted, rejected = stats.holm([0.01, 0.04, 0.03, 0.005])
  np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
  assert rejected == [True, False, False, True]


@pytest.mark.parametrize("seed", range(6))
def test_holm_matches_naive(seed):
  rng = np.random.default_rng(seed)
  for size in range(1, 31):
    p = rng.uniform(0, 0.2, size=size) ** rng.uniform(0.5, 3)
    p[rng.uniform(size=size) < 0.1] = 1.0
    p = [None if rng.uniform() < 0.15 else (math.nan if rng.uniform() < 0.1 else float(x)) for x in p]
    got, got_rej = stats.holm(p, alpha=0.05)
    want, want_rej = _naive_holm(p, alpha=0.05)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got_rej == want_rej


def test_holm_missing_and_order():
  adjusted, rejected = stats.holm([None, 0.02, math.nan, 0.001])
  assert math.isnan(adjusted[0]) and math.isnan(adjusted[2]) and not rejected[0] and not rejected[2]
  np.testing.assert_allclose([adjusted[1], adjusted[3]], [0.02, 0.002], rtol=1e-12)  # m = 2, not 4
  assert rejected[1] and rejected[3]
  assert stats.holm([]) == ([], [])
  assert stats.holm([0.05]) == ([0.05], [True])  # reject iff adjusted <= alpha
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    stats.holm([0.1, 1.5])


def test_verdicts_better_worse_tie_missing():
  rng = np.random.default_rng(3)
  control = (rng.uniform(size=(3, 200)) < 0.5).astype(float)
  better = stats.paired_bootstrap(np.ones(200), control, n_resamples=500)
  worse = stats.paired_bootstrap(np.zeros((2, 200)), control, n_resamples=500)
  tie = stats.paired_bootstrap(control, control, n_resamples=500)
  assert stats.verdicts([better, None, worse, tie]) == ["better", "-", "worse", "tie"]


def test_verdicts_holm_turns_a_lone_win_into_a_tie():
  lucky = stats.Comparison(diff=0.04, low=0.005, high=0.075, se=0.017, p=0.02, n_items=300, method_draws=1, control_draws=3)
  null = stats.Comparison(diff=0.0, low=-0.03, high=0.03, se=0.015, p=0.8, n_items=300, method_draws=1, control_draws=3)
  assert stats.verdicts([lucky]) == ["better"]
  assert stats.verdicts([lucky, null]) == ["better", "tie"]  # 2 * 0.02 <= 0.05
  assert stats.verdicts([lucky] + [null] * 9 + [None]) == ["tie"] * 10 + ["-"]  # 10 * 0.02 > 0.05


def test_a_clear_win_survives_holm_over_a_study_sized_table():
  """A 10-point gain on 1,400 items stays "better" among 300 comparisons at B = 2000: the SE-based p-value is not
  floored at 2 / (B + 1), which Holm would multiply by 300 (a percentile p-value could never pass)."""
  rng = np.random.default_rng(4)
  control = (rng.uniform(size=(3, 1400)) < 0.6).astype(float)
  method = (rng.uniform(size=1400) < 0.7).astype(float)
  win = stats.paired_bootstrap(method, control, n_resamples=2000)
  assert win.p < 0.05 / 300 and win.low > 0
  null = stats.paired_bootstrap(control[0], control[1:], n_resamples=2000)
  assert stats.verdicts([win] + [null] * 299)[0] == "better"


def test_spearman_against_a_naive_reference_with_ties():
  """Rank correlation with tied values given their mean rank, as the textbook defines it; None if constant."""
  from jaxprune.study.analysis import spearman

  def naive(x, y):
    def ranks(v):
      return [sum(u < w for u in v) + (sum(u == w for u in v) - 1) / 2 for w in v]
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))

  rng = np.random.default_rng(2)
  for n in (3, 7, 20):
    x, y = rng.integers(0, 4, n).astype(float), rng.uniform(size=n)
    if len(set(x)) > 1:
      assert spearman(x, y) == pytest.approx(naive(list(x), list(y)), rel=1e-12)
  assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
  assert spearman([1, 1, 1], [1, 2, 3]) is None
