"""Llama-family decoder in Flax NNX: RMSNorm, RoPE, grouped-query attention, SwiGLU, KV cache.

The decoder runs its layers in *groups* separated by prune points. A prune point at layer K is a function
`(tokens, trace) -> tokens` applied to what enters layer K; it may shorten the sequence (static shapes), and
layers K.. then run, and cache, only what it kept. The decoder itself knows nothing about pruning methods.

Shapes: B batch, L sequence, D hidden, H query heads, G kv heads, Dh head dim, S cache slots, V vocab.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.models.attention import attend
from jaxprune.models.config import TextConfig


@flax.struct.dataclass
class Tokens:
  """The sequence flowing between decoder layers. Pruning gathers every field along L."""

  hidden: jax.Array  # [B, L, D]
  positions: jax.Array  # [B, L] int32 RoPE position ids (gaps allowed after pruning)
  valid: jax.Array  # [B, L] bool, False at padding
  image: jax.Array  # [B, L] bool, True at visual tokens
  query: jax.Array  # [B, L] bool, True at the question tokens (the text that text-aware scorers use)
  patch: jax.Array  # [B, L] int32, which visual token of the image (grid cell) this is; -1 for text

  @property
  def length(self) -> int:
    return self.hidden.shape[1]


@flax.struct.dataclass
class LayerTrace:
  """What the layer just before a prune point computed, for scorers that read attention (FastV)."""

  queries: jax.Array  # [B, L, H, Dh] post-RoPE (XLA keeps only the rows a scorer reads)
  keys: jax.Array  # [B, L, G, Dh] post-RoPE


PrunePoint = Callable[[Tokens, LayerTrace | None], Tokens]


@flax.struct.dataclass
class KVCache:
  """Per-layer K/V; layers of one group (between prune points) share a length and a slot mask."""

  keys: tuple[jax.Array, ...]  # per layer [B, S_g, G, Dh]
  values: tuple[jax.Array, ...]  # per layer [B, S_g, G, Dh]
  slot_valid: tuple[jax.Array, ...]  # per group [B, S_g] bool
  # per group [B] int32, RoPE position of the next token. Groups differ when a stage renumbers positions:
  # layers before it saw the original ids, layers after it the renumbered ones.
  next_position: tuple[jax.Array, ...]
  step: jax.Array  # [] int32, decode steps taken so far
  group_of_layer: tuple[int, ...] = flax.struct.field(pytree_node=False)
  prefill_lengths: tuple[int, ...] = flax.struct.field(pytree_node=False)  # per group

  @property
  def nbytes(self) -> int:
    return sum(a.size * a.dtype.itemsize for a in self.keys + self.values)


# ---------------------------------------------------------------------------------------------- RoPE


@functools.lru_cache(maxsize=None)
def rope_inverse_frequencies(cfg: TextConfig) -> np.ndarray:
  """[Dh/2] float32 inverse frequencies, with HF's `default`, `linear` and `llama3` rope types."""
  dh = cfg.head_dim
  inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, dh, 2, dtype=np.float64) / dh))
  scaling = dict(cfg.rope_scaling or ())
  rope_type = scaling.get("rope_type", scaling.get("type", "default"))
  if rope_type == "default":
    pass
  elif rope_type == "linear":
    inv_freq = inv_freq / scaling["factor"]
  elif rope_type == "llama3":
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    inv_freq = np.where(medium, smoothed, scaled)
  else:
    raise ValueError(f"config.json: rope_scaling type {rope_type!r} is not supported (default, linear, llama3)")
  return inv_freq.astype(np.float32)


def rope_tables(positions: jax.Array, inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
  """cos, sin [B, L, Dh] in float32, halves duplicated (HF's rotate-half layout)."""
  angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, L, Dh/2]
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """x [B, L, heads, Dh] rotated by per-position angles."""
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
  return x * cos + rotated * sin


# ---------------------------------------------------------------------------------------------- layers


class RMSNorm(nnx.Module):

  def __init__(self, dim: int, eps: float, *, dtype: jnp.dtype):
    self.weight = nnx.Param(jnp.ones((dim,), dtype))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    # Statistics in float32 (as HF does), then back to the input dtype before the weight.
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return self.weight[...] * normed.astype(x.dtype)


def _linear(n_in: int, n_out: int, bias: bool, dtype: jnp.dtype, rngs: nnx.Rngs, *, f32_out: bool = False):
  """`f32_out` for row-parallel layers (input features sharded over "model"): partial sums are reduced across
  shards in float32 and rounded to `dtype` once by the caller, so a bf16 model gives the same answers under
  tensor parallelism as on one device."""
  return nnx.Linear(n_in, n_out, use_bias=bias, dtype=dtype, param_dtype=dtype, rngs=rngs,
                    preferred_element_type=jnp.float32 if f32_out else None)


class Attention(nnx.Module):

  def __init__(self, cfg: TextConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
    d, h, g, dh = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    self.q_proj = _linear(d, h * dh, cfg.attention_bias, dtype, rngs)
    self.k_proj = _linear(d, g * dh, cfg.attention_bias, dtype, rngs)
    self.v_proj = _linear(d, g * dh, cfg.attention_bias, dtype, rngs)
    self.o_proj = _linear(h * dh, d, False, dtype, rngs, f32_out=True)
    self.num_heads, self.num_kv_heads, self.head_dim = h, g, dh

  def project(self, x: jax.Array, cos: jax.Array, sin: jax.Array):
    """x [B, L, D] -> post-RoPE q [B, L, H, Dh], k [B, L, G, Dh], and v [B, L, G, Dh]."""
    b, n, _ = x.shape
    q = self.q_proj(x).reshape(b, n, self.num_heads, self.head_dim)
    k = self.k_proj(x).reshape(b, n, self.num_kv_heads, self.head_dim)
    v = self.v_proj(x).reshape(b, n, self.num_kv_heads, self.head_dim)
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

  def output(self, attended: jax.Array) -> jax.Array:
    b, n = attended.shape[:2]
    return self.o_proj(attended.reshape(b, n, self.num_heads * self.head_dim)).astype(attended.dtype)


class MLP(nnx.Module):

  def __init__(self, cfg: TextConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
    d, f = cfg.hidden_size, cfg.intermediate_size
    self.gate_proj = _linear(d, f, cfg.mlp_bias, dtype, rngs)
    self.up_proj = _linear(d, f, cfg.mlp_bias, dtype, rngs)
    self.down_proj = _linear(f, d, cfg.mlp_bias, dtype, rngs, f32_out=True)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x)).astype(x.dtype)


class DecoderLayer(nnx.Module):

  def __init__(self, cfg: TextConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
    self.input_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype=dtype)
    self.attn = Attention(cfg, dtype=dtype, rngs=rngs)
    self.post_attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype=dtype)
    self.mlp = MLP(cfg, dtype=dtype, rngs=rngs)

  def __call__(self, x, cos, sin, mask, cache_kv=None, write_at=None, *, causal_prefix=False):
    """x [B, T, D]. Without a cache, attends within x; with one, writes k/v at slot `write_at` first.
    causal_prefix: `mask` is causal with query i at key slot i (prefill), which lets CPU skip masked blocks.

    Returns (x [B, T, D], (k, v) — the new cache entries or this step's k/v, q [B, T, H, Dh]).
    """
    q, k, v = self.attn.project(self.input_norm(x), cos, sin)
    if cache_kv is not None:
      k = jax.lax.dynamic_update_slice_in_dim(cache_kv[0], k.astype(cache_kv[0].dtype), write_at, axis=1)
      v = jax.lax.dynamic_update_slice_in_dim(cache_kv[1], v.astype(cache_kv[1].dtype), write_at, axis=1)
    x = x + self.attn.output(attend(q, k, v, mask, causal_prefix=causal_prefix))
    x = x + self.mlp(self.post_attn_norm(x))
    return x, (k, v), q


# ---------------------------------------------------------------------------------------------- model


class LlamaModel(nnx.Module):
  """Token embedding, decoder layers, final norm and LM head (tied to the embedding when configured)."""

  def __init__(self, cfg: TextConfig, *, dtype: jnp.dtype = jnp.bfloat16, rngs: nnx.Rngs):
    self.config = cfg
    self.embed_tokens = nnx.Embed(cfg.vocab_size, cfg.hidden_size, dtype=dtype, param_dtype=dtype, rngs=rngs)
    self.layers = nnx.List([DecoderLayer(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.num_layers)])
    self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype=dtype)
    self.lm_head = None if cfg.tie_word_embeddings else _linear(cfg.hidden_size, cfg.vocab_size, False, dtype, rngs)

  @property
  def language_model(self) -> "LlamaModel":
    return self

  def embed(self, ids: jax.Array) -> jax.Array:
    """ids [B, L] -> [B, L, D]."""
    return self.embed_tokens(ids)

  def logits(self, h: jax.Array) -> jax.Array:
    """Final-normed hidden [..., D] -> float32 logits [..., V]."""
    if self.lm_head is None:
      return self.embed_tokens.attend(h).astype(jnp.float32)
    return self.lm_head(h).astype(jnp.float32)

  def text_tokens(self, ids: jax.Array, valid: jax.Array, query: jax.Array | None = None) -> Tokens:
    """Tokens for a left-padded text-only batch: ids/valid [B, L]."""
    return make_tokens(self.embed(ids), valid, jnp.zeros_like(valid), query)

  def prefill(self, tokens: Tokens, *, extra_slots: int, prune_points: Mapping[int, PrunePoint] | None = None):
    """Run all layers over `tokens`, applying prune points between them.

    Returns (final-normed hidden [B, L', D], KVCache with `extra_slots` free slots per layer, final Tokens).
    """
    prune_points = dict(prune_points or {})
    bad = [k for k in prune_points if not 0 <= k < self.config.num_layers]
    if bad:
      raise ValueError(f"prune point at layer {bad[0]} is outside [0, {self.config.num_layers})")
    keys, values, slot_valid, group_of_layer, lengths, next_position = [], [], [], [], [], []
    trace = None
    for i, layer in enumerate(self.layers):
      if i in prune_points:
        tokens = prune_points[i](tokens, trace)
      if i == 0 or i in prune_points:  # a new group starts: new length, positions and masks
        n = tokens.length
        cos, sin = rope_tables(tokens.positions, rope_inverse_frequencies(self.config))
        causal = jnp.tril(jnp.ones((n, n), bool))
        mask = causal[None, None] & tokens.valid[:, None, None, :]  # [B, 1, L, L]
        slot_valid.append(jnp.pad(tokens.valid, ((0, 0), (0, extra_slots))))
        lengths.append(n)
        last = jnp.max(jnp.where(tokens.valid, tokens.positions, -1), axis=1)  # [B]
        next_position.append((last + 1).astype(jnp.int32))
      h, (k, v), q = layer(tokens.hidden, cos, sin, mask, causal_prefix=True)
      tokens = tokens.replace(hidden=h)
      trace = LayerTrace(queries=q, keys=k)
      pad = ((0, 0), (0, extra_slots), (0, 0), (0, 0))
      keys.append(jnp.pad(k, pad))
      values.append(jnp.pad(v, pad))
      group_of_layer.append(len(lengths) - 1)
    cache = KVCache(tuple(keys), tuple(values), tuple(slot_valid), tuple(next_position),
                    jnp.zeros((), jnp.int32), tuple(group_of_layer), tuple(lengths))
    return self.norm(tokens.hidden), cache, tokens

  def decode(self, ids: jax.Array, cache: KVCache) -> tuple[jax.Array, KVCache]:
    """One cached step: ids [B] -> (logits [B, V], cache with the step appended to every layer)."""
    x = self.embed(ids[:, None])  # [B, 1, D]
    inv_freq = rope_inverse_frequencies(self.config)
    rope = [rope_tables(p[:, None], inv_freq) for p in cache.next_position]  # per group (cos, sin)
    slots = tuple(cache.prefill_lengths[g] + cache.step for g in range(len(cache.prefill_lengths)))
    slot_valid = tuple(jax.lax.dynamic_update_slice_in_dim(m, jnp.ones((m.shape[0], 1), bool), s, axis=1)
                       for m, s in zip(cache.slot_valid, slots))
    keys, values = [], []
    for i, layer in enumerate(self.layers):
      g = cache.group_of_layer[i]
      mask = slot_valid[g][:, None, None, :]  # [B, 1, 1, S_g]
      x, (k, v), _ = layer(x, *rope[g], mask, (cache.keys[i], cache.values[i]), slots[g])
      keys.append(k)
      values.append(v)
    cache = cache.replace(keys=tuple(keys), values=tuple(values), slot_valid=slot_valid,
                          next_position=tuple(p + 1 for p in cache.next_position), step=cache.step + 1)
    return self.logits(self.norm(x[:, 0])), cache


def make_tokens(hidden: jax.Array, valid: jax.Array, image: jax.Array, query: jax.Array | None) -> Tokens:
  """Tokens for a left-padded batch: positions count real tokens from 0, as HF's generate does."""
  positions = jnp.maximum(jnp.cumsum(valid, axis=1) - 1, 0).astype(jnp.int32)
  if query is None:  # default query: every real text token
    query = valid & ~image
  patch = jnp.where(image, jnp.cumsum(image, axis=1) - 1, -1).astype(jnp.int32)
  return Tokens(hidden=hidden, positions=positions, valid=valid, image=image, query=query & valid & ~image,
                patch=patch)
