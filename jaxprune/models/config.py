"""Model configs: frozen dataclasses read from Hugging Face `config.json` dicts.

Frozen so they hash and can be static arguments of `jax.jit`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


def _get(d: Mapping[str, Any], *names: str, default: Any = None) -> Any:
  for name in names:
    if d.get(name) is not None:
      return d[name]
  return default


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """A Llama-family decoder (Llama, SmolLM2, Vicuna, Mistral-style GQA; Qwen2 via `attention_bias`)."""

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  # Hashable form of HF's rope_scaling dict: (("rope_type", "llama3"), ("factor", 8.0), ...).
  rope_scaling: tuple[tuple[str, Any], ...] | None = None
  max_position_embeddings: int = 4096
  tie_word_embeddings: bool = False
  attention_bias: bool = False
  mlp_bias: bool = False
  bos_token_id: int | None = None
  eos_token_id: int | tuple[int, ...] | None = None
  pad_token_id: int | None = None

  @classmethod
  def from_hf(cls, d: Mapping[str, Any]) -> "TextConfig":
    hidden = d["hidden_size"]
    heads = d["num_attention_heads"]
    scaling = d.get("rope_scaling") or d.get("rope_parameters")
    theta = _get(d, "rope_theta", default=None)
    if theta is None and isinstance(scaling, Mapping):
      theta = scaling.get("rope_theta")
    if isinstance(scaling, Mapping):
      scaling = {k: v for k, v in scaling.items() if k != "rope_theta"}
      rope_type = scaling.get("rope_type", scaling.get("type", "default"))
      scaling = None if rope_type == "default" else tuple(sorted(
          (k, tuple(v) if isinstance(v, list) else v) for k, v in scaling.items()))
    eos = d.get("eos_token_id")
    return cls(
        vocab_size=d["vocab_size"],
        hidden_size=hidden,
        intermediate_size=d["intermediate_size"],
        num_layers=d["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=_get(d, "num_key_value_heads", default=heads),
        head_dim=_get(d, "head_dim", default=hidden // heads),
        rms_norm_eps=_get(d, "rms_norm_eps", default=1e-6),
        rope_theta=float(theta if theta is not None else 10000.0),
        rope_scaling=scaling,
        max_position_embeddings=_get(d, "max_position_embeddings", default=4096),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        attention_bias=bool(d.get("attention_bias", False)),
        mlp_bias=bool(d.get("mlp_bias", False)),
        bos_token_id=d.get("bos_token_id"),
        eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        pad_token_id=d.get("pad_token_id"),
    )


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  """A CLIP ViT vision tower (pre-LN, [CLS] token, learned absolute positions)."""

  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  image_size: int
  patch_size: int
  num_channels: int = 3
  layer_norm_eps: float = 1e-5
  hidden_act: str = "quick_gelu"

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @classmethod
  def from_hf(cls, d: Mapping[str, Any]) -> "VisionConfig":
    return cls(
        hidden_size=d["hidden_size"],
        intermediate_size=d["intermediate_size"],
        num_layers=d["num_hidden_layers"],
        num_heads=d["num_attention_heads"],
        image_size=d["image_size"],
        patch_size=d["patch_size"],
        num_channels=d.get("num_channels", 3),
        layer_norm_eps=d.get("layer_norm_eps", 1e-5),
        hidden_act=d.get("hidden_act", "quick_gelu"),
    )


@dataclasses.dataclass(frozen=True)
class LlavaConfig:
  """LLaVA-1.5: CLIP tower -> 2-layer projector -> Llama decoder, features merged at <image> tokens."""

  text: TextConfig
  vision: VisionConfig
  image_token_id: int
  vision_feature_layer: int = -2  # index into HF's hidden_states tuple (0 = embeddings)
  vision_feature_select_strategy: str = "default"  # "default" drops [CLS], "full" keeps it
  projector_hidden_act: str = "gelu"
  projector_bias: bool = True

  @property
  def vision_layers_used(self) -> int:
    """How many encoder layers run: HF hidden_states[i] is the output of layer i-1."""
    n = self.vision.num_layers
    layer = self.vision_feature_layer
    used = layer if layer >= 0 else n + 1 + layer
    if not 0 <= used <= n:
      raise ValueError(f"vision_feature_layer={layer} is outside [-{n + 1}, {n}]")
    return used

  @property
  def num_image_tokens(self) -> int:
    """Visual tokens one image contributes to the LLM sequence (Nv)."""
    extra = 1 if self.vision_feature_select_strategy == "full" else 0
    return self.vision.num_patches + extra

  @classmethod
  def from_hf(cls, d: Mapping[str, Any]) -> "LlavaConfig":
    layer = d.get("vision_feature_layer", -2)
    if not isinstance(layer, int):
      raise ValueError(f"config.json: vision_feature_layer={layer!r}: only a single int layer is supported")
    text = TextConfig.from_hf(d["text_config"])
    # LLaVA keeps the tie flag at the top level; it decides whether lm_head is its own weight.
    text = dataclasses.replace(text, tie_word_embeddings=bool(d.get("tie_word_embeddings", text.tie_word_embeddings)))
    return cls(
        text=text,
        vision=VisionConfig.from_hf(d["vision_config"]),
        image_token_id=_get(d, "image_token_index", "image_token_id", default=32000),
        vision_feature_layer=layer,
        vision_feature_select_strategy=d.get("vision_feature_select_strategy", "default"),
        projector_hidden_act=d.get("projector_hidden_act", "gelu"),
        projector_bias=bool(d.get("multimodal_projector_bias", True)),
    )
