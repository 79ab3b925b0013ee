"""Static-shape selection: split a sequence into image and text positions, keep k image tokens, gather.

Every function takes the current visual-token count as a Python int, so output shapes are static
(L' = L - (Nv - k)) and each (length bucket, plan) compiles once. Order is preserved: kept indices are
sorted ascending before the gather, so causal attention sees the same relative order.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxprune.models.llama import Tokens


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


def keep_image_tokens(tokens: Tokens, image_idx: jax.Array, text_idx: jax.Array, kept: jax.Array) -> Tokens:
  """Keep all text and the image tokens at `kept` [B, k] (indices into image_idx) -> L' = L - Nv + k."""
  index = jnp.sort(jnp.concatenate([text_idx, take_rows(image_idx, kept)], axis=1), axis=1)
  return gather_tokens(tokens, index)


def replace_image_tokens(tokens: Tokens, image_idx: jax.Array, text_idx: jax.Array, hidden: jax.Array,
                         patch: jax.Array) -> Tokens:
  """Replace the image block by k new tokens (a merge): hidden [B, k, D] and their patch ids [B, k]."""
  k = hidden.shape[1]
  out = keep_image_tokens(tokens, image_idx, text_idx, jnp.broadcast_to(jnp.arange(k), image_idx[:, :k].shape))
  slots, _ = split_positions(out.image, k)  # where the k surviving image slots now sit
  rows = jnp.arange(hidden.shape[0])[:, None]
  return out.replace(hidden=out.hidden.at[rows, slots].set(hidden.astype(out.hidden.dtype)),
                     patch=out.patch.at[rows, slots].set(patch.astype(jnp.int32)))


def contiguous_positions(tokens: Tokens) -> Tokens:
  """RoPE ids renumbered 0.. over the real tokens (the LLM never saw what was dropped)."""
  positions = jnp.maximum(jnp.cumsum(tokens.valid, axis=1) - 1, 0).astype(jnp.int32)
  return tokens.replace(positions=positions)


def kept_map(tokens: Tokens, num_visual: int) -> jax.Array:
  """[B, Nv] bool: which of the image's visual tokens (grid cells) survive in `tokens`."""
  hits = jax.nn.one_hot(jnp.where(tokens.image, tokens.patch, -1), num_visual, dtype=jnp.int32)  # [B, L, Nv]
  return jnp.sum(hits, axis=1) > 0
