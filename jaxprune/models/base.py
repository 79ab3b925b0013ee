"""What pruning, generation, eval and cost need from a model family — the contract a new family implements.

A family is a folder `models/<family>/` (config, modeling, weights, host-side inputs) whose `FAMILY` carries its
presets and shapes, plus its folder's name in `models/registry.py`'s `FAMILY_PACKAGES`. Nothing outside the
folder names the family's classes: pruning reads `VLMConfig`, generation and eval call `VLM.input_tokens` (most
families: `embed_inputs`), the family's `Host`, and the shared decoder loop in `jaxprune.core.decoding`.

Signals a family may offer to pruning methods (`VLMConfig.vision_signals`):
- "importance": a vision-side score per visual token ([CLS] attention for CLIP; attention received for towers
  without [CLS]), read by `clsattn` and `visionzip`;
- "keys": vision attention keys per token (VisionZip's similarity);
- "grid": every visual token sits on its image's 2-D token grid (`uniform`, `pool`, kept-token maps).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from jaxprune.core.tokens import ModelInputs, Tokens, VisionSignals, make_tokens
from jaxprune.models.config import TextConfig
from jaxprune.models.weights import Rule
from jaxprune.prompts import Prompt


class VLMConfig(Protocol):
  """A family's frozen config, as the model-independent code reads it."""

  text: TextConfig  # the decoder: layers, heads, norms, rope

  @property
  def num_layers(self) -> int: ...  # decoder layers

  @property
  def rope_axes(self) -> int: ...  # 1 (1-D RoPE) or 3 (M-RoPE)

  @property
  def visual_tokens_per_image(self) -> int | None: ...  # fixed count, or None when it depends on the image

  @property
  def grid(self) -> tuple[int, int] | None: ...  # one fixed token grid per image, or None

  @property
  def vision_signals(self) -> frozenset[str]: ...

  def vision_flops(self, num_visual: int) -> int: ...  # matmul FLOPs of the vision side for num_visual tokens


class VLM(Protocol):
  """A family's NNX module."""

  config: Any
  language_model: Any  # a decoder usable by jaxprune.core.decoding (norm, rope, layers, embed, logits)

  def input_tokens(self, inputs: ModelInputs) -> tuple[Tokens, VisionSignals | None]: ...  # embed_inputs

  # the vision side: pixels in the host's form -> features [B, N, D] per visual slot and the tower's signals
  def encode_images(self, pixels: Any, layout: Any) -> VisionSignals: ...


class Host(Protocol):
  """A family's host side (NumPy and the checkpoint's tokenizer/processor, before any jit), built as
  `family.host(config, tokenizer, processor)`. Pixels travel in the family's own form (an array for fixed
  resolutions, per-image grids or crops otherwise): only `join` and `batch` of the same host read them."""

  def prompt(self, question: str, with_image: bool, num_images: int = 1) -> Prompt: ...  # exact question span

  def pixels(self, images: Sequence[Any]) -> Any: ...  # one prompt's PIL images, in prompt order

  def join(self, per_prompt: Sequence[Any]) -> Any: ...  # several prompts' `pixels` -> what `batch` takes

  def batch(self, prompts: Sequence[Prompt], pixels: Any | None, *, batch_size: int, bucket: int,
            pad_id: int) -> ModelInputs: ...  # padded to `bucket` and to `batch_size` rows (static shapes)


@dataclasses.dataclass(frozen=True)
class Family:
  """How to recognise, build, load and name one family: everything the registry derives from it."""

  name: str
  architectures: tuple[str, ...]  # config.json "architectures" entries (and model_type) that select it
  config_from_hf: Callable[[Mapping[str, Any]], Any]
  module: type
  weight_map: tuple[Rule, ...]
  # targets that may be absent from the built model (encoder layers past the one read, a tied lm_head)
  optional_targets: tuple[str, ...] = ()
  is_vlm: bool = True
  host: Callable[..., Host] | None = None  # (config, tokenizer, image processor) -> Host
  presets: Mapping[str, str] = dataclasses.field(default_factory=dict)  # registry name -> hub id
  shapes: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # registry name -> config (no weights)


def language_model(model: Any) -> Any:
  """The decoder of a VLM, or the model itself when it is a plain LM."""
  return getattr(model, "language_model", model)


def kv_dtype(model: Any) -> jax.typing.DTypeLike:
  """The dtype the KV cache is stored in (the decoder's compute dtype)."""
  return language_model(model).embed_tokens.embedding[...].dtype


def embed_inputs(model: Any, inputs: ModelInputs, positions: jax.Array | None = None
                 ) -> tuple[Tokens, VisionSignals | None]:
  """Every VLM family's `input_tokens`: embed the text, run the family's `encode_images`, and put each visual
  slot's feature at its placeholder (`merge_visual_features`). Placeholders are embedded as id 0, since their id
  may lie outside the table. `positions` [B, L, R] overrides the batch's (None: make_tokens counts valid tokens)."""
  ids, valid = jnp.asarray(inputs.ids), jnp.asarray(inputs.valid)
  image = ids == model.config.image_token_id  # [B, L] real and padded visual slots
  hidden = model.language_model.embed(jnp.where(image, 0, ids))  # [B, L, D]
  positions = inputs.positions if positions is None else positions
  if inputs.pixels is None:
    return make_tokens(hidden, valid, jnp.zeros_like(image), inputs.query, positions=positions), None
  vision = model.encode_images(inputs.pixels, inputs.layout)
  return merge_visual_features(make_tokens(hidden, valid, image, inputs.query, positions=positions), vision), vision


def merge_visual_features(tokens: Tokens, vision: VisionSignals) -> Tokens:
  """Each visual token takes its slot's feature (`tokens.patch` indexes `vision.features` [B, N, D]) and image
  index; padded visual slots (image, not valid) get zeros, text keeps its embedding."""
  n = vision.features.shape[1]
  slot = jnp.clip(tokens.patch, 0, n - 1)  # [B, L] visual slot per token
  merged = jnp.take_along_axis(vision.features, slot[..., None], axis=1).astype(tokens.hidden.dtype)  # [B, L, D]
  image, real = tokens.image, tokens.image & tokens.valid
  hidden = jnp.where(real[..., None], merged, jnp.where(image[..., None], 0, tokens.hidden))
  image_id = jnp.where(image, jnp.take_along_axis(vision.layout.image, slot, axis=1), -1)  # [B, L]
  return tokens.replace(hidden=hidden, image_id=image_id.astype(jnp.int32))
