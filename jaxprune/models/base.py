"""What pruning, generation, eval and cost need from a model family — the contract a new family implements.

A family is a folder `models/<family>/` (config, modeling, weights, host-side inputs) plus one line in
`models/registry.py`. Nothing outside the folder names the family's classes: pruning reads `VLMConfig`,
generation and eval call `VLM.input_tokens` and the shared decoder loop in `jaxprune.core.decoding`.

Signals a family may offer to pruning methods (`VLMConfig.vision_signals`):
- "importance": a vision-side score per visual token ([CLS] attention for CLIP; attention received for towers
  without [CLS]), read by `clsattn` and `visionzip`;
- "keys": vision attention keys per token (VisionZip's similarity);
- "grid": every visual token sits on its image's 2-D token grid (`uniform`, `pool`, kept-token maps).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol

import jax

from jaxprune.core.tokens import ModelInputs, Tokens, VisionSignals
from jaxprune.models.config import TextConfig
from jaxprune.models.weights import Rule


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

  def input_tokens(self, inputs: ModelInputs) -> tuple[Tokens, VisionSignals | None]: ...


@dataclasses.dataclass(frozen=True)
class Family:
  """How to recognise, build and load one family."""

  name: str
  architectures: tuple[str, ...]  # config.json "architectures" entries (and model_type) that select it
  config_from_hf: Callable[[Mapping[str, Any]], Any]
  module: type
  weight_map: tuple[Rule, ...]
  # targets that may be absent from the built model (encoder layers past the one read, a tied lm_head)
  optional_targets: tuple[str, ...] = ()
  is_vlm: bool = True
  # host side: (config, tokenizer, image processor) -> an object with prompt(question, with_image),
  # pixels(images) (one prompt's images), join([pixels, ...]) and
  # batch(prompts, joined pixels, batch_size=, bucket=, pad_id=) -> ModelInputs
  host: Callable[..., Any] | None = None


def language_model(model: Any) -> Any:
  """The decoder of a VLM, or the model itself when it is a plain LM."""
  return getattr(model, "language_model", model)


def kv_dtype(model: Any) -> jax.typing.DTypeLike:
  """The dtype the KV cache is stored in (the decoder's compute dtype)."""
  return language_model(model).embed_tokens.embedding[...].dtype
