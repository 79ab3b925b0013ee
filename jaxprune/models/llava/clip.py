"""CLIP ViT vision tower (pre-LN) in Flax NNX.

Only the layers up to the one LLaVA reads are built and run (LLaVA-1.5 reads layer -2, so the last encoder
layer and the post-LN are never needed). Besides that layer's hidden states it returns the [CLS]->patch
attention row of the same layer, computed from the [CLS] query alone (no N×N matrix is kept).

Shapes: B batch, C channels, P patch size, Np patches, N = Np + 1 tokens, D hidden, H heads, Dh head dim.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.models.activations import activation
from jaxprune.models.attention import attend
from jaxprune.models.layers import linear
from jaxprune.models.llava.config import VisionConfig


class VisionEmbeddings(nnx.Module):

  def __init__(self, cfg: VisionConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
    p, d = cfg.patch_size, cfg.hidden_size
    self.patch_embedding = nnx.Conv(cfg.num_channels, d, (p, p), strides=(p, p), padding="VALID", use_bias=False,
                                    dtype=dtype, param_dtype=dtype, rngs=rngs)
    self.class_embedding = nnx.Param(jax.random.normal(rngs.params(), (d,), dtype))
    self.position_embedding = nnx.Embed(cfg.num_patches + 1, d, dtype=dtype, param_dtype=dtype, rngs=rngs)

  def __call__(self, pixels: jax.Array) -> jax.Array:
    """pixels [B, C, H, W] (HF processor layout) -> [B, N, D]."""
    patches = self.patch_embedding(pixels.transpose(0, 2, 3, 1).astype(self.patch_embedding.dtype))  # [B, h, w, D]
    b, d = patches.shape[0], patches.shape[-1]
    patches = patches.reshape(b, -1, d)  # [B, Np, D], row-major over the grid
    cls = jnp.broadcast_to(self.class_embedding[...].astype(patches.dtype), (b, 1, d))
    x = jnp.concatenate([cls, patches], axis=1)
    return x + self.position_embedding.embedding[...][None].astype(x.dtype)


class VisionAttention(nnx.Module):

  def __init__(self, cfg: VisionConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
    d = cfg.hidden_size
    self.q_proj, self.k_proj = linear(d, d, dtype, rngs), linear(d, d, dtype, rngs)
    self.v_proj, self.out_proj = linear(d, d, dtype, rngs), linear(d, d, dtype, rngs, f32_out=True)
    self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x [B, N, D] -> (output [B, N, D], [CLS]->all attention probabilities [B, H, N], keys [B, N, Dh]).

    The keys come back averaged over heads: VisionZip measures token similarity with them.
    """
    b, n, d = x.shape
    split = lambda t: t.reshape(b, n, self.num_heads, self.head_dim)
    q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
    out = attend(q, k, v).reshape(b, n, d)
    cls_logits = jnp.einsum("bhd,bnhd->bhn", q[:, 0].astype(jnp.float32), k.astype(jnp.float32))
    cls_probs = jax.nn.softmax(cls_logits * self.head_dim**-0.5, axis=-1)  # [B, H, N]
    return self.out_proj(out).astype(x.dtype), cls_probs, jnp.mean(k, axis=2)


class VisionLayer(nnx.Module):

  def __init__(self, cfg: VisionConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
    d, eps = cfg.hidden_size, cfg.layer_norm_eps
    self.layer_norm1 = nnx.LayerNorm(d, epsilon=eps, dtype=dtype, param_dtype=dtype, rngs=rngs)
    self.self_attn = VisionAttention(cfg, dtype=dtype, rngs=rngs)
    self.layer_norm2 = nnx.LayerNorm(d, epsilon=eps, dtype=dtype, param_dtype=dtype, rngs=rngs)
    self.fc1 = linear(d, cfg.intermediate_size, dtype, rngs)
    self.fc2 = linear(cfg.intermediate_size, d, dtype, rngs, f32_out=True)
    self.act = activation(cfg.hidden_act)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    attended, cls_probs, keys = self.self_attn(self.layer_norm1(x))
    x = x + attended
    x = x + self.fc2(self.act(self.fc1(self.layer_norm2(x)))).astype(x.dtype)
    return x, cls_probs, keys


class VisionTower(nnx.Module):
  """CLIP vision transformer truncated after `num_layers_used` encoder layers."""

  def __init__(self, cfg: VisionConfig, num_layers_used: int, *, dtype: jnp.dtype = jnp.bfloat16,
               rngs: nnx.Rngs):
    self.config = cfg
    self.embeddings = VisionEmbeddings(cfg, dtype=dtype, rngs=rngs)
    self.pre_layrnorm = nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps, dtype=dtype,
                                      param_dtype=dtype, rngs=rngs)
    self.layers = nnx.List([VisionLayer(cfg, dtype=dtype, rngs=rngs) for _ in range(num_layers_used)])

  def __call__(self, pixels: jax.Array, feature_layers: tuple[int, ...] | None = None):
    """pixels [B, C, H, W] -> (hidden states [B, N, D] of each of `feature_layers` (HF hidden_states indexes;
    default: the last built layer), concatenated on D; the deepest of them's [CLS]->patch attention [B, H, Np]
    and head-averaged keys [B, N, Dh]).

    The last two are None when that layer is the embeddings (hidden_states[0]: no encoder layer ran).
    """
    feature_layers = feature_layers or (len(self.layers),)
    deepest = max(feature_layers)
    x = self.pre_layrnorm(self.embeddings(pixels))
    states = {0: x}
    cls_probs = keys = None
    for i, layer in enumerate(self.layers[:deepest]):
      x, probs, k = layer(x)
      states[i + 1] = x
      if i + 1 == deepest:
        cls_probs, keys = probs[:, :, 1:], k
    hidden = jnp.concatenate([states[layer] for layer in feature_layers], axis=-1)
    return hidden, cls_probs, keys
