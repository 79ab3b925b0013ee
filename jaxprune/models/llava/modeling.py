"""LLaVA-1.5 in Flax NNX: CLIP tower -> 2-layer GELU projector -> Llama decoder.

Image features replace the embeddings at the `<image>` placeholder positions of `input_ids` (the HF processor
expands each `<image>` into Nv placeholder tokens). A prompt may hold several images: the k-th placeholder of a
sample receives visual slot k, i.e. image k // Nv, patch k % Nv, in prompt order, as transformers does. A
text-only batch (blind eval) passes no pixels.

Pruning semantics for this family: every visual token is prunable; slots follow each image's raster order on the
square patch grid (with `vision_feature_select_strategy="full"` the image's [CLS] token is slot 0 of the image
and has no grid cell, so spatial methods are refused). The vision-side signal is the [CLS]->patch attention of
the selected layer, summed over heads (FasterVLM), with [CLS] itself (when kept as a token) scoring +inf.

Shapes: B batch, I images per sample, L sequence, Nv visual tokens per image, N = I * Nv slots, Dv vision hidden,
D text hidden, H vision heads.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.core.tokens import ModelInputs, Tokens, VisionSignals, VisualLayout
from jaxprune.models.base import embed_inputs
from jaxprune.models.layers import MultimodalProjector
from jaxprune.models.llama import LlamaModel
from jaxprune.models.llava.clip import VisionTower
from jaxprune.models.llava.config import LlavaConfig

Projector = MultimodalProjector  # llava-hf's multi_modal_projector (the weight map's name)


class Llava(nnx.Module):

  def __init__(self, cfg: LlavaConfig, *, dtype: jnp.dtype = jnp.bfloat16, rngs: nnx.Rngs):
    self.config = cfg
    self.vision_tower = VisionTower(cfg.vision, cfg.vision_layers_used, dtype=dtype, rngs=rngs)
    self.projector = Projector(cfg, dtype=dtype, rngs=rngs)
    self.language_model = LlamaModel(cfg.text, dtype=dtype, rngs=rngs)

  def encode_images(self, pixels: jax.Array, layout: VisualLayout | None = None) -> VisionSignals:
    """pixels [B, C, H, W] (one image per sample) or [B, I, C, H, W] -> visual tokens per slot and the
    vision-side signals, slots in prompt order (image-major, raster order within an image)."""
    if pixels.ndim == 4:
      pixels = pixels[:, None]
    b, i = pixels.shape[:2]
    states, cls_attention, keys = self.vision_tower(pixels.reshape((b * i,) + pixels.shape[2:]),
                                                    self.config.feature_layers)  # [B*I, Np + 1, Dv']
    importance = None if cls_attention is None else jnp.sum(cls_attention.astype(jnp.float32), axis=1)  # [B*I, Np]
    if self.config.vision_feature_select_strategy == "default":
      states, keys = states[:, 1:], (None if keys is None else keys[:, 1:])  # drop [CLS]
    elif importance is not None:  # [CLS] is a visual token too: always keep it
      importance = jnp.concatenate([jnp.full_like(importance[:, :1], jnp.inf), importance], axis=1)
    nv = states.shape[1]
    per_sample = lambda x: None if x is None else x.reshape((b, i * nv) + x.shape[2:])  # [B, N, ...]
    if layout is None:
      side = self.config.grid or (1, nv)  # no grid with [CLS] among the tokens: one row, never read spatially
      layout = VisualLayout.single_grid(b, *side, images_per_sample=i)
    return VisionSignals(features=per_sample(self.projector(states)), layout=layout,
                         importance=per_sample(importance), keys=per_sample(keys), tower_states=per_sample(states))

  def input_tokens(self, inputs: ModelInputs) -> tuple[Tokens, VisionSignals | None]:
    """ids/valid [B, L] left-padded -> decoder input Tokens with image features merged in.

    Every sample holds one `<image>` placeholder per visual slot (padded slots: the placeholder id with valid
    False), checked on the host by `jaxprune.models.llava.host`.
    """
    return embed_inputs(self, inputs)
