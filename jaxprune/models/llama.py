"""Llama-family decoder in Flax NNX: RMSNorm, RoPE (1-D, or Qwen2-VL's 3-D M-RoPE), GQA, SwiGLU, KV cache.

Llama 2/3, Vicuna, SmolLM2 and (with `attention_bias` and `mrope_section`) the Qwen2 decoder of Qwen2.5-VL.
The prune-group prefill and cached decode loop live in `jaxprune.core.decoding`; this module only says what one
layer computes.

Shapes: B batch, L sequence, R rope axes, D hidden, H query heads, G kv heads, Dh head dim, S cache slots, V vocab.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.core import decoding
from jaxprune.core.tokens import KVCache, LayerTrace, PrunePoint, Tokens, make_tokens
from jaxprune.models.attention import attend
from jaxprune.models.config import TextConfig
from jaxprune.models.layers import linear

__all__ = ["KVCache", "LayerTrace", "LlamaModel", "PrunePoint", "Tokens", "make_tokens"]


# ---------------------------------------------------------------------------------------------- RoPE


@functools.cache
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


def rope_tables(positions: jax.Array, inv_freq: np.ndarray,
                mrope_section: tuple[int, ...] | None = None) -> tuple[jax.Array, jax.Array]:
  """positions [B, L, R] (or [B, L]) -> cos, sin [B, L, Dh] in float32, halves duplicated (HF's rotate-half
  layout). M-RoPE (R = 3): frequency j reads the (t, row, col) axis whose `mrope_section` chunk holds j."""
  if positions.ndim == 2:
    positions = positions[..., None]
  if mrope_section is None and positions.shape[-1] != 1:
    raise ValueError(f"{positions.shape[-1]} rope axes given to a 1-D RoPE decoder")
  if mrope_section is not None:
    positions = jnp.broadcast_to(positions, positions.shape[:2] + (len(mrope_section),))  # text: same id on all
  angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, L, R, Dh/2]
  if mrope_section is None:
    angles = angles[:, :, 0]
  else:
    axis_of_freq = np.repeat(np.arange(len(mrope_section)), mrope_section)  # [Dh/2]
    angles = angles[:, :, axis_of_freq, np.arange(len(axis_of_freq))]  # [B, L, Dh/2]
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


class Attention(nnx.Module):

  def __init__(self, cfg: TextConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
    d, h, g, dh = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    self.q_proj = linear(d, h * dh, dtype, rngs, bias=cfg.attention_bias)
    self.k_proj = linear(d, g * dh, dtype, rngs, bias=cfg.attention_bias)
    self.v_proj = linear(d, g * dh, dtype, rngs, bias=cfg.attention_bias)
    self.o_proj = linear(h * dh, d, dtype, rngs, bias=False, f32_out=True)
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
    self.gate_proj = linear(d, f, dtype, rngs, bias=cfg.mlp_bias)
    self.up_proj = linear(d, f, dtype, rngs, bias=cfg.mlp_bias)
    self.down_proj = linear(f, d, dtype, rngs, bias=cfg.mlp_bias, f32_out=True)

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
    self.lm_head = None if cfg.tie_word_embeddings else linear(cfg.hidden_size, cfg.vocab_size, dtype, rngs, bias=False)

  @property
  def language_model(self) -> LlamaModel:
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

  def input_norm_params(self, layer: int) -> tuple[jax.Array, float]:
    """(weight [D], eps) of the RMSNorm layer `layer` applies to its input (what `latesim` compares under)."""
    return self.layers[layer].input_norm.weight[...], self.config.rms_norm_eps

  def attention_window(self, layer: int) -> int | None:
    """Every layer attends to all earlier keys (no sliding window)."""
    return None

  def rope(self, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """positions [B, L, R] -> cos, sin [B, L, Dh]."""
    return rope_tables(positions, rope_inverse_frequencies(self.config), self.config.mrope_section)

  def prefill(self, tokens: Tokens, *, extra_slots: int, prune_points: Mapping[int, PrunePoint] | None = None):
    """Run all layers (see `jaxprune.core.decoding.prefill`) -> (final-normed hidden, KVCache, final Tokens)."""
    return decoding.prefill(self, tokens, extra_slots=extra_slots, prune_points=prune_points)

  def decode(self, ids: jax.Array, cache: KVCache) -> tuple[jax.Array, KVCache]:
    """One cached step: ids [B] -> (logits [B, V], cache with the step appended)."""
    return decoding.decode_step(self, ids, cache)
