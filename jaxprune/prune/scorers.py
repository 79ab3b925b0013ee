"""Pure visual-token scoring (and merging) functions.

Every scorer returns float32 scores [B, Nv] where higher = keep, unless stated.
All functions are pure and jit-able: array shapes are static, and the
arguments that set output shapes (`keep`, `n_dominant`, grid sizes, ...) are
Python ints (mark them static under `jax.jit`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

_F32 = jnp.float32
_TINY = 1e-12  # guards L2 normalisation of all-zero vectors


def _l2_normalize(x: jax.Array) -> jax.Array:
  x = x.astype(_F32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), _TINY)


def _rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
  x = x.astype(_F32)
  return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * weight.astype(_F32)


# ---------------------------------------------------------------------------
# Selection helper


def top_k_indices(scores: jax.Array, k: int) -> jax.Array:
  """Indices of the k highest scores per row, sorted ascending -> [B, k] int32.

  Ties go to the lower index. `jax.lax.top_k` documents that too, but it orders
  -0.0 below 0.0 (total order), so we use a stable argsort on canonicalised
  scores instead. NaN counts as -inf.
  """
  s = scores.astype(_F32) + 0.0  # -0.0 -> 0.0
  s = jnp.where(jnp.isnan(s), -jnp.inf, s)
  order = jnp.argsort(-s, axis=-1, stable=True)[:, :k]  # [B, k] best first
  return jnp.sort(order, axis=-1).astype(jnp.int32)


# ---------------------------------------------------------------------------
# Text-conditioned scorers


def latesim(
    vis: jax.Array,
    text: jax.Array,
    text_mask: jax.Array,
    *,
    norm_weight: jax.Array | None = None,
    eps: float = 1e-6,
    aggregate: str = "mean",
) -> jax.Array:
  """Cosine similarity of each visual token to the valid text tokens -> [B, Nv].

  vis [B, Nv, D], text [B, T, D], text_mask [B, T] bool. With `norm_weight` [D]
  both sides first go through the decoder's RMSNorm (what the next layer sees).
  Samples without any valid text token score all zeros.
  """
  if aggregate not in ("mean", "max"):
    raise ValueError(f"aggregate={aggregate!r}: expected 'mean' or 'max'")
  if norm_weight is not None:
    vis, text = _rms_norm(vis, norm_weight, eps), _rms_norm(text, norm_weight, eps)
  sim = jnp.einsum("bnd,btd->bnt", _l2_normalize(vis), _l2_normalize(text))  # [B, Nv, T]
  m = text_mask[:, None, :]  # [B, 1, T]
  count = jnp.sum(text_mask, axis=-1)[:, None]  # [B, 1]
  if aggregate == "mean":
    return jnp.sum(jnp.where(m, sim, 0.0), axis=-1) / jnp.maximum(count, 1)
  best = jnp.max(jnp.where(m, sim, -jnp.inf), axis=-1)  # [B, Nv]
  return jnp.where(count > 0, best, 0.0)


def fastv(
    q: jax.Array,
    q_index: jax.Array,
    q_mask: jax.Array,
    k: jax.Array,
    key_mask: jax.Array,
    image_index: jax.Array,
    *,
    scale: float | None = None,
    window: int | None = None,
) -> jax.Array:
  """Attention that the query rows pay to each image token -> [B, Nv].

  q [B, Q, H, Dh] post-RoPE queries at positions q_index [B, Q] (valid where
  q_mask [B, Q]); k [B, L, Hkv, Dh] post-RoPE keys, valid where key_mask [B, L];
  image_index [B, Nv] positions of the image tokens. Only the Q x L block of the
  attention matrix is formed, never L x L. Softmax is over valid keys with
  position <= the query's (and > the query's - `window` at a sliding-window layer, as the layer itself
  attends); then mean over heads and over valid query rows.
  """
  b, nq, h, dh = q.shape
  hkv = k.shape[2]
  scale = dh ** -0.5 if scale is None else scale
  qg = q.astype(_F32).reshape(b, nq, hkv, h // hkv, dh)  # [B, Q, Hkv, G, Dh]; head h -> kv head h // G
  logits = jnp.einsum("bqkgd,blkd->bkgql", qg, k.astype(_F32)) * scale  # [B, Hkv, G, Q, L]
  pos = jnp.arange(k.shape[1])
  visible = key_mask[:, None, :] & (pos[None, None, :] <= q_index[:, :, None])  # [B, Q, L]
  if window is not None:
    visible = visible & (pos[None, None, :] > q_index[:, :, None] - window)
  visible = visible & q_mask[:, :, None]
  vis5 = visible[:, None, None]  # [B, 1, 1, Q, L]
  probs = jax.nn.softmax(jnp.where(vis5, logits, jnp.finfo(_F32).min), axis=-1)
  probs = jnp.where(vis5, probs, 0.0)  # rows with nothing visible -> 0, not NaN
  per_q = jnp.mean(probs, axis=(1, 2))  # [B, Q, L] mean over all H heads
  count = jnp.maximum(jnp.sum(q_mask, axis=-1), 1)[:, None]  # [B, 1]
  attn = jnp.sum(per_q, axis=1) / count  # [B, L]
  return jnp.take_along_axis(attn, image_index, axis=-1)


# ---------------------------------------------------------------------------
# Vision-side scorers


def clsattn(cls_attn: jax.Array) -> jax.Array:
  """FasterVLM: [CLS]->patch attention [B, H, Np] summed over heads -> [B, Np]."""
  return jnp.sum(cls_attn.astype(_F32), axis=1)


def divprune(feats: jax.Array, keep: int, valid: jax.Array | None = None) -> jax.Array:
  """DivPrune greedy max-min diversity selection -> [B, keep] int32, in SELECTION order.

  Distance is 1 - cosine similarity. As in the paper (Alvar et al., CVPR 2025)
  and its released code, the first token is the one whose nearest other token is
  farthest (argmax_i min_{j != i} d_ij); each next token maximises its minimum
  distance to the already-selected set. Ties -> lower index. Use
  `jnp.sort(...)` or `divprune_scores` + `top_k_indices` for original order.
  `valid` [B, N] (default all): padded slots are neither picked nor counted as neighbours.
  """
  x = _l2_normalize(feats)  # [B, N, D]
  b, n, _ = x.shape
  valid = jnp.ones((b, n), bool) if valid is None else valid
  dist = 1.0 - jnp.einsum("bnd,bmd->bnm", x, x)  # [B, N, N]
  eye = jnp.eye(n, dtype=bool)
  nearest = jnp.min(jnp.where(eye | ~valid[:, None, :], jnp.inf, dist), axis=-1)  # [B, N]
  first = jnp.argmax(jnp.where(valid, nearest, -jnp.inf), axis=-1)  # [B]
  rows = jnp.arange(b)

  def body(i, carry):
    sel, taken, mind = carry  # [B, keep], [B, N] bool, [B, N]
    mind = jnp.minimum(mind, dist[rows, sel[:, i - 1]])  # add the last pick's distances
    nxt = jnp.argmax(jnp.where(taken, -jnp.inf, mind), axis=-1)  # [B]
    return sel.at[:, i].set(nxt), taken.at[rows, nxt].set(True), mind

  sel = jnp.zeros((b, keep), jnp.int32).at[:, 0].set(first)
  taken = (~valid).at[rows, first].set(True)
  mind = jnp.full((b, n), jnp.inf, _F32)
  sel, _, _ = jax.lax.fori_loop(1, keep, body, (sel, taken, mind))
  return sel


def divprune_scores(feats: jax.Array, keep: int, valid: jax.Array | None = None) -> jax.Array:
  """DivPrune as scores [B, N]: keep - rank for selected tokens, -inf otherwise.

  `top_k_indices(scores, keep)` then returns exactly the DivPrune selection.
  """
  sel = divprune(feats, keep, valid)  # [B, keep]
  b, n = feats.shape[:2]
  ranks = jnp.broadcast_to(jnp.arange(keep, 0, -1, dtype=_F32), (b, keep))
  return jnp.full((b, n), -jnp.inf, _F32).at[jnp.arange(b)[:, None], sel].set(ranks)


def visionzip(
    tokens: jax.Array,
    attn: jax.Array,
    keys: jax.Array,
    *,
    n_dominant: int,
    n_contextual: int,
    merge: str = "visionzip",
) -> tuple[jax.Array, jax.Array]:
  """VisionZip (Yang et al., CVPR 2025) dominant + contextual tokens (a MERGE method).

  tokens [B, N, D]; attn [B, N] [CLS] attention (summed over heads); keys [B, N, Dk]
  (VisionZip uses the same layer's attention keys, averaged over heads).
  Dominant: top n_dominant by attn, in original order. Of the R = N - n_dominant
  others, targets are every `max(1, R // n_contextual)`-th one (first n_contextual);
  each non-target joins its most similar target (dot product of L2-normalised keys).
  merge="visionzip" (released code): context = target + mean(assigned), i.e. the
  target itself when nothing is assigned. merge="mean": the plain average of the
  target and its assigned tokens.
  Returns (merged [B, n_dominant + n_contextual, D] float32 = dominant then
  contextual, dominant_index [B, n_dominant] int32 ascending). Default split in
  the paper for LLaVA-1.5: 54+10 (64), 108+20 (128), 162+30 (192); the released
  code counts [CLS] among the dominant tokens (53 patches + [CLS]), while here all
  n_dominant come from `tokens` (pass [CLS] in `tokens` to mimic that).
  """
  if merge not in ("visionzip", "mean"):
    raise ValueError(f"merge={merge!r}: expected 'visionzip' or 'mean'")
  b, n, _ = tokens.shape
  r = n - n_dominant
  if not (0 < n_contextual <= r):
    raise ValueError(f"n_contextual={n_contextual} must be in [1, N - n_dominant = {r}]")
  dom = top_k_indices(attn, n_dominant)  # [B, nd] ascending
  is_dom = jnp.zeros((b, n), bool).at[jnp.arange(b)[:, None], dom].set(True)
  rest = jnp.argsort(is_dom, axis=-1, stable=True)[:, :r]  # [B, R] non-dominant, original order
  step = max(1, r // n_contextual)
  tgt_pos = np.arange(0, r, step)[:n_contextual]  # static positions within `rest`
  src_pos = np.setdiff1d(np.arange(r), tgt_pos)
  take = lambda x, idx: jnp.take_along_axis(x, idx[..., None], axis=1)
  kn = _l2_normalize(take(keys, rest))  # [B, R, Dk]
  x = take(tokens, rest).astype(_F32)  # [B, R, D]
  sim = jnp.einsum("bsd,btd->bst", kn[:, src_pos], kn[:, tgt_pos])  # [B, S, C]
  assign = jax.nn.one_hot(jnp.argmax(sim, axis=-1), n_contextual, dtype=_F32)  # [B, S, C]
  summed = jnp.einsum("bsc,bsd->bcd", assign, x[:, src_pos])  # [B, C, D]
  count = jnp.sum(assign, axis=1)[..., None]  # [B, C, 1]
  if merge == "visionzip":
    ctx = x[:, tgt_pos] + summed / jnp.maximum(count, 1.0)
  else:
    ctx = (x[:, tgt_pos] + summed) / (count + 1.0)
  return jnp.concatenate([take(tokens, dom).astype(_F32), ctx], axis=1), dom


def visionzip_padded(
    tokens: jax.Array,
    attn: jax.Array,
    keys: jax.Array,
    valid: jax.Array,
    *,
    n_dominant: int,
    n_contextual: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`visionzip` (merge="visionzip") over visual slots padded to a static N, for dynamic-resolution families.

  tokens [B, N, D], attn [B, N], keys [B, N, Dk], valid [B, N] (False at padded slots, anywhere in the row).
  Padded slots are never dominant, never a target and never merged into one, and the targets are every
  `max(1, R_b // n_contextual)`-th of sample b's own R_b real non-dominant tokens, so a sample's result does not
  depend on how much padding its batch adds. Each output stays at a token of the input: a dominant token where it
  was, a contextual token where its target was (so M-RoPE positions stay meaningful).
  Returns (merged [B, k, D] float32, index [B, k] int32 ascending into N, contextual [B, k] bool), k = nd + nc.
  """
  b, n, _ = tokens.shape
  r = n - n_dominant
  if not (0 < n_contextual <= r):
    raise ValueError(f"n_contextual={n_contextual} must be in [1, N - n_dominant = {r}]")
  rows = jnp.arange(b)[:, None]
  dom = top_k_indices(jnp.where(valid, attn, -jnp.inf), n_dominant)  # [B, nd] ascending
  is_dom = jnp.zeros((b, n), bool).at[rows, dom].set(True)
  rest = jnp.argsort(is_dom | ~valid, axis=-1, stable=True)[:, :r].astype(jnp.int32)  # [B, R] real others first
  n_rest = jnp.sum(valid & ~is_dom, axis=-1)  # [B] real non-dominant tokens
  tgt_pos = jnp.arange(n_contextual)[None, :] * jnp.maximum(1, n_rest // n_contextual)[:, None]  # [B, C] in rest
  is_tgt = jnp.zeros((b, r), bool).at[rows, tgt_pos].set(True)
  is_src = (jnp.arange(r)[None, :] < n_rest[:, None]) & ~is_tgt  # [B, R] real, not a target
  take = lambda x, idx: jnp.take_along_axis(x, idx[..., None], axis=1)
  kn = _l2_normalize(take(keys, rest))  # [B, R, Dk]
  x = take(tokens, rest).astype(_F32)  # [B, R, D]
  sim = jnp.einsum("bsd,btd->bst", kn, take(kn, tgt_pos))  # [B, R, C]
  assign = jax.nn.one_hot(jnp.argmax(sim, axis=-1), n_contextual, dtype=_F32) * is_src[..., None]  # [B, R, C]
  summed = jnp.einsum("bsc,bsd->bcd", assign, x)  # [B, C, D]
  count = jnp.sum(assign, axis=1)[..., None]  # [B, C, 1]
  context = take(x, tgt_pos) + summed / jnp.maximum(count, 1.0)
  index = jnp.concatenate([dom, jnp.take_along_axis(rest, tgt_pos, axis=1)], axis=1)  # [B, k]
  merged = jnp.concatenate([take(tokens, dom).astype(_F32), context], axis=1)
  contextual = jnp.broadcast_to(jnp.arange(index.shape[1]) >= n_dominant, index.shape)
  order = jnp.argsort(index, axis=-1)  # indices are distinct: back to sequence order
  return take(merged, order), jnp.take_along_axis(index, order, axis=1), jnp.take_along_axis(contextual, order, axis=1)


# ---------------------------------------------------------------------------
# Baselines


def random_scores(seed: int, item_key: jax.Array, n: int) -> jax.Array:
  """Uniform [0, 1) scores [B, N], one draw per item: sample b's score at slot j depends only on (seed,
  item_key[b], j), so it is the same alone, in any batch, at any padded N, and after a resume.

  item_key [B] uint32: a stable per-item key (the eval hashes the item id; see `jaxprune.inputs.item_keys`)."""
  base = jax.random.key(seed)

  def one_item(key: jax.Array) -> jax.Array:  # [] -> [N]; a key per slot, so N (the batch's padding) cannot matter
    item = jax.random.fold_in(base, key)
    return jax.vmap(lambda j: jax.random.uniform(jax.random.fold_in(item, j), (), _F32))(jnp.arange(n))

  return jax.vmap(one_item)(item_key.astype(jnp.uint32))


def _lattice(grid_h: int, grid_w: int, keep: int) -> tuple[int, int] | None:
  """Exact kh x kw = keep that fits the grid with aspect within 2x of the grid's, or None."""
  best = None
  for kh in range(1, min(grid_h, keep) + 1):
    kw = keep // kh
    if kh * kw != keep or kw > grid_w:
      continue
    err = abs(math.log((kh / kw) / (grid_h / grid_w)))
    if err <= math.log(2) + 1e-9 and (best is None or err < best[0]):
      best = (err, kh, kw)
  return None if best is None else best[1:]


def _strided(n: int, k: int) -> np.ndarray:
  """k evenly spaced centres in [0, n): floor((i + 0.5) * n / k)."""
  return ((np.arange(k) + 0.5) * n / k).astype(np.int64)


def uniform_scores(batch: int, grid_h: int, grid_w: int, keep: int) -> jax.Array:
  """Spatial baseline [B, N]: 1 at `keep` evenly strided grid positions, 0 elsewhere.

  If keep = kh * kw fits the grid (aspect within 2x), the positions form a kh x kw
  lattice of cell centres; otherwise they are evenly strided in raster order.
  """
  n = grid_h * grid_w
  keep = min(keep, n)
  lat = _lattice(grid_h, grid_w, keep)
  if lat is None:
    idx = _strided(n, keep)
  else:
    idx = (_strided(grid_h, lat[0])[:, None] * grid_w + _strided(grid_w, lat[1])[None, :]).ravel()
  s = np.zeros((n,), np.float32)
  s[idx] = 1.0
  return jnp.broadcast_to(jnp.asarray(s), (batch, n))


def pool_grid(grid_h: int, grid_w: int, keep: int) -> tuple[int, int]:
  """Output grid of `pool`: the exact lattice if any (see uniform_scores), else s x s, s = floor(sqrt(keep))."""
  lat = _lattice(grid_h, grid_w, min(keep, grid_h * grid_w))
  if lat is not None:
    return lat
  s = max(1, min(math.isqrt(keep), grid_h, grid_w))
  return s, s


def _pool_matrix(n_in: int, n_out: int) -> np.ndarray:
  """Adaptive average pooling in 1-D: bin i covers [floor(i n/m), ceil((i+1) n/m))."""
  p = np.zeros((n_out, n_in), np.float32)
  for i in range(n_out):
    lo, hi = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
    p[i, lo:hi] = 1.0 / (hi - lo)
  return p


def pool(tokens: jax.Array, grid_h: int, grid_w: int, keep: int) -> jax.Array:
  """Adaptive average pooling of the raster-ordered token grid -> [B, kh * kw, D] float32, kh * kw <= keep."""
  b, n, d = tokens.shape
  kh, kw = pool_grid(grid_h, grid_w, keep)
  ph, pw = jnp.asarray(_pool_matrix(grid_h, kh)), jnp.asarray(_pool_matrix(grid_w, kw))
  x = tokens.astype(_F32).reshape(b, grid_h, grid_w, d)
  out = jnp.einsum("ih,jw,bhwd->bijd", ph, pw, x)  # [B, kh, kw, D]
  return out.reshape(b, kh * kw, d)


def uniform_layout_scores(layout, keep: int) -> jax.Array:
  """`uniform_scores` on every image of a VisualLayout, whatever its grid -> [B, N] (1 = a chosen cell).

  A sample's `keep` is split evenly over its images (ceil). Per image, the same rule as `uniform_scores`: the
  kh x kw lattice of cell centres when keep = kh * kw fits the grid with aspect within 2x (the smallest kh of
  least aspect error, errors compared to 1e-5; `uniform_scores`' float64 search may break exact ties the other
  way, which is why fixed-grid families keep using it), else `keep` cells evenly strided in raster order. Computed on device from the layout's
  (row, col, grid_h, grid_w), so images of any size share one compiled program.
  """
  row, col, gh, gw = layout.row, layout.col, layout.grid_h, layout.grid_w  # [B, N]
  n_images = jnp.max(jnp.where(layout.valid, layout.image, -1), axis=1, keepdims=True) + 1  # [B, 1]
  k = jnp.minimum(-(-keep // jnp.maximum(n_images, 1)), gh * gw)  # [B, N] cells per image
  cand = jnp.arange(1, keep + 1)  # [K] candidate lattice heights
  kh_c = cand[None, None, :]
  kw_c = k[..., None] // kh_c  # [B, N, K]
  exact = (kh_c * kw_c == k[..., None]) & (kw_c <= gw[..., None]) & (kh_c <= gh[..., None]) & (kw_c > 0)
  ratio = lambda a, b: jnp.log(jnp.maximum(a, 1).astype(_F32) / jnp.maximum(b, 1).astype(_F32))
  # aspect error, rounded so that mathematically equal errors tie exactly whatever the float rounding
  err = jnp.round(jnp.abs(ratio(kh_c, kw_c) - ratio(gh, gw)[..., None]) * 1e5)
  ok = exact & (err <= round(math.log(2) * 1e5))
  best = jnp.argmin(jnp.where(ok, err, jnp.inf), axis=-1)  # [B, N] first least error
  has_lattice = jnp.any(ok, axis=-1)
  kh = best + 1  # cand[best]
  kw = jnp.maximum(k // kh, 1)

  def centred(index, n, m):
    """Whether `index` in [0, n) is one of the m strided centres floor((2i + 1) n / 2m)."""
    i0 = index * m // jnp.maximum(n, 1)
    hits = [((2 * i + 1) * n) // (2 * m) == index for i in (i0 - 1, i0, i0 + 1)]
    in_range = [(i >= 0) & (i < m) for i in (i0 - 1, i0, i0 + 1)]
    return functools.reduce(jnp.logical_or, [h & r for h, r in zip(hits, in_range)])

  lattice = centred(row, gh, kh) & centred(col, gw, kw)
  strided = centred(row * gw + col, gh * gw, jnp.maximum(k, 1))
  chosen = jnp.where(has_lattice, lattice, strided) & layout.valid
  return chosen.astype(_F32)
