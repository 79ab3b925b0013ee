"""LLaVA-NeXT configs: LLaVA-1.5's CLIP tower, projector and decoder per crop, plus AnyRes tiling, read from HF
`config.json` dicts (`LlavaNextForConditionalGeneration`, llava-hf/llava-v1.6-*)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

from jaxprune.models import llava
from jaxprune.models.config import DynamicResolution, TextConfig, ViTConfig
from jaxprune.models.llava_onevision.config import estimated_crops


@dataclasses.dataclass(frozen=True)
class LlavaNextConfig(DynamicResolution):
  """CLIP over every crop -> 2-layer projector -> unpad + image newlines -> tokens at `<image>` ids -> decoder.

  `clip` is the LLaVA-1.5 config (the `llava` family's, read from the same config.json) that one crop runs through:
  its tower, feature layers, projector, decoder and image token. LLaVA-NeXT adds the crop layouts.
  """

  clip: Any  # the llava family's config: text, vision, image_token_id, feature layers, projector
  # (height, width) in pixels of every crop layout AnyRes may pick
  image_grid_pinpoints: tuple[tuple[int, int], ...] = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))

  # What LLaVA-OneVision's AnyRes host logic reads besides the grid (`llava_onevision.host`): LLaVA-NeXT never
  # shrinks the unpadded crop grid (no anyres_max), and tiles every image of a multi-image prompt.
  max_num_patches: ClassVar[float] = math.inf
  multi_image_base_only: ClassVar[bool] = False

  # ---- the crop model (LLaVA-1.5's), as the shared modules read it

  @property
  def text(self) -> TextConfig:
    return self.clip.text

  @property
  def vision(self) -> ViTConfig:
    return self.clip.vision

  @property
  def image_token_id(self) -> int:
    return self.clip.image_token_id

  @property
  def feature_layers(self) -> tuple[int, ...]:
    return self.clip.feature_layers

  @property
  def vision_layers_used(self) -> int:
    return self.clip.vision_layers_used

  @property
  def projector_hidden_act(self) -> str:
    return self.clip.projector_hidden_act

  @property
  def projector_bias(self) -> bool:
    return self.clip.projector_bias

  # ---- what pruning, cost and eval read (models/base.py: VLMConfig)

  @property
  def vision_signals(self) -> frozenset[str]:
    """[CLS] attention and keys when the deepest feature layer is an encoder layer; every slot sits on a view's
    grid."""
    return frozenset(({"importance", "keys"} if self.vision_layers_used > 0 else set()) | {"grid"})

  def vision_flops(self, num_visual: int | None = None) -> int:
    """Matmul FLOPs of tower + projector (LLaVA-1.5's per crop: Np + 1 tokens through the tower, Np through the
    projector) for an image giving `num_visual` LLM tokens; default: a large square image (its best square
    layout). Crops are estimated as OneVision does: ceil(tokens beyond the base view / (Np + S/p)), exact for
    one-crop-wide layouts when nothing is letterboxed."""
    n, side = self.vision.num_patches, self.vision.grid[0]
    if num_visual is None:
      s = self.vision.image_size
      h, w = min(self.image_grid_pinpoints, key=lambda p: (-min(p), p[0] * p[1]))  # a square image's layout
      crops = 1 + (h // s) * (w // s)
    else:
      crops = estimated_crops(num_visual, n, side)
    return crops * self.clip.vision_flops()

  @classmethod
  def from_hf(cls, d: Mapping[str, Any]) -> LlavaNextConfig:
    if "vision_config" not in d or "text_config" not in d:
      raise ValueError("config.json: no vision_config/text_config (is this a LLaVA-NeXT checkpoint?)")
    tower = d["vision_config"].get("model_type", "clip_vision_model")
    if tower != "clip_vision_model":
      raise ValueError(f"config.json: vision_config.model_type {tower!r} is not supported (LLaVA-NeXT uses "
                       f"clip_vision_model)")
    strategy = d.get("vision_feature_select_strategy", "default")
    if strategy != "default":
      raise ValueError(f"config.json: vision_feature_select_strategy {strategy!r} is not supported (LLaVA-NeXT "
                       f"drops CLIP's [CLS]: 'default'; with it the crops' tokens do not tile the crop grid)")
    window, positions = d["text_config"].get("sliding_window"), d["text_config"].get("max_position_embeddings")
    if window is not None and (positions is None or window < positions):  # a window that could take effect
      raise ValueError(f"config.json: text_config.sliding_window={window} is not supported (jaxprune's decoder "
                       f"for LLaVA-NeXT attends to every earlier token; released checkpoints set null)")
    pinpoints = d.get("image_grid_pinpoints") or [list(p) for p in cls.image_grid_pinpoints]
    s = d["vision_config"]["image_size"]
    if any(len(p) != 2 or p[0] % s or p[1] % s or min(p) <= 0 for p in pinpoints):
      raise ValueError(f"config.json: image_grid_pinpoints {pinpoints!r}: every entry must be (height, width) "
                       f"multiples of the tower's image_size {s}")
    return cls(clip=llava.FAMILY.config_from_hf(d),
               image_grid_pinpoints=tuple(tuple(int(x) for x in p) for p in pinpoints))


_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
_CLIP_L_336 = dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                   num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768, layer_norm_eps=1e-5,
                   hidden_act="quick_gelu")
_TOP = dict(architectures=["LlavaNextForConditionalGeneration"], model_type="llava_next", image_token_index=32000,
            vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
            image_grid_pinpoints=_PINPOINTS, tie_word_embeddings=False, vision_config=_CLIP_L_336)
# config.json shapes of the released checkpoints, for abstract planning and benchmarks without weights
HUB_CONFIGS: dict[str, dict] = {
    "llava-hf/llava-v1.6-vicuna-7b-hf": dict(
        _TOP, text_config=dict(model_type="llama", vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                               num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                               rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=4096, bos_token_id=1,
                               eos_token_id=2, pad_token_id=0)),
    "llava-hf/llava-v1.6-mistral-7b-hf": dict(
        _TOP, text_config=dict(model_type="mistral", vocab_size=32064, hidden_size=4096, intermediate_size=14336,
                               num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                               rms_norm_eps=1e-5, rope_theta=1000000.0, max_position_embeddings=32768,
                               bos_token_id=1, eos_token_id=2, sliding_window=None)),
}

# registry names -> hub ids (downloaded only when online)
PRESETS = {"llava-next-7b": "llava-hf/llava-v1.6-vicuna-7b-hf",
           "llava-next-mistral-7b": "llava-hf/llava-v1.6-mistral-7b-hf"}
SHAPES: dict[str, LlavaNextConfig] = {name: LlavaNextConfig.from_hf(HUB_CONFIGS[hub]) for name, hub in PRESETS.items()}
