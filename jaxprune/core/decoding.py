"""The prune-group prefill and the cached decode step, shared by every decoder.

A decoder runs its layers in *groups* separated by prune points. A prune point at layer K is a function
`(tokens, trace) -> tokens` applied to what enters layer K; it may shorten the sequence (static shapes), and
layers K.. then run, and cache, only what it kept:

    layer:      0 ........ K1-1 | K1 ....... K2-1 | K2 ........ n-1
    sequence:   L tokens        | L1 = L-(N-k1)   | L2 = L-(N-k2)
    KV cache:   group 0 [B,L+T] | group 1 [B,L1+T]| group 2 [B,L2+T]     (T = decode slots)

The decoder itself knows nothing about pruning methods. What this loop needs from a decoder (`Decoder`):
`config.num_layers`, `layers[i](x, cos, sin, mask, cache_kv, write_at, causal_prefix=) -> (x, (k, v), q)`,
`rope(positions [B, L, R]) -> (cos, sin)`, `norm(h)`, `embed(ids)` and `logits(h)`.

Shapes: B batch, L sequence, D hidden, R rope axes, S_g cache slots of group g, V vocab.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

import jax
import jax.numpy as jnp

from jaxprune.core.tokens import KVCache, LayerTrace, PrunePoint, Tokens


class Decoder(Protocol):
  config: Any
  layers: Any

  def rope(self, positions: jax.Array) -> tuple[jax.Array, jax.Array]: ...
  def norm(self, h: jax.Array) -> jax.Array: ...
  def embed(self, ids: jax.Array) -> jax.Array: ...
  def logits(self, h: jax.Array) -> jax.Array: ...


def prefill(decoder: Decoder, tokens: Tokens, *, extra_slots: int,
            prune_points: Mapping[int, PrunePoint] | None = None) -> tuple[jax.Array, KVCache, Tokens]:
  """Run all layers over `tokens`, applying prune points between them.

  Returns (final-normed hidden [B, L', D], KVCache with `extra_slots` free slots per layer, final Tokens).
  """
  num_layers = decoder.config.num_layers
  prune_points = dict(prune_points or {})
  bad = [k for k in prune_points if not 0 <= k < num_layers]
  if bad:
    raise ValueError(f"prune point at layer {bad[0]} is outside [0, {num_layers})")
  keys, values, slot_valid, group_of_layer, lengths, next_position = [], [], [], [], [], []
  trace = None
  for i, layer in enumerate(decoder.layers):
    if i in prune_points:
      tokens = prune_points[i](tokens, trace)
    if i == 0 or i in prune_points:  # a new group starts: new length, positions and masks
      n = tokens.length
      cos, sin = decoder.rope(tokens.positions)
      causal = jnp.tril(jnp.ones((n, n), bool))
      mask = causal[None, None] & tokens.valid[:, None, None, :]  # [B, 1, L, L]
      slot_valid.append(jnp.pad(tokens.valid, ((0, 0), (0, extra_slots))))
      lengths.append(n)
      next_position.append(next_positions(tokens))
    h, (k, v), q = layer(tokens.hidden, cos, sin, mask, causal_prefix=True)
    tokens = tokens.replace(hidden=h)
    trace = LayerTrace(queries=q, keys=k)
    pad = ((0, 0), (0, extra_slots), (0, 0), (0, 0))
    keys.append(jnp.pad(k, pad))
    values.append(jnp.pad(v, pad))
    group_of_layer.append(len(lengths) - 1)
  cache = KVCache(tuple(keys), tuple(values), tuple(slot_valid), tuple(next_position),
                  jnp.zeros((), jnp.int32), tuple(group_of_layer), tuple(lengths))
  return decoder.norm(tokens.hidden), cache, tokens


def next_positions(tokens: Tokens) -> jax.Array:
  """[B] int32: the position of the first generated token, one past the largest position on any rope axis
  (M-RoPE: text after an image continues after the image's largest (t, row, col) id, as Qwen2-VL does)."""
  last = jnp.max(jnp.where(tokens.valid[..., None], tokens.positions, -1), axis=(1, 2))  # [B]
  return (last + 1).astype(jnp.int32)


def decode_step(decoder: Decoder, ids: jax.Array, cache: KVCache) -> tuple[jax.Array, KVCache]:
  """One cached step: ids [B] -> (logits [B, V], cache with the step appended to every layer)."""
  x = decoder.embed(ids[:, None])  # [B, 1, D]
  rope_axes = 1 if decoder.config.mrope_section is None else 3
  # per group (cos, sin) of the next position, the same on every rope axis
  rope = [decoder.rope(jnp.broadcast_to(p[:, None, None], (p.shape[0], 1, rope_axes))) for p in cache.next_position]
  slots = tuple(cache.prefill_lengths[g] + cache.step for g in range(len(cache.prefill_lengths)))
  slot_valid = tuple(jax.lax.dynamic_update_slice_in_dim(m, jnp.ones((m.shape[0], 1), bool), s, axis=1)
                     for m, s in zip(cache.slot_valid, slots))
  keys, values = [], []
  for i, layer in enumerate(decoder.layers):
    g = cache.group_of_layer[i]
    mask = slot_valid[g][:, None, None, :]  # [B, 1, 1, S_g]
    x, (k, v), _ = layer(x, *rope[g], mask, (cache.keys[i], cache.values[i]), slots[g])
    keys.append(k)
    values.append(v)
  cache = cache.replace(keys=tuple(keys), values=tuple(values), slot_valid=slot_valid,
                        next_position=tuple(p + 1 for p in cache.next_position), step=cache.step + 1)
  return decoder.logits(decoder.norm(x[:, 0])), cache
