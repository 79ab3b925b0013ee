"""LLaVA-1.5 in Flax NNX: CLIP tower -> 2-layer GELU projector -> Llama decoder.

Image features replace the embeddings at the `<image>` placeholder positions of `input_ids` (the HF processor
expands one `<image>` into Nv placeholder tokens). One image per sample; a text-only batch (blind eval) passes
no pixels.

Shapes: B batch, L sequence, Nv visual tokens per image, Dv vision hidden, D text hidden, H vision heads.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.models.clip import VisionTower, activation
from jaxprune.models.config import LlavaConfig
from jaxprune.models.llama import LlamaModel, Tokens, make_tokens


@flax.struct.dataclass
class VisionOutputs:
  """What the vision side produced, for vision-side scorers (clsattn, visionzip) and merges."""

  features: jax.Array  # [B, Nv, D] projector outputs, the LLM's visual tokens
  tower_states: jax.Array  # [B, Nv, Dv] tower states of the selected layer (same tokens)
  cls_attention: jax.Array | None  # [B, H, Np] [CLS]->patch attention of the selected layer
  keys: jax.Array | None  # [B, Nv, Dh] that layer's attention keys, mean over heads (VisionZip similarity)


class Projector(nnx.Module):

  def __init__(self, cfg: LlavaConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
    dv, d = cfg.vision.hidden_size, cfg.text.hidden_size
    kw = dict(use_bias=cfg.projector_bias, dtype=dtype, param_dtype=dtype, rngs=rngs)
    self.linear_1 = nnx.Linear(dv, d, **kw)
    self.linear_2 = nnx.Linear(d, d, preferred_element_type=jnp.float32, **kw)  # row-parallel: see llama._linear
    self.act = activation(cfg.projector_hidden_act)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.linear_2(self.act(self.linear_1(x))).astype(x.dtype)


class Llava(nnx.Module):

  def __init__(self, cfg: LlavaConfig, *, dtype: jnp.dtype = jnp.bfloat16, rngs: nnx.Rngs):
    self.config = cfg
    self.vision_tower = VisionTower(cfg.vision, cfg.vision_layers_used, dtype=dtype, rngs=rngs)
    self.projector = Projector(cfg, dtype=dtype, rngs=rngs)
    self.language_model = LlamaModel(cfg.text, dtype=dtype, rngs=rngs)

  def encode_images(self, pixels: jax.Array) -> VisionOutputs:
    """pixels [B, C, H, W] -> visual tokens and the signals vision-side scorers read."""
    states, cls_attention, keys = self.vision_tower(pixels)  # [B, N, Dv]
    if self.config.vision_feature_select_strategy == "default":
      states, keys = states[:, 1:], (None if keys is None else keys[:, 1:])  # drop [CLS]
    return VisionOutputs(self.projector(states), states, cls_attention, keys)

  def input_tokens(self, ids: jax.Array, valid: jax.Array, pixels: jax.Array | None,
                   query: jax.Array | None = None) -> tuple[Tokens, VisionOutputs | None]:
    """ids/valid [B, L] left-padded -> decoder input Tokens with image features merged in.

    Every sample must hold exactly Nv image placeholders when pixels are given (checked on the host by
    `jaxprune.inputs`); the k-th placeholder of a sample receives that image's k-th feature.
    """
    image = (ids == self.config.image_token_id) & valid
    text_ids = jnp.where(image, 0, ids)  # placeholder ids may lie outside the embedding table
    hidden = self.language_model.embed(text_ids)  # [B, L, D]
    if pixels is None:
      return make_tokens(hidden, valid, jnp.zeros_like(image), query), None
    vision = self.encode_images(pixels)
    slot = jnp.clip(jnp.cumsum(image, axis=1) - 1, 0, vision.features.shape[1] - 1)  # [B, L]
    merged = jnp.take_along_axis(vision.features, slot[..., None], axis=1).astype(hidden.dtype)  # [B, L, D]
    hidden = jnp.where(image[..., None], merged, hidden)
    return make_tokens(hidden, valid, image, query), vision
