"""LLaVA-OneVision in Flax NNX: SigLIP tower over every crop -> 2-layer GELU projector -> AnyRes packing (base view,
unpadded crops, image newlines) -> tokens at the `<image>` placeholders -> Qwen2 decoder (1-D RoPE).

The host (`host.py`) turned each image into crops plus a per-slot recipe (taps into the crops' projector outputs,
or the newline vector), so under jit packing is one gather: any image size inside the buckets reuses one program.
Decoder, prefill and cached decode are the shared `LlamaModel` and `jaxprune.core.decoding` (Qwen2 = Llama with
q/k/v biases).

Shapes: B batch, L sequence, N visual slots, C crops, Np tokens per crop, Dv tower hidden (times feature layers),
D text hidden, Dh tower head dim.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.core.tokens import ModelInputs, Tokens, VisionSignals, VisualLayout
from jaxprune.models.base import embed_inputs
from jaxprune.models.layers import MultimodalProjector
from jaxprune.models.llama import LlamaModel
from jaxprune.models.llava_onevision.config import OnevisionConfig
from jaxprune.models.siglip import SiglipVisionTower


@flax.struct.dataclass
class OnevisionPixels:
  """A batch's images as the model takes them (the `pixels` of a LLaVA-OneVision `ModelInputs`)."""

  crops: jax.Array  # [C, 3, S, S] float32 every image's crops (base view first), padded with zero crops
  source: jax.Array  # [B, N, TAPS] int32 index into the batch's flattened [C * Np] projector outputs
  weight: jax.Array  # [B, N, TAPS] float32 tap weights (0 at unused taps, newlines and padded slots)
  newline: jax.Array  # [B, N] bool slots that hold the learned image_newline vector


Projector = MultimodalProjector  # llava-hf's multi_modal_projector (the weight map's name)


def _taps(table: jax.Array, source: jax.Array, weight: jax.Array) -> jax.Array:
  """table [M, ...] rows combined per slot: sum_k weight[b, n, k] * table[source[b, n, k]] -> [B, N, ...].
  A one-tap slot (weight 1, the rest 0) returns its row exactly."""
  total = jnp.zeros(source.shape[:2] + table.shape[1:], jnp.float32)
  for k in range(source.shape[2]):  # one [B, N, ...] gather at a time, never [B, N, TAPS, D]
    w = weight[:, :, k].reshape(weight.shape[:2] + (1,) * (table.ndim - 1))
    total = total + table[source[:, :, k]].astype(jnp.float32) * w
  return total.astype(table.dtype)


def slot_signals(pixels: OnevisionPixels, layout: VisualLayout, features: jax.Array, newline_vector: jax.Array,
                 importance: jax.Array | None = None, keys: jax.Array | None = None) -> VisionSignals:
  """AnyRes per-crop tables -> per visual slot (LLaVA-OneVision and LLaVA-NeXT): features [C, Np, D] (and the
  tower's importance [C, Np], keys [C, Np, Dh], when it gives them) gathered through each slot's taps. Newline
  slots take the learned newline vector, importance 0 (no tower attention reaches it, so it ranks below every
  patch) and zero keys; padded slots are zero. A shrunk (interpolated) slot mixes its taps' signals with the same
  weights as its features."""
  flat = lambda x: x.reshape((-1,) + x.shape[2:])  # [C * Np, ...]
  gather = lambda x: _taps(flat(x), pixels.source, pixels.weight)  # [B, N, ...]
  newline, valid = pixels.newline, layout.valid  # [B, N]
  real = valid & ~newline
  out = jnp.where(newline[..., None], newline_vector.astype(features.dtype), gather(features))
  out = jnp.where(valid[..., None], out, 0)
  importance = None if importance is None else jnp.where(real, gather(importance), 0.0)
  keys = None if keys is None else jnp.where(real[..., None], gather(keys), 0.0)
  return VisionSignals(features=out, layout=layout, importance=importance, keys=keys)


class LlavaOnevision(nnx.Module):

  def __init__(self, cfg: OnevisionConfig, *, dtype: jnp.dtype = jnp.bfloat16, rngs: nnx.Rngs):
    self.config = cfg
    self.vision_tower = SiglipVisionTower(cfg.vision, cfg.vision_layers_used, dtype=dtype, rngs=rngs)
    self.projector = Projector(cfg, dtype=dtype, rngs=rngs)
    self.image_newline = nnx.Param(jnp.zeros((cfg.text.hidden_size,), dtype))
    self.language_model = LlamaModel(cfg.text, dtype=dtype, rngs=rngs)

  def encode_images(self, pixels: OnevisionPixels, layout: VisualLayout) -> VisionSignals:
    """The batch's crops -> per visual slot: features [B, N, D], importance [B, N] (attention each patch receives
    in the deepest tower layer run), keys [B, N, Dh]; newline and shrunk slots as `slot_signals` says."""
    tower = self.vision_tower(pixels.crops, self.config.feature_layers)
    features = self.projector(tower.hidden)  # [C, Np, D]
    return slot_signals(pixels, layout, features, self.image_newline[...], tower.importance, tower.keys)

  def input_tokens(self, inputs: ModelInputs) -> tuple[Tokens, VisionSignals | None]:
    """A padded batch -> decoder input Tokens (visual tokens at the `<image>` placeholders, 1-D positions counting
    valid tokens) and the vision-side signals (None for a text-only batch)."""
    return embed_inputs(self, inputs)
