"""The prune-group prefill and the cached decode step, shared by every decoder.

A decoder runs its layers in *groups* separated by prune points. A prune point at layer K is a function
`(tokens, trace) -> tokens` applied to what enters layer K; it may shorten the sequence (static shapes), and
layers K.. then run, and cache, only what it kept:

    layer:      0 ........ K1-1 | K1 ....... K2-1 | K2 ........ n-1
    sequence:   L tokens        | L1 = L-(N-k1)   | L2 = L-(N-k2)
    KV cache:   group 0 [B,L+T] | group 1 [B,L1+T]| group 2 [B,L2+T]     (T = decode slots)

The decoder itself knows nothing about pruning methods. What this loop needs from a decoder (`Decoder`):
`config.num_layers`, `layers[i](x, cos, sin, mask, cache_kv, write_at, causal_prefix=) -> (x, (k, v), q)`,
`rope(positions [B, L, R]) -> (cos, sin)`, `norm(h)`, `embed(ids)` and `logits(h)`. A decoder whose prefill
attention is not plain causal (e.g. bidirectional inside an image) also defines
`prefill_mask(tokens, causal_mask [B, 1, L, L]) -> mask [B, 1, L, L]`; it is called once per group, on the tokens
that group keeps, and its layers then get `causal_prefix=False`.

Shapes: B batch, L sequence, D hidden, R rope axes, S_g cache slots of group g, V vocab.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import flax.struct
import jax
import jax.numpy as jnp

from jaxprune.core.tokens import KVCache, LayerTrace, PrunePoint, Tokens


class DecoderLayer(Protocol):
  """One layer: `layer(x [B, L, D], *rope, mask [B, 1, L, S], cache_kv=None, write_at=None, causal_prefix=)` ->
  (x [B, L, D], (k, v) [B, L, G, Dh] each, q [B, L, H, Dh]). `rope` is what `Decoder.rope` returned, unpacked
  (cos, sin for Llama; one (cos, sin) pair per rope kind for Gemma 3); `cache_kv`/`write_at` only when decoding."""

  def __call__(self, x: jax.Array, *rope_and_mask: Any, cache_kv: Any = None, write_at: Any = None,
               causal_prefix: bool = False) -> tuple[jax.Array, tuple[jax.Array, jax.Array], jax.Array]: ...


class Decoder(Protocol):
  """What the prefill and decode loops read from a decoder (the Llama/Qwen2 decoder, Gemma 3's)."""

  config: Any  # num_layers, ...
  layers: Sequence[DecoderLayer]

  def rope(self, positions: jax.Array) -> Any: ...  # positions [B, L, R] -> tables the layers unpack
  def norm(self, h: jax.Array) -> jax.Array: ...
  def embed(self, ids: jax.Array) -> jax.Array: ...
  def logits(self, h: jax.Array) -> jax.Array: ...
  def input_norm_params(self, layer: int) -> tuple[jax.Array, float]: ...  # (RMSNorm weight [D], eps) at layer
  def attention_window(self, layer: int) -> int | None: ...  # a sliding layer's window in slots; None if global


class MaskedDecoder(Decoder, Protocol):
  """A decoder whose prefill attention is not plain causal (Gemma 3: bidirectional inside an image)."""

  def prefill_mask(self, tokens: Tokens, causal: jax.Array) -> jax.Array: ...  # [B, 1, L, L] -> [B, 1, L, L]


def prefill(decoder: Decoder, tokens: Tokens, *, extra_slots: int,
            prune_points: Mapping[int, PrunePoint] | None = None) -> tuple[jax.Array, KVCache, Tokens]:
  """Run all layers over `tokens`, applying prune points between them.

  Returns (final-normed hidden [B, L', D], KVCache with `extra_slots` free slots per layer, final Tokens).
  The same ops in the same order as `prefill_start` -> `prefill_advance` -> `prefill_finish`.
  """
  state = prefill_start(tokens, extra_slots=extra_slots)
  state = prefill_advance(decoder, state, decoder.config.num_layers, prune_points)
  return prefill_finish(decoder, state)


# A prefill in resumable pieces, for grids of plans that share their prefix (jaxprune.generate.Generator.grid):
#
#   prefill_start ──► advance(to K1) ──┬──► advance(to K2) ──┬──► ... advance(to n) ──► finish   (unpruned)
#                                      │                     └──► plans whose first prune layer is K2
#                                      └──► advance(to n, plan's prune points) ──► finish   (a plan pruning at K1)
#
# A state is a pytree, so each piece may be its own `jit` program; a state at layer K is what the monolithic
# prefill holds just before layer K (before a prune point at K runs).


@flax.struct.dataclass
class PrefillState:
  """A prefill stopped before decoder layer `layer`: what enters it, and the KV of layers 0..layer-1."""

  tokens: Tokens  # what enters `layer` (hidden [B, L_g, D]), before any prune point at `layer`
  trace: LayerTrace | None  # layer-1's post-RoPE q/k (FastV at `layer` reads it); None at layer 0
  rope: tuple[jax.Array, jax.Array] | None  # (cos, sin) [B, L_g, Dh] of the current group; None at layer 0
  mask: jax.Array | None  # [B, 1, L_g, L_g] the current group's prefill mask; None at layer 0
  keys: tuple[jax.Array, ...]  # per finished layer [B, S_g, G, Dh] (S_g = L_g + extra_slots)
  values: tuple[jax.Array, ...]
  slot_valid: tuple[jax.Array, ...]  # per started group [B, S_g] bool
  next_position: tuple[jax.Array, ...]  # per started group [B] int32
  layer: int = flax.struct.field(pytree_node=False)
  extra_slots: int = flax.struct.field(pytree_node=False)
  group_of_layer: tuple[int, ...] = flax.struct.field(pytree_node=False, default=())
  lengths: tuple[int, ...] = flax.struct.field(pytree_node=False, default=())  # per started group


def prefill_start(tokens: Tokens, *, extra_slots: int) -> PrefillState:
  """The state before layer 0 (nothing run yet)."""
  return PrefillState(tokens=tokens, trace=None, rope=None, mask=None, keys=(), values=(), slot_valid=(),
                      next_position=(), layer=0, extra_slots=extra_slots)


def prefill_advance(decoder: Decoder, state: PrefillState, to_layer: int,
                    prune_points: Mapping[int, PrunePoint] | None = None) -> PrefillState:
  """Run layers state.layer .. to_layer-1, applying the prune points at those layers (a point at `to_layer` is
  left for the next piece: the state is what enters that layer)."""
  num_layers = decoder.config.num_layers
  prune_points = dict(prune_points or {})
  bad = [k for k in prune_points if not 0 <= k < num_layers]
  if bad:
    raise ValueError(f"prune point at layer {bad[0]} is outside [0, {num_layers})")
  if not state.layer <= to_layer <= num_layers:
    raise ValueError(f"prefill_advance: cannot go from layer {state.layer} to layer {to_layer} "
                     f"({num_layers} layers)")
  passed = [k for k in prune_points if k < state.layer]
  if passed:
    raise ValueError(f"prune point at layer {passed[0]}: this prefill already ran up to layer {state.layer}")
  tokens, trace, rope, mask = state.tokens, state.trace, state.rope, state.mask
  keys, values, slot_valid = list(state.keys), list(state.values), list(state.slot_valid)
  next_position, group_of_layer, lengths = list(state.next_position), list(state.group_of_layer), list(state.lengths)
  custom_mask = hasattr(decoder, "prefill_mask")  # a MaskedDecoder
  extra_slots = state.extra_slots
  for i in range(state.layer, to_layer):
    layer = decoder.layers[i]
    if i in prune_points:
      tokens = prune_points[i](tokens, trace)
    if i == 0 or i in prune_points:  # a new group starts: new length, positions and masks
      n = tokens.length
      rope = decoder.rope(tokens.positions)
      causal = jnp.tril(jnp.ones((n, n), bool))
      mask = causal[None, None] & tokens.valid[:, None, None, :]  # [B, 1, L, L]
      if custom_mask:
        mask = decoder.prefill_mask(tokens, mask)
      slot_valid.append(jnp.pad(tokens.valid, ((0, 0), (0, extra_slots))))
      lengths.append(n)
      next_position.append(next_positions(tokens))
    h, (k, v), q = layer(tokens.hidden, *rope, mask, causal_prefix=not custom_mask)
    tokens = tokens.replace(hidden=h)
    trace = LayerTrace(queries=q, keys=k)
    pad = ((0, 0), (0, extra_slots), (0, 0), (0, 0))
    keys.append(jnp.pad(k, pad))
    values.append(jnp.pad(v, pad))
    group_of_layer.append(len(lengths) - 1)
  return PrefillState(tokens=tokens, trace=trace, rope=rope, mask=mask, keys=tuple(keys), values=tuple(values),
                      slot_valid=tuple(slot_valid), next_position=tuple(next_position), layer=to_layer,
                      extra_slots=extra_slots, group_of_layer=tuple(group_of_layer), lengths=tuple(lengths))


def prefill_finish(decoder: Decoder, state: PrefillState) -> tuple[jax.Array, KVCache, Tokens]:
  """A state past the last layer -> (final-normed hidden [B, L', D], KVCache, final Tokens), as `prefill`."""
  if state.layer != decoder.config.num_layers:
    raise ValueError(f"prefill_finish: the prefill stopped at layer {state.layer} of {decoder.config.num_layers}")
  cache = KVCache(state.keys, state.values, state.slot_valid, state.next_position, jnp.zeros((), jnp.int32),
                  state.group_of_layer, state.lengths)
  return decoder.norm(state.tokens.hidden), cache, state.tokens


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
