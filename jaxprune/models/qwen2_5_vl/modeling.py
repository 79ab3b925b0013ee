"""Qwen2.5-VL in Flax NNX: vision tower (window attention, 2-D RoPE, 2x2 merger) -> Qwen2 decoder with M-RoPE.

Merged visual tokens replace the embeddings at the `<|image_pad|>` placeholders in prompt order (the host expanded
each image's one placeholder into its merged-token count and padded visual slots, see `host.py`). The decoder is
the shared Llama-family `LlamaModel` (Qwen2 = Llama + q/k/v bias) with 3-D positions; prefill/decode with prune
points is the shared loop in `jaxprune.core.decoding`.

Shapes: B batch, L sequence, N visual slots, M merged tokens of the batch, D text hidden, Dh tower head dim.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from jaxprune.core.tokens import ModelInputs, Tokens, VisionSignals, VisualLayout
from jaxprune.models.base import embed_inputs
from jaxprune.models.llama import LlamaModel
from jaxprune.models.qwen2_5_vl.config import Qwen25VLConfig
from jaxprune.models.qwen2_5_vl.vision import TowerOutputs, VisionPatches, VisionTower


class Qwen25VL(nnx.Module):

  def __init__(self, cfg: Qwen25VLConfig, *, dtype: jnp.dtype = jnp.bfloat16, rngs: nnx.Rngs):
    if cfg.vision.out_hidden_size != cfg.text.hidden_size:
      raise ValueError(f"config.json: vision_config.out_hidden_size={cfg.vision.out_hidden_size} differs from the "
                       f"decoder's hidden_size={cfg.text.hidden_size}")
    self.config = cfg
    self.vision_tower = VisionTower(cfg.vision, dtype=dtype, rngs=rngs)
    self.language_model = LlamaModel(cfg.text, dtype=dtype, rngs=rngs)

  def encode_images(self, pixels: VisionPatches, layout: VisualLayout) -> VisionSignals:
    """The batch's patches -> per visual slot: features [B, N, D], importance [B, N], keys [B, N, Dh]."""
    tower: TowerOutputs = self.vision_tower(pixels)
    slot = pixels.slot_token  # [B, N] merged-token index per slot
    valid = layout.valid  # [B, N]
    features = jnp.where(valid[..., None], tower.features[slot], 0)  # [B, N, D]
    importance = jnp.where(valid, tower.importance[slot], 0.0)  # [B, N]
    keys = jnp.where(valid[..., None], tower.keys[slot], 0.0)  # [B, N, Dh]
    return VisionSignals(features=features, layout=layout, importance=importance, keys=keys)

  def input_tokens(self, inputs: ModelInputs) -> tuple[Tokens, VisionSignals | None]:
    """A padded batch -> decoder input Tokens (features at the image placeholders, 3-D positions) and the
    vision-side signals (None for a text-only batch)."""
    positions, valid = inputs.positions, jnp.asarray(inputs.valid)
    if positions is None and inputs.pixels is not None:
      raise ValueError("Qwen2.5-VL inputs with images need their M-RoPE positions (build them with host.pack_batch)")
    if positions is None:  # text only: every rope axis counts the valid tokens
      positions = jnp.broadcast_to(jnp.maximum(jnp.cumsum(valid, axis=1) - 1, 0)[..., None], valid.shape + (3,))
    return embed_inputs(self, inputs, positions)  # host.pack_batch refuses image tokens without images
