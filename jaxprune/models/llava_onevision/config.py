"""LLaVA-OneVision configs: a SigLIP tower, AnyRes tiling and a Qwen2 decoder, read from HF `config.json` dicts."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from jaxprune.models.config import DynamicResolution, TextConfig, check_token_ids, get_first, key_of
from jaxprune.models.siglip import SiglipVisionConfig


@dataclasses.dataclass(frozen=True)
class OnevisionConfig(DynamicResolution):
  """SigLIP crops -> 2-layer projector -> unpad + image newlines -> tokens at `<image>` ids -> Qwen2 decoder."""

  text: TextConfig
  vision: SiglipVisionConfig
  image_token_id: int = 151646
  video_token_id: int = 151647
  feature_layers: tuple[int, ...] = (-1,)  # HF hidden_states indexes, concatenated on the feature axis
  projector_hidden_act: str = "gelu"
  projector_bias: bool = True
  # (height, width) in pixels of every crop layout AnyRes may pick
  image_grid_pinpoints: tuple[tuple[int, int], ...] = ((384, 384),)
  max_num_patches: int = 9  # "anyres_max_9": the unpadded crop grid is shrunk to about 9 crops' tokens

  @property
  def vision_signals(self) -> frozenset[str]:
    return frozenset({"importance", "keys", "grid"})

  @property
  def vision_layers_used(self) -> int:
    """Encoder layers the selected feature layers need (layers past the deepest one are never run)."""
    return max(self.vision.layer_index(i) for i in self.feature_layers)

  def vision_flops(self, num_visual: int | None = None) -> int:
    """Matmul FLOPs of tower + projector for an image giving `num_visual` LLM tokens (default: a square image on
    one crop, 2 * 729 + 27 tokens at 384 px). A token count does not say which crop layout made it, so the crops
    are estimated as ceil(tokens beyond the base view / (Np + S/p)), a crop's tokens plus its rows' newlines:
    exact for one-crop-wide layouts, within one crop for wider ones, when nothing is letterboxed or shrunk; a
    letterboxed or shrunk image runs more crops than counted (the bilinear shrink itself is free)."""
    v, d = self.vision, self.text.hidden_size
    n = v.num_patches
    crops = estimated_crops(2 * n + v.grid[0] if num_visual is None else num_visual, n, v.grid[0])
    projector = 2 * n * (v.hidden_size * len(self.feature_layers) * d + d * d)
    return crops * (v.flops(self.vision_layers_used) + projector)

  @classmethod
  def from_hf(cls, d: Mapping[str, Any]) -> OnevisionConfig:
    if "vision_config" not in d or "text_config" not in d:
      raise ValueError("config.json: no vision_config/text_config (is this a LLaVA-OneVision checkpoint?)")
    vision_dict = d["vision_config"]
    if vision_dict.get("model_type", "siglip_vision_model") != "siglip_vision_model":
      raise ValueError(f"config.json: vision_config.model_type {vision_dict.get('model_type')!r} is not supported "
                       f"(LLaVA-OneVision uses siglip_vision_model)")
    strategy = d.get("vision_feature_select_strategy", "full")
    if strategy != "full":
      raise ValueError(f"config.json: vision_feature_select_strategy {strategy!r} is not supported (SigLIP has no "
                       f"[CLS] to drop; LLaVA-OneVision uses 'full')")
    aspect = d.get("vision_aspect_ratio", "anyres_max_9")
    if not (aspect.startswith("anyres_max_") and aspect[len("anyres_max_"):].isdigit()):
      raise ValueError(f"config.json: vision_aspect_ratio {aspect!r} is not supported (anyres_max_N)")
    text_dict = dict(d["text_config"])
    text = TextConfig.from_hf(text_dict)
    # Qwen2 always has q/k/v biases (no `attention_bias` key); the tie flag may sit at the top level
    tie = d.get("tie_word_embeddings", text_dict.get("tie_word_embeddings", False))
    text = dataclasses.replace(text, attention_bias=True, tie_word_embeddings=bool(tie))
    layers = d.get("vision_feature_layer", -1)
    vision = SiglipVisionConfig.from_hf(vision_dict)
    image_key, video_key = key_of(d, "image_token_id", "image_token_index"), key_of(d, "video_token_id",
                                                                                  "video_token_index")
    image_id = get_first(d, "image_token_id", "image_token_index", default=151646)
    video_id = get_first(d, "video_token_id", "video_token_index", default=151647)
    check_token_ids({image_key: image_id, video_key: video_id}, text)
    cfg = cls(
        text=text,
        vision=vision,
        image_token_id=image_id,
        video_token_id=video_id,
        feature_layers=(layers,) if isinstance(layers, int) else tuple(layers),
        projector_hidden_act=d.get("projector_hidden_act", "gelu"),
        projector_bias=bool(d.get("multimodal_projector_bias", True)),
        image_grid_pinpoints=tuple(tuple(int(x) for x in p) for p in (d.get("image_grid_pinpoints") or
                                                                       [[vision.image_size] * 2])),
        max_num_patches=int(aspect[len("anyres_max_"):]),
    )
    cfg.vision_layers_used  # noqa: B018 (validates the feature layers against the tower's depth)
    return cfg


def estimated_crops(num_visual: int, per_crop: int, side: int) -> int:
  """Crops (the base view included) behind `num_visual` AnyRes tokens of `per_crop` patches on a `side`-wide grid:
  ceil(tokens beyond the base view / (a crop's tokens + its rows' newlines)), at least one beside the base view
  (LLaVA-NeXT's estimate too)."""
  return 1 + max(1, math.ceil(max(num_visual - per_crop, 0) / (per_crop + side)))


def _pinpoints() -> list[list[int]]:
  return [[h, w] for h in range(384, 2305, 384) for w in range(384, 2305, 384)]


_TOWER = dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=26,
              num_attention_heads=16, image_size=384, patch_size=14, num_channels=3, layer_norm_eps=1e-6,
              hidden_act="gelu_pytorch_tanh", vision_use_head=False)
_QWEN2 = dict(model_type="qwen2", rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=32768,
              bos_token_id=151643, eos_token_id=151645, hidden_act="silu")
_TOP = dict(architectures=["LlavaOnevisionForConditionalGeneration"], model_type="llava_onevision",
            image_token_index=151646, video_token_index=151647, vision_feature_layer=-1,
            vision_feature_select_strategy="full", projector_hidden_act="gelu", multimodal_projector_bias=True,
            vision_aspect_ratio="anyres_max_9", image_grid_pinpoints=_pinpoints())
# config.json shapes of the released checkpoints, for abstract planning and benchmarks without weights
HUB_CONFIGS: dict[str, dict] = {
    "llava-hf/llava-onevision-qwen2-0.5b-ov-hf": dict(
        _TOP, tie_word_embeddings=True, vision_config=_TOWER,
        text_config=dict(_QWEN2, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=152000,
                         tie_word_embeddings=True)),
    "llava-hf/llava-onevision-qwen2-7b-ov-hf": dict(
        _TOP, tie_word_embeddings=False, vision_config=_TOWER,
        text_config=dict(_QWEN2, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4, vocab_size=152128,
                         tie_word_embeddings=False)),
}
SHAPES: dict[str, OnevisionConfig] = {
    "llava-onevision-0.5b": OnevisionConfig.from_hf(HUB_CONFIGS["llava-hf/llava-onevision-qwen2-0.5b-ov-hf"]),
    "llava-onevision-7b": OnevisionConfig.from_hf(HUB_CONFIGS["llava-hf/llava-onevision-qwen2-7b-ov-hf"]),
}
