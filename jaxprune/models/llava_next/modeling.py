"""LLaVA-NeXT in Flax NNX: LLaVA-1.5's CLIP tower over every AnyRes crop -> 2-layer GELU projector -> AnyRes packing
(base view, unpadded crop grid, image newlines) -> tokens at the `<image>` placeholders -> Llama/Mistral decoder.

The host (`host.py`, LLaVA-OneVision's AnyRes logic) turned each image into crops plus a per-slot recipe (one tap
into the crops' projector outputs, or the newline vector), so under jit packing is one gather and any image size
inside the buckets reuses one compiled program. The tower keeps [CLS]; the default feature strategy drops it, so a
crop gives (S/p)^2 tokens on its grid.

Shapes: B batch, L sequence, N visual slots, C crops, Np tokens per crop, Dv tower hidden (times feature layers),
D text hidden, H tower heads, Dh tower head dim.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from jaxprune.core.tokens import ModelInputs, Tokens, VisionSignals, VisualLayout
from jaxprune.models.base import embed_inputs
from jaxprune.models.layers import MultimodalProjector
from jaxprune.models.llama import LlamaModel
from jaxprune.models.llava.clip import VisionTower
from jaxprune.models.llava_next.config import LlavaNextConfig
from jaxprune.models.llava_onevision.modeling import OnevisionPixels, slot_signals

Projector = MultimodalProjector  # llava-hf's multi_modal_projector (the weight map's name)
NextPixels = OnevisionPixels  # crops [C, 3, S, S] and each slot's taps / newline flag (the host's output)


class LlavaNext(nnx.Module):

  def __init__(self, cfg: LlavaNextConfig, *, dtype: jnp.dtype = jnp.bfloat16, rngs: nnx.Rngs):
    self.config = cfg
    self.vision_tower = VisionTower(cfg.vision, cfg.vision_layers_used, dtype=dtype, rngs=rngs)
    self.projector = Projector(cfg, dtype=dtype, rngs=rngs)
    self.image_newline = nnx.Param(jnp.zeros((cfg.text.hidden_size,), dtype))
    self.language_model = LlamaModel(cfg.text, dtype=dtype, rngs=rngs)

  def encode_images(self, pixels: NextPixels, layout: VisualLayout) -> VisionSignals:
    """The batch's crops -> per visual slot: features [B, N, D], importance [B, N] ([CLS]->patch attention of the
    deepest feature layer, summed over heads), and keys [B, N, Dh]; newline slots as OneVision's `slot_signals`
    says (no [CLS] attention reaches them, so `clsattn` and `visionzip` rank them below every patch)."""
    states, cls_attention, keys = self.vision_tower(pixels.crops, self.config.feature_layers)  # [C, Np + 1, Dv]
    features = self.projector(states[:, 1:])  # "default": [CLS] dropped, Np tokens per crop in raster order
    importance = None if cls_attention is None else jnp.sum(cls_attention.astype(jnp.float32), axis=1)  # [C, Np]
    return slot_signals(pixels, layout, features, self.image_newline[...], importance,
                        None if keys is None else keys[:, 1:])

  def input_tokens(self, inputs: ModelInputs) -> tuple[Tokens, VisionSignals | None]:
    """A padded batch -> decoder input Tokens (visual tokens at the `<image>` placeholders, 1-D positions counting
    valid tokens) and the vision-side signals (None for a text-only batch)."""
    return embed_inputs(self, inputs)


__all__ = ["LlavaNext", "NextPixels", "Projector"]
