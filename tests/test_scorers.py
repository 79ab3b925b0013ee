"""Scorers vs naive NumPy / plain-Python references."""

from __future__ import annotations

import functools
import hashlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.core.tokens import prompt_keys
from jaxprune.inputs import item_keys
from jaxprune.prune import scorers

TOL = dict(rtol=1e-5, atol=1e-5)


def _rng(seed: int = 0) -> np.random.Generator:
  return np.random.default_rng(seed)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
  a, b = a.astype(np.float64), b.astype(np.float64)
  return float(a @ b / max(np.linalg.norm(a), 1e-12) / max(np.linalg.norm(b), 1e-12))


# ---------------------------------------------------------------------------
# top_k_indices


def test_top_k_indices_ties_prefer_lower_index():
  s = np.array([[1.0, 3.0, 3.0, 0.0, -0.0, 3.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                [-np.inf, 2.0, -np.inf, 2.0, np.nan, -np.inf, 1.0]], np.float32)
  got = np.asarray(scorers.top_k_indices(jnp.asarray(s), 5))
  np.testing.assert_array_equal(got, [[0, 1, 2, 3, 5], [0, 1, 2, 3, 4], [0, 1, 2, 3, 6]])
  assert got.dtype == np.int32


def test_top_k_indices_random_matches_reference():
  s = _rng(1).integers(0, 5, size=(3, 40)).astype(np.float32)  # many exact ties
  got = np.asarray(jax.jit(scorers.top_k_indices, static_argnums=1)(jnp.asarray(s), 11))
  for b in range(3):
    ref = sorted(sorted(range(40), key=lambda i: (-s[b, i], i))[:11])
    assert got[b].tolist() == ref


# ---------------------------------------------------------------------------
# latesim


def _latesim_ref(vis, text, mask, weight, eps, aggregate):
  def norm(x):
    if weight is None:
      return x.astype(np.float64)
    x = x.astype(np.float64)
    return x / np.sqrt(np.mean(x * x) + eps) * weight

  b_, nv, _ = vis.shape
  out = np.zeros((b_, nv))
  for b in range(b_):
    rows = [t for t in range(text.shape[1]) if mask[b, t]]
    for i in range(nv):
      sims = [_cos(norm(vis[b, i]), norm(text[b, t])) for t in rows]
      if sims:
        out[b, i] = np.mean(sims) if aggregate == "mean" else np.max(sims)
  return out


@pytest.mark.parametrize("use_norm", [False, True])
@pytest.mark.parametrize("aggregate", ["mean", "max"])
def test_latesim_matches_loops(use_norm, aggregate):
  r = _rng(2)
  vis = r.normal(size=(3, 7, 16)).astype(np.float32)
  text = r.normal(size=(3, 5, 16)).astype(np.float32)
  mask = np.array([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool)
  text[0, 1] = 1e4  # a masked row with extreme values must not matter
  weight = r.normal(size=(16,)).astype(np.float32) if use_norm else None
  fn = functools.partial(scorers.latesim, aggregate=aggregate)
  args = (jnp.asarray(vis), jnp.asarray(text), jnp.asarray(mask))
  got = jax.jit(fn)(*args, norm_weight=None if weight is None else jnp.asarray(weight))
  ref = _latesim_ref(vis, text, mask, weight, 1e-6, aggregate)
  assert got.dtype == jnp.float32 and got.shape == (3, 7)
  np.testing.assert_allclose(np.asarray(got), ref, **TOL)
  assert np.all(np.asarray(got)[1] == 0.0)  # no valid text -> zeros, no NaN


# ---------------------------------------------------------------------------
# fastv


def _fastv_ref(q, q_index, q_mask, k, key_mask, image_index, scale, window=None):
  """Full L x L attention for all heads (GQA expanded), then pick query rows; a sliding layer sees keys at most
  window - 1 back."""
  b_, nq, h, dh = q.shape
  l, hkv = k.shape[1], k.shape[2]
  out = np.zeros(image_index.shape)
  for b in range(b_):
    # Scatter the query rows into a full [L, H, Dh] query tensor.
    q_full = np.zeros((l, h, dh))
    for j in range(nq):
      q_full[q_index[b, j]] = q[b, j]
    kk = np.repeat(k[b].astype(np.float64), h // hkv, axis=1)  # [L, H, Dh]
    logits = np.einsum("ihd,jhd->hij", q_full, kk) * scale  # [H, L, L]
    causal = np.tril(np.ones((l, l), bool)) & key_mask[b][None, :]
    if window is not None:
      causal &= ~np.tril(np.ones((l, l), bool), -window)  # drop keys window or more slots back
    logits = np.where(causal[None], logits, -np.inf)
    rows_max = logits.max(-1, keepdims=True)
    probs = np.exp(logits - np.where(np.isfinite(rows_max), rows_max, 0.0))
    probs /= np.maximum(probs.sum(-1, keepdims=True), 1e-300)  # [H, L, L]; pad rows stay 0
    rows = [q_index[b, j] for j in range(nq) if q_mask[b, j]]
    if rows:
      attn = probs.mean(0)[rows].mean(0)  # [L]
      out[b] = attn[image_index[b]]
  return out


@pytest.mark.parametrize("h,hkv,window", [(4, 4, None), (4, 2, None), (6, 1, None), (4, 2, 4), (4, 2, 9)])
def test_fastv_matches_full_attention(h, hkv, window):
  r = _rng(3)
  b_, l, dh, nv = 3, 14, 8, 5
  q = r.normal(size=(b_, 3, h, dh)).astype(np.float32)
  k = r.normal(size=(b_, l, hkv, dh)).astype(np.float32)
  key_mask = np.ones((b_, l), bool)
  key_mask[0, :2] = False  # left padding
  key_mask[2, 11:] = False  # right padding
  q_index = np.array([[13, 9, 5], [13, 12, 4], [10, 8, 7]])
  q_mask = np.array([[1, 1, 0], [1, 1, 1], [1, 0, 1]], bool)
  image_index = np.array([[2, 3, 4, 5, 6], [1, 2, 3, 4, 5], [3, 4, 5, 6, 7]])
  fastv = jax.jit(functools.partial(scorers.fastv, window=window))
  got = fastv(*map(jnp.asarray, (q, q_index, q_mask, k, key_mask, image_index)))
  ref = _fastv_ref(q, q_index, q_mask, k, key_mask, image_index, dh ** -0.5, window)
  assert got.dtype == jnp.float32 and got.shape == (b_, nv)
  np.testing.assert_allclose(np.asarray(got), ref, **TOL)


def test_fastv_last_token_and_scale():
  r = _rng(4)
  q = r.normal(size=(2, 1, 2, 4)).astype(np.float32)
  k = r.normal(size=(2, 9, 2, 4)).astype(np.float32)
  key_mask = np.ones((2, 9), bool)
  q_index, q_mask = np.full((2, 1), 8), np.ones((2, 1), bool)
  image_index = np.tile(np.arange(1, 7), (2, 1))
  got = scorers.fastv(*map(jnp.asarray, (q, q_index, q_mask, k, key_mask, image_index)), scale=0.3)
  ref = _fastv_ref(q, q_index, q_mask, k, key_mask, image_index, 0.3)
  np.testing.assert_allclose(np.asarray(got), ref, **TOL)
  # No valid query rows -> zeros, not NaN.
  got0 = scorers.fastv(*map(jnp.asarray, (q, q_index, ~q_mask, k, key_mask, image_index)))
  assert np.all(np.asarray(got0) == 0.0)


# ---------------------------------------------------------------------------
# clsattn, random, uniform, pool


def test_clsattn_sums_heads():
  a = _rng(5).random((2, 3, 10)).astype(np.float32)
  got = jax.jit(scorers.clsattn)(jnp.asarray(a))
  np.testing.assert_allclose(np.asarray(got), a.sum(1), **TOL)
  assert got.dtype == jnp.float32


def test_random_scores_are_per_item_and_independent_of_the_batch():
  """One draw per (seed, item key): the same alone, in any batch order, at any padded slot count; items differ."""
  f = jax.jit(scorers.random_scores, static_argnums=(0, 2))
  keys = np.array([7, 123456789, 4000000000], np.uint32)  # a key above 2**31 too
  a, b = np.asarray(f(0, keys, 50)), np.asarray(f(1, keys, 50))
  assert a.shape == (3, 50) and a.dtype == np.float32
  assert np.all((a >= 0) & (a < 1))
  assert not np.allclose(a, b) and not np.allclose(a[0], a[1])  # seeds differ, items differ
  for row in range(len(keys)):
    alone = np.asarray(f(0, keys[row:row + 1], 50))[0]
    np.testing.assert_array_equal(alone, a[row])  # batch = alone
    np.testing.assert_array_equal(np.asarray(f(0, keys[row:row + 1], 80))[0, :50], a[row])  # padding: same slots
  np.testing.assert_array_equal(np.asarray(f(0, keys[::-1], 50)), a[::-1])  # order in the batch does not matter


def test_prompt_keys_hash_the_question_wherever_it_sits():
  ids = np.array([[0, 0, 5, 6, 7], [0, 5, 6, 7, 8], [5, 6, 7, 9, 9]], np.int32)
  question = np.array([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
  keys = np.asarray(prompt_keys(jnp.asarray(ids), jnp.asarray(question)))
  assert keys.dtype == np.uint32
  assert keys[0] == keys[2] and keys[0] != keys[1]  # the same question elsewhere / generated text after it: one key
  swapped = np.asarray(prompt_keys(jnp.asarray([[7, 6, 5]]), jnp.ones((1, 3), bool)))
  assert swapped[0] != keys[0]  # order matters


def test_item_keys_are_stable_and_distinct():
  keys = item_keys(["a", "b", "item-17"], batch_size=5)
  assert keys.dtype == np.uint32 and keys.shape == (5,) and keys[3] == keys[4] == 0
  assert len(set(keys[:3].tolist())) == 3
  assert keys[2] == int.from_bytes(hashlib.blake2b(b"item-17", digest_size=4).digest(), "little")  # no salt


def test_uniform_scores_lattice():
  s = np.asarray(jax.jit(scorers.uniform_scores, static_argnums=(0, 1, 2, 3))(2, 24, 24, 64))
  assert s.shape == (2, 576) and s.dtype == np.float32
  idx = np.asarray(scorers.top_k_indices(jnp.asarray(s), 64))[0]
  rows, cols = idx // 24, idx % 24
  want = [1 + 3 * i for i in range(8)]  # centres of 8 bins of 3 cells
  assert sorted(set(rows.tolist())) == want and sorted(set(cols.tolist())) == want
  assert s.sum() == 2 * 64


def test_uniform_scores_fallback_stride():
  s = np.asarray(scorers.uniform_scores(1, 4, 6, 7))  # 7 is prime: no 2:1 lattice on 4x6
  idx = np.asarray(scorers.top_k_indices(jnp.asarray(s), 7))[0]
  assert idx.tolist() == [int((i + 0.5) * 24 / 7) for i in range(7)]


def _pool_ref(tokens, gh, gw, kh, kw):
  b_, _, d = tokens.shape
  x = tokens.reshape(b_, gh, gw, d).astype(np.float64)
  out = np.zeros((b_, kh, kw, d))
  for i in range(kh):
    for j in range(kw):
      r0, r1 = math.floor(i * gh / kh), math.ceil((i + 1) * gh / kh)
      c0, c1 = math.floor(j * gw / kw), math.ceil((j + 1) * gw / kw)
      out[:, i, j] = x[:, r0:r1, c0:c1].mean(axis=(1, 2))
  return out.reshape(b_, kh * kw, d)


@pytest.mark.parametrize("gh,gw,keep,grid", [
    (24, 24, 64, (8, 8)), (24, 24, 576, (24, 24)), (6, 6, 10, (3, 3)), (5, 7, 6, (2, 3)), (24, 24, 128, (8, 16)),
])
def test_pool(gh, gw, keep, grid):
  assert scorers.pool_grid(gh, gw, keep) == grid
  t = _rng(6).normal(size=(2, gh * gw, 5)).astype(np.float32)
  got = jax.jit(scorers.pool, static_argnums=(1, 2, 3))(jnp.asarray(t), gh, gw, keep)
  assert got.shape == (2, grid[0] * grid[1], 5) and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), _pool_ref(t, gh, gw, *grid), **TOL)


# ---------------------------------------------------------------------------
# divprune


def _divprune_ref(feats, keep):
  n = feats.shape[0]
  d = [[1.0 - _cos(feats[i], feats[j]) for j in range(n)] for i in range(n)]
  nn = [min(d[i][j] for j in range(n) if j != i) for i in range(n)]
  sel = [max(range(n), key=lambda i: (nn[i], -i))]
  while len(sel) < keep:
    cand = [i for i in range(n) if i not in sel]
    sel.append(max(cand, key=lambda i: (min(d[i][j] for j in sel), -i)))
  return sel


def test_divprune_matches_greedy_loop():
  f = _rng(7).normal(size=(3, 30, 12)).astype(np.float32)
  f[1, 5] = f[1, 9] * 3.0  # exact duplicate direction
  got = np.asarray(jax.jit(scorers.divprune, static_argnums=1)(jnp.asarray(f), 9))
  assert got.shape == (3, 9) and got.dtype == np.int32
  for b in range(3):
    assert got[b].tolist() == _divprune_ref(f[b], 9)


def test_divprune_scores_reproduce_selection():
  f = _rng(8).normal(size=(2, 25, 6)).astype(np.float32)
  sel = np.asarray(scorers.divprune(jnp.asarray(f), 7))
  s = jax.jit(scorers.divprune_scores, static_argnums=1)(jnp.asarray(f), 7)
  assert s.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(scorers.top_k_indices(s, 7)), np.sort(sel, axis=-1))
  for b in range(2):
    assert np.asarray(s)[b, sel[b]].tolist() == list(range(7, 0, -1))
    assert np.isneginf(np.delete(np.asarray(s)[b], sel[b])).all()


# ---------------------------------------------------------------------------
# visionzip


def _visionzip_ref(tokens, attn, keys, nd, nc, merge):
  n = tokens.shape[0]
  dom = sorted(sorted(range(n), key=lambda i: (-attn[i], i))[:nd])
  rest = [i for i in range(n) if i not in dom]
  step = max(1, len(rest) // nc)
  tgt = list(range(0, len(rest), step))[:nc]
  groups = {c: [] for c in range(nc)}
  for p in range(len(rest)):
    if p in tgt:
      continue
    sims = [_cos(keys[rest[p]], keys[rest[t]]) for t in tgt]
    groups[int(np.argmax(sims))].append(rest[p])
  ctx = []
  for c, t in enumerate(tgt):
    members = [tokens[i].astype(np.float64) for i in groups[c]]
    target = tokens[rest[t]].astype(np.float64)
    if merge == "visionzip":
      ctx.append(target + (np.mean(members, 0) if members else 0.0))
    else:
      ctx.append(np.mean([target] + members, 0))
  return np.concatenate([tokens[dom].astype(np.float64), np.stack(ctx)]), dom


@pytest.mark.parametrize("merge", ["visionzip", "mean"])
@pytest.mark.parametrize("nd,nc", [(6, 3), (10, 5), (1, 1)])
def test_visionzip_matches_reference(merge, nd, nc):
  r = _rng(9)
  tokens = r.normal(size=(2, 36, 8)).astype(np.float32)
  attn = r.integers(0, 6, size=(2, 36)).astype(np.float32)  # ties in attention
  keys = r.normal(size=(2, 36, 4)).astype(np.float32)
  fn = jax.jit(functools.partial(scorers.visionzip, n_dominant=nd, n_contextual=nc, merge=merge))
  merged, dom = fn(jnp.asarray(tokens), jnp.asarray(attn), jnp.asarray(keys))
  assert merged.shape == (2, nd + nc, 8) and merged.dtype == jnp.float32 and dom.shape == (2, nd)
  for b in range(2):
    ref, ref_dom = _visionzip_ref(tokens[b], attn[b], keys[b], nd, nc, merge)
    assert np.asarray(dom)[b].tolist() == ref_dom
    np.testing.assert_allclose(np.asarray(merged)[b], ref, **TOL)


def test_visionzip_rejects_bad_split():
  x = jnp.zeros((1, 8, 2))
  with pytest.raises(ValueError):
    scorers.visionzip(x, jnp.zeros((1, 8)), x, n_dominant=6, n_contextual=3)
