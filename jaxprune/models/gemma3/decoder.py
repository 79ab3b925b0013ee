"""The Gemma 3 decoder in Flax NNX, for the shared prune-group loop in `jaxprune.core.decoding`.

What differs from `models/llama.py`:
- RMSNorm scales by (1 + w) and rounds to the input dtype after the scale; four norms per layer (before and
  after attention, before and after the MLP) and a per-head RMSNorm on q and k (QK-norm) before RoPE;
- token embeddings are multiplied by sqrt(D) (rounded to the weight dtype, as transformers does); image
  features are placed after that scaling and are not scaled;
- attention logits are q.k / sqrt(query_pre_attn_scalar), not / sqrt(Dh);
- two layer types: sliding layers see keys at most `sliding_window - 1` tokens back and use their own RoPE base
  (10k); global layers see everything and use the global base (1M) with linear scaling. `rope()` returns both
  tables as ((cos, sin) global, (cos, sin) sliding) and each layer picks its own;
- prefill attention is causal except inside an image: soft tokens of the same image see each other both ways
  (`prefill_mask`). Sliding layers AND their window onto that mask, as transformers does
  (window & (causal | same image));
- GeGLU MLP (tanh GELU), and optional final-logit soft-capping.

The window counts *sequence slots*: in prefill the distance is the index distance in the sequence the group
runs on, in decode the distance from the cache slot being written (`write_at`). After pruning, a group's
sequence and cache hold only the tokens it kept, so the window counts kept tokens (see the family docstring).

Shapes: B batch, L sequence, D hidden, H query heads, G kv heads, Dh head dim, S cache slots, V vocab.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.core import decoding
from jaxprune.core.tokens import KVCache, PrunePoint, Tokens, make_tokens
from jaxprune.models.attention import attend
from jaxprune.models.gemma3.config import SLIDING, Gemma3TextConfig
from jaxprune.models.layers import linear
from jaxprune.models.llama import apply_rope, rope_inverse_frequencies, rope_tables

RopeTables = tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]  # (global, sliding) (cos, sin)


class GemmaRMSNorm(nnx.Module):
  """RMSNorm with weight stored as in the checkpoint (zero-centred) and applied as (1 + w), in float32."""

  def __init__(self, dim: int, eps: float, *, dtype: jnp.dtype):
    self.weight = nnx.Param(jnp.zeros((dim,), dtype))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (normed * (1.0 + self.weight[...].astype(jnp.float32))).astype(x.dtype)


class Attention(nnx.Module):

  def __init__(self, cfg: Gemma3TextConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
    d, h, g, dh = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    if cfg.attention_bias:
      raise ValueError("config.json: text_config.attention_bias=true is not supported for Gemma 3")
    self.q_proj = linear(d, h * dh, dtype, rngs, bias=False)
    self.k_proj = linear(d, g * dh, dtype, rngs, bias=False)
    self.v_proj = linear(d, g * dh, dtype, rngs, bias=False)
    self.o_proj = linear(h * dh, d, dtype, rngs, bias=False, f32_out=True)
    self.q_norm = GemmaRMSNorm(dh, cfg.rms_norm_eps, dtype=dtype)
    self.k_norm = GemmaRMSNorm(dh, cfg.rms_norm_eps, dtype=dtype)
    self.num_heads, self.num_kv_heads, self.head_dim = h, g, dh
    # `attend` divides by sqrt(Dh); Gemma divides by sqrt(query_pre_attn_scalar): fold the ratio into q, so the
    # queries a prune point reads (FastV) also give Gemma's logits under the usual 1/sqrt(Dh)
    self.query_scale = float(np.sqrt(dh / cfg.query_pre_attn_scalar))

  def project(self, x: jax.Array, cos: jax.Array, sin: jax.Array):
    """x [B, L, D] -> post-QK-norm, post-RoPE q [B, L, H, Dh] (pre-scaled), k [B, L, G, Dh], and v."""
    b, n, _ = x.shape
    q = self.q_norm(self.q_proj(x).reshape(b, n, self.num_heads, self.head_dim))
    k = self.k_norm(self.k_proj(x).reshape(b, n, self.num_kv_heads, self.head_dim))
    v = self.v_proj(x).reshape(b, n, self.num_kv_heads, self.head_dim)
    q = apply_rope(q, cos, sin)
    return q * jnp.asarray(self.query_scale, q.dtype), apply_rope(k, cos, sin), v

  def output(self, attended: jax.Array) -> jax.Array:
    b, n = attended.shape[:2]
    return self.o_proj(attended.reshape(b, n, self.num_heads * self.head_dim)).astype(attended.dtype)


class MLP(nnx.Module):

  def __init__(self, cfg: Gemma3TextConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
    d, f = cfg.hidden_size, cfg.intermediate_size
    self.gate_proj = linear(d, f, dtype, rngs, bias=False)
    self.up_proj = linear(d, f, dtype, rngs, bias=False)
    self.down_proj = linear(f, d, dtype, rngs, bias=False, f32_out=True)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.down_proj(jax.nn.gelu(self.gate_proj(x), approximate=True) * self.up_proj(x)).astype(x.dtype)


def window_mask(mask: jax.Array, window: int, write_at: jax.Array | None) -> jax.Array:
  """mask [B, 1, T, S] & "key slot > query slot - window". Prefill (write_at None): query i sits at slot i;
  decode: the T query rows sit at slots write_at.. ."""
  t, s = mask.shape[-2:]
  query_slot = jnp.arange(t)[:, None] + (0 if write_at is None else write_at)  # [T, 1]
  return mask & (jnp.arange(s)[None, :] > query_slot - window)[None, None]


class DecoderLayer(nnx.Module):

  def __init__(self, cfg: Gemma3TextConfig, layer: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
    d, eps = cfg.hidden_size, cfg.rms_norm_eps
    self.input_norm = GemmaRMSNorm(d, eps, dtype=dtype)
    self.attn = Attention(cfg, dtype=dtype, rngs=rngs)
    self.post_attn_norm = GemmaRMSNorm(d, eps, dtype=dtype)
    self.pre_mlp_norm = GemmaRMSNorm(d, eps, dtype=dtype)
    self.mlp = MLP(cfg, dtype=dtype, rngs=rngs)
    self.post_mlp_norm = GemmaRMSNorm(d, eps, dtype=dtype)
    self.sliding = cfg.layer_types[layer] == SLIDING
    self.window = cfg.sliding_window

  def __call__(self, x, global_rope, sliding_rope, mask, cache_kv=None, write_at=None, *, causal_prefix=False):
    """x [B, T, D]; the decode loop's (cos, sin) slots carry the two RoPE tables (see `Gemma3Decoder.rope`).
    Without a cache, attends within x; with one, writes k/v at slot `write_at` first.

    Returns (x [B, T, D], (k, v) — the new cache entries or this step's k/v, q [B, T, H, Dh]).
    """
    cos, sin = sliding_rope if self.sliding else global_rope
    q, k, v = self.attn.project(self.input_norm(x), cos, sin)
    if cache_kv is not None:
      k = jax.lax.dynamic_update_slice_in_dim(cache_kv[0], k.astype(cache_kv[0].dtype), write_at, axis=1)
      v = jax.lax.dynamic_update_slice_in_dim(cache_kv[1], v.astype(cache_kv[1].dtype), write_at, axis=1)
    if self.sliding:
      mask = window_mask(mask, self.window, write_at if cache_kv is not None else None)
      causal_prefix = False  # the window is no longer "causal & key padding"
    attended = attend(q, k, v, mask, causal_prefix=causal_prefix)
    x = x + self.post_attn_norm(self.attn.output(attended))
    x = x + self.post_mlp_norm(self.mlp(self.pre_mlp_norm(x)))
    return x, (k, v), q


class Gemma3Decoder(nnx.Module):
  """Scaled token embedding, decoder layers, final norm and the LM head (tied to the embedding by default)."""

  def __init__(self, cfg: Gemma3TextConfig, *, dtype: jnp.dtype = jnp.bfloat16, rngs: nnx.Rngs):
    self.config = cfg
    self.embed_tokens = nnx.Embed(cfg.vocab_size, cfg.hidden_size, dtype=dtype, param_dtype=dtype, rngs=rngs)
    self.layers = nnx.List([DecoderLayer(cfg, i, dtype=dtype, rngs=rngs) for i in range(cfg.num_layers)])
    self.norm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype=dtype)
    self.lm_head = None if cfg.tie_word_embeddings else linear(cfg.hidden_size, cfg.vocab_size, dtype, rngs, bias=False)

  @property
  def language_model(self) -> Gemma3Decoder:
    return self

  def embed(self, ids: jax.Array) -> jax.Array:
    """ids [B, L] -> [B, L, D] scaled by sqrt(D) in the weight dtype (bf16 rounds sqrt(2560) to 50.5)."""
    table = self.embed_tokens.embedding[...]
    return self.embed_tokens(ids) * jnp.asarray(self.config.hidden_size ** 0.5, table.dtype)

  def logits(self, h: jax.Array) -> jax.Array:
    """Final-normed hidden [..., D] -> float32 logits [..., V] (soft-capped when configured)."""
    head = self.embed_tokens.attend(h) if self.lm_head is None else self.lm_head(h)
    logits = head.astype(jnp.float32)
    cap = self.config.final_logit_softcapping
    return logits if cap is None else jnp.tanh(logits / cap) * cap

  def text_tokens(self, ids: jax.Array, valid: jax.Array, query: jax.Array | None = None) -> Tokens:
    """Tokens for a left-padded text-only batch: ids/valid [B, L]."""
    return make_tokens(self.embed(ids), valid, jnp.zeros_like(valid), query)

  def input_norm_params(self, layer: int) -> tuple[jax.Array, float]:
    """(effective weight [D], eps) of the RMSNorm layer `layer` applies to its input (latesim): 1 + w."""
    w = self.layers[layer].input_norm.weight[...]
    return 1.0 + w.astype(jnp.float32), self.config.rms_norm_eps

  def attention_window(self, layer: int) -> int | None:
    """The sliding window of layer `layer` in sequence slots (keys at most window - 1 back), None if global."""
    return self.config.sliding_window if self.layers[layer].sliding else None

  def rope(self, positions: jax.Array) -> RopeTables:
    """positions [B, L, 1] -> ((cos, sin) of the global layers, (cos, sin) of the sliding layers), each
    [B, L, Dh]; the decode loop passes the pair through as a layer's (cos, sin) arguments."""
    cfg = self.config
    return (rope_tables(positions, rope_inverse_frequencies(cfg)),
            rope_tables(positions, rope_inverse_frequencies(cfg.local_rope())))

  def prefill_mask(self, tokens: Tokens, causal: jax.Array) -> jax.Array:
    """causal [B, 1, L, L] (causal & key valid) -> also allow query and key in the same image both ways.

    Called once per prune group on the tokens it keeps: kept soft tokens of one image keep seeing each other
    (dropped ones are simply gone); text, <start_of_image> and <end_of_image> stay causal."""
    image_id = jnp.where(tokens.image, tokens.image_id, -1)  # [B, L]; padded visual slots are masked as keys
    same = (image_id[:, :, None] == image_id[:, None, :]) & (image_id[:, :, None] >= 0)  # [B, L, L]
    return causal | (same & tokens.valid[:, None, :])[:, None]

  def prefill(self, tokens: Tokens, *, extra_slots: int, prune_points: Mapping[int, PrunePoint] | None = None):
    """Run all layers (see `jaxprune.core.decoding.prefill`) -> (final-normed hidden, KVCache, final Tokens)."""
    return decoding.prefill(self, tokens, extra_slots=extra_slots, prune_points=prune_points)

  def decode(self, ids: jax.Array, cache: KVCache) -> tuple[jax.Array, KVCache]:
    """One cached step: ids [B] -> (logits [B, V], cache with the step appended)."""
    return decoding.decode_step(self, ids, cache)
