"""Gemma 3 in Flax NNX: SigLIP tower -> average pool -> RMSNorm + matmul projector -> Gemma 3 decoder.

The tower (`jaxprune.models.siglip`) gives the post-LN states of its Np = (S/p)^2 patches; the projector
average-pools the p x p patch grid to the `mm_tokens_per_image` token grid (kernel = stride = patches per token
side), applies Gemma's (1 + w) RMSNorm and one matmul into the decoder width. The k-th `<image_soft_token>` of a
sample receives visual slot k (image k // Nv, cell k % Nv in raster order), as transformers' masked_scatter
does. A text-only batch (blind eval) passes no pixels.

Shapes: B batch, I images per sample, L sequence, Nv tokens per image, N = I * Nv slots, Np patches per image,
Dv tower hidden, D text hidden, Dh tower head dim.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.core.tokens import ModelInputs, Tokens, VisionSignals, VisualLayout
from jaxprune.models.base import embed_inputs
from jaxprune.models.gemma3.config import Gemma3Config
from jaxprune.models.gemma3.decoder import Gemma3Decoder, GemmaRMSNorm
from jaxprune.models.siglip import SiglipVisionTower


class Projector(nnx.Module):
  """transformers' Gemma3MultiModalProjector: pool, normalise, project."""

  def __init__(self, cfg: Gemma3Config, *, dtype: jnp.dtype, rngs: nnx.Rngs):
    dv, d = cfg.vision.hidden_size, cfg.text.hidden_size
    self.mm_soft_emb_norm = GemmaRMSNorm(dv, cfg.vision.layer_norm_eps, dtype=dtype)
    self.mm_input_projection = nnx.Param(jax.random.normal(rngs.params(), (dv, d), dtype) * 0.02)  # [Dv, D]
    self.kernel, self.side = cfg.pool_kernel, cfg.tokens_per_side

  def pool(self, x: jax.Array, how: str = "mean") -> jax.Array:
    """[B, Np, ...] on the patch grid (raster order) -> [B, Nv, ...] per token cell, by mean or sum."""
    b, k, s = x.shape[0], self.kernel, self.side
    blocks = x.reshape((b, s, k, s, k) + x.shape[2:])  # [B, row, dy, col, dx, ...]
    reduce = jnp.mean if how == "mean" else jnp.sum
    return reduce(blocks, axis=(2, 4)).reshape((b, s * s) + x.shape[2:])

  def __call__(self, states: jax.Array) -> jax.Array:
    """states [B, Np, Dv] -> [B, Nv, D]."""
    pooled = self.pool(states)  # [B, Nv, Dv]
    return jnp.matmul(self.mm_soft_emb_norm(pooled), self.mm_input_projection[...]).astype(states.dtype)


class Gemma3(nnx.Module):

  def __init__(self, cfg: Gemma3Config, *, dtype: jnp.dtype = jnp.bfloat16, rngs: nnx.Rngs):
    self.config = cfg
    self.vision_tower = SiglipVisionTower(cfg.vision, dtype=dtype, rngs=rngs)
    self.projector = Projector(cfg, dtype=dtype, rngs=rngs)
    self.language_model = Gemma3Decoder(cfg.text, dtype=dtype, rngs=rngs)

  def encode_images(self, pixels: jax.Array, layout: VisualLayout | None = None) -> VisionSignals:
    """pixels [B, C, S, S] (one image per sample) or [B, I, C, S, S] -> visual tokens per slot and the
    vision-side signals, slots image-major, raster order within an image.

    Importance of a token = the attention its patches receive in the tower's last layer, summed over the
    pooled block (a share of attention mass, as the features are a mean of those patches); keys are averaged
    over the block."""
    if pixels.ndim == 4:
      pixels = pixels[:, None]
    b, i = pixels.shape[:2]
    tower = self.vision_tower(pixels.reshape((b * i,) + pixels.shape[2:]))
    features = self.projector(tower.hidden)  # [B*I, Nv, D]
    importance = self.projector.pool(tower.importance, "sum")  # [B*I, Nv]
    keys = self.projector.pool(tower.keys)  # [B*I, Nv, Dh]
    nv = features.shape[1]
    per_sample = lambda x: x.reshape((b, i * nv) + x.shape[2:])  # [B, N, ...]
    if layout is None:
      layout = VisualLayout.single_grid(b, *self.config.grid, images_per_sample=i)
    return VisionSignals(features=per_sample(features), layout=layout, importance=per_sample(importance),
                         keys=per_sample(keys), tower_states=per_sample(self.projector.pool(tower.hidden)))

  def input_tokens(self, inputs: ModelInputs) -> tuple[Tokens, VisionSignals | None]:
    """ids/valid [B, L] left-padded -> decoder input Tokens with image features at the soft tokens.

    Every sample holds mm_tokens_per_image `<image_soft_token>` ids per image, in prompt order (the processor
    expands each `<start_of_image>`); `<start_of_image>` / `<end_of_image>` are ordinary text tokens.
    """
    return embed_inputs(self, inputs)
