"""Static-shape selection: split a sequence into image and text positions, keep k image tokens, gather.

Every function takes the current visual-token count as a Python int, so output shapes are static
(L' = L - (Nv - k)) and each (length bucket, plan) compiles once. Order is preserved: kept indices are
sorted ascending before the gather, so causal attention sees the same relative order.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxprune.core.tokens import Tokens, text_positions


def take_rows(x: jax.Array, index: jax.Array) -> jax.Array:
  """x [B, L, ...] at index [B, K] -> [B, K, ...]."""
  return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


def split_positions(image: jax.Array, num_image: int) -> tuple[jax.Array, jax.Array]:
  """image [B, L] bool with exactly `num_image` Trues per row -> (image idx [B, Nv], text idx [B, L - Nv]),

  each ascending. A stable argsort of ~image puts image positions first, both groups in original order.
  """
  order = jnp.argsort(~image, axis=1, stable=True).astype(jnp.int32)
  return order[:, :num_image], order[:, num_image:]


def gather_tokens(tokens: Tokens, index: jax.Array) -> Tokens:
  """Every per-position field of `tokens` at index [B, L'] (ascending)."""
  return jax.tree.map(lambda x: take_rows(x, index), tokens)


def top_k_real(scores: jax.Array, real: jax.Array, k: int) -> jax.Array:
  """Indices of the k visual tokens to keep per row, ascending -> [B, k] int32: every real token before any
  padded slot whatever its score (-inf and NaN included), so `k` >= a row's real count keeps all of them; then
  by score, ties to the lower index, NaN as -inf (`scorers.top_k_indices`' order). scores/real [B, n]."""
  s = scores.astype(jnp.float32) + 0.0  # -0.0 -> 0.0
  s = jnp.where(jnp.isnan(s), -jnp.inf, s)
  order = jnp.argsort(-s, axis=-1, stable=True)  # [B, n] best first
  order = take_rows(order, jnp.argsort(~take_rows(real, order), axis=-1, stable=True))  # real ones first
  return jnp.sort(order[:, :k], axis=-1).astype(jnp.int32)


def keep_image_tokens(tokens: Tokens, image_idx: jax.Array, text_idx: jax.Array, kept: jax.Array) -> Tokens:
  """Keep all text and the image tokens at `kept` [B, k] (indices into image_idx) -> L' = L - Nv + k."""
  index = jnp.sort(jnp.concatenate([text_idx, take_rows(image_idx, kept)], axis=1), axis=1)
  return gather_tokens(tokens, index)


def replace_image_tokens(tokens: Tokens, image_idx: jax.Array, text_idx: jax.Array, hidden: jax.Array,
                         patch: jax.Array, at: jax.Array | None = None) -> Tokens:
  """Replace the image block by k new tokens (a merge): hidden [B, k, D] and their patch ids [B, k], written at
  the visual positions `at` [B, k] (ascending indices into image_idx; default the first k), which keep their
  RoPE positions, validity and image ids."""
  k = hidden.shape[1]
  if at is None:
    at = jnp.broadcast_to(jnp.arange(k), image_idx[:, :k].shape)
  out = keep_image_tokens(tokens, image_idx, text_idx, at)
  slots, _ = split_positions(out.image, k)  # where the k surviving image slots now sit
  rows = jnp.arange(hidden.shape[0])[:, None]
  return out.replace(hidden=out.hidden.at[rows, slots].set(hidden.astype(out.hidden.dtype)),
                     patch=out.patch.at[rows, slots].set(patch.astype(jnp.int32)))


def contiguous_positions(tokens: Tokens) -> Tokens:
  """1-D RoPE ids renumbered 0.. over the real tokens (the LLM never saw what was dropped)."""
  return tokens.replace(positions=text_positions(tokens.valid))


def renumber_positions(tokens: Tokens) -> Tokens:
  """`reindex`: positions as if the pruned sequence were the prompt.

  1-D RoPE: contiguous ids over the real tokens. M-RoPE (R = 3): a kept visual token keeps its (t, row, col)
  offsets from its image's first position — that 2-D structure is what M-RoPE encodes, and renumbering it 1-D
  would destroy it — while each image now starts right after what precedes it and text continues one past the
  largest position so far, exactly the rule Qwen2-VL uses to number a prompt. So gaps left by dropped text-side
  positions close up, and an image whose bottom rows were dropped no longer pushes the text after it further.
  """
  if tokens.rope_axes == 1:
    return contiguous_positions(tokens)
  return tokens.replace(positions=jax.vmap(_renumber_mrope)(tokens.positions, tokens.valid, tokens.image_id))


def _renumber_mrope(positions: jax.Array, valid: jax.Array, image_id: jax.Array) -> jax.Array:
  """One sample: positions [L, 3] -> [L, 3], scanning left to right (see `renumber_positions`)."""

  def step(carry, x):
    next_new, block, base_new, base_old = carry  # next free id, image id of the current block, block bases
    pos, ok, img = x
    starts = ok & (img >= 0) & (img != block)  # the first token of a new image block
    base_new = jnp.where(starts, next_new, base_new)
    base_old = jnp.where(starts, pos[0], base_old)  # a still image's t axis holds its start position
    in_image = ok & (img >= 0)
    new = jnp.where(in_image, base_new + pos - base_old, next_new)  # [3]
    new = jnp.where(ok, new, pos)  # padding keeps whatever it had (masked anyway)
    next_new = jnp.where(ok, jnp.maximum(next_new, jnp.max(new) + 1), next_new)
    block = jnp.where(ok, jnp.where(img >= 0, img, -1), block)
    return (next_new, block, base_new, base_old), new

  zero = jnp.zeros((), jnp.int32)
  init = (zero, jnp.asarray(-1, jnp.int32), zero, zero)
  _, new = jax.lax.scan(step, init, (positions, valid, image_id))
  return new.astype(jnp.int32)


def kept_map(tokens: Tokens, num_visual: int) -> jax.Array:
  """[B, Nv] bool: which of the image's visual tokens (grid cells) survive in `tokens`."""
  present = tokens.image & tokens.valid  # padded visual slots are never "kept"
  hits = jax.nn.one_hot(jnp.where(present, tokens.patch, -1), num_visual, dtype=jnp.int32)  # [B, L, Nv]
  return jnp.sum(hits, axis=1) > 0
