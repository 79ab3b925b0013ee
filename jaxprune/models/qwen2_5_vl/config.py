"""Qwen2.5-VL configs: frozen dataclasses read from Hugging Face `config.json` dicts.

Two layouts exist: transformers >= 4.52 saves the decoder under `text_config`; hub checkpoints
(Qwen/Qwen2.5-VL-3B-Instruct, -7B-Instruct) keep the decoder keys at the top level.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from jaxprune.models.config import DynamicResolution, TextConfig, check_token_ids


@dataclasses.dataclass(frozen=True)
class Qwen25VisionConfig:
  """The Qwen2.5-VL vision tower: Conv3d patches, 2-D RoPE, window attention, RMSNorm, SwiGLU, 2x2 merger."""

  depth: int
  hidden_size: int
  intermediate_size: int
  num_heads: int
  out_hidden_size: int
  patch_size: int = 14
  temporal_patch_size: int = 2
  spatial_merge_size: int = 2
  window_size: int = 112  # pixels on a side of an attention window
  fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
  in_channels: int = 3
  hidden_act: str = "silu"
  rope_theta: float = 10000.0
  tokens_per_second: int = 4

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def patch_dim(self) -> int:
    """Length of one flattened patch as the image processor emits it: C * T * p * p."""
    return self.in_channels * self.temporal_patch_size * self.patch_size ** 2

  @property
  def merge_unit(self) -> int:
    """Patches merged into one LLM token (2x2 = 4)."""
    return self.spatial_merge_size ** 2

  @property
  def window_tokens(self) -> int:
    """Side of an attention window in merged tokens (112 px / 14 px / 2 = 4)."""
    return self.window_size // self.spatial_merge_size // self.patch_size

  @classmethod
  def from_hf(cls, d: Mapping[str, Any]) -> Qwen25VisionConfig:
    rope = d.get("rope_parameters") or {}
    hidden = d.get("hidden_size", d.get("embed_dim"))
    return cls(
        depth=d["depth"],
        hidden_size=hidden,
        intermediate_size=d["intermediate_size"],
        num_heads=d["num_heads"],
        out_hidden_size=d["out_hidden_size"],
        patch_size=d.get("patch_size", 14),
        temporal_patch_size=d.get("temporal_patch_size", 2),
        spatial_merge_size=d.get("spatial_merge_size", 2),
        window_size=d.get("window_size", 112),
        fullatt_block_indexes=tuple(d.get("fullatt_block_indexes", (7, 15, 23, 31))),
        in_channels=d.get("in_channels", d.get("in_chans", 3)),
        hidden_act=d.get("hidden_act", "silu"),
        rope_theta=float(rope.get("rope_theta", 10000.0)),
        tokens_per_second=d.get("tokens_per_second", 4),
    )


@dataclasses.dataclass(frozen=True)
class Qwen25VLConfig(DynamicResolution):
  """Qwen2.5-VL: vision tower -> merged visual tokens placed at `<|image_pad|>` ids -> Qwen2 decoder (M-RoPE)."""

  ROPE_AXES: ClassVar[int] = 3  # M-RoPE: (t, row, col) position ids

  text: TextConfig
  vision: Qwen25VisionConfig
  image_token_id: int = 151655
  video_token_id: int = 151656
  vision_start_token_id: int = 151652
  vision_end_token_id: int = 151653

  @property
  def vision_signals(self) -> frozenset[str]:
    """Attention received in the tower's last block, its keys, and each token's (row, col) on its image's grid."""
    return frozenset({"importance", "keys", "grid"})

  def vision_flops(self, num_visual: int | None = None) -> int:
    """Matmul FLOPs of the tower and merger as jaxprune runs it, for `num_visual` merged tokens of one image
    (default 256: a 448 x 448 image). Window blocks attend over one window (4 * window_tokens^2 patches; partial
    windows at an image's edges are smaller, so this bounds them from above), full blocks over the image; the last
    block's q.k is computed once more for the attention-received signal."""
    v = self.vision
    tokens = 256 if num_visual is None else num_visual
    p, d, f = tokens * v.merge_unit, v.hidden_size, v.intermediate_size
    window_keys = min(p, v.merge_unit * v.window_tokens ** 2)
    dense = 2 * p * d * 4 * d + 3 * 2 * p * d * f  # qkv + proj; gate, up, down
    attention = lambda keys: 2 * 2 * p * keys * d  # q.k and probs.v over all heads
    blocks = sum(dense + attention(p if i in v.fullatt_block_indexes else window_keys) for i in range(v.depth))
    signal = 2 * p * p * d if (v.depth - 1) in v.fullatt_block_indexes else 2 * p * window_keys * d
    wide = d * v.merge_unit
    merger = 2 * tokens * wide * (wide + v.out_hidden_size)
    return 2 * p * v.patch_dim * d + blocks + signal + merger

  @classmethod
  def from_hf(cls, d: Mapping[str, Any]) -> Qwen25VLConfig:
    if "vision_config" not in d:
      raise ValueError("config.json: no vision_config (is this a Qwen2.5-VL checkpoint?)")
    text_dict = dict(d.get("text_config") or d)  # hub checkpoints keep the decoder keys at the top level
    text = TextConfig.from_hf(text_dict)
    if text.mrope_section is None:
      raise ValueError("config.json: rope_scaling/rope_parameters has no mrope_section (Qwen2.5-VL needs M-RoPE)")
    if 2 * sum(text.mrope_section) != text.head_dim:
      raise ValueError(f"config.json: mrope_section {list(text.mrope_section)} sums to {sum(text.mrope_section)}, "
                       f"not head_dim/2 = {text.head_dim // 2}")
    # Qwen2 always has q/k/v biases (its config has no `attention_bias` key); the tie flag lives at the top level.
    tie = d.get("tie_word_embeddings", text_dict.get("tie_word_embeddings", False))
    text = dataclasses.replace(text, attention_bias=True, tie_word_embeddings=bool(tie))
    ids = {key: d.get(key, default) for key, default in (
        ("image_token_id", 151655), ("video_token_id", 151656), ("vision_start_token_id", 151652),
        ("vision_end_token_id", 151653))}
    # transformers embeds the placeholders and the vision start/end tokens: each needs a row of the table
    check_token_ids(ids, text, in_vocab=("image_token_id", "vision_start_token_id", "vision_end_token_id"))
    return cls(text=text, vision=Qwen25VisionConfig.from_hf(d["vision_config"]), **ids)


_TOWER = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14, spatial_merge_size=2,
              temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31], in_chans=3,
              hidden_act="silu", tokens_per_second=2)
_IDS = dict(architectures=["Qwen2_5_VLForConditionalGeneration"], model_type="qwen2_5_vl", image_token_id=151655,
            video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653, rms_norm_eps=1e-6,
            rope_theta=1000000.0, max_position_embeddings=128000,
            rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]})
# config.json of the released checkpoints (hub layout: decoder keys at the top level), for abstract planning and
# benchmarks without weights; registry names keep the hub ids.
HUB_CONFIGS: dict[str, dict] = {
    "Qwen/Qwen2.5-VL-3B-Instruct": dict(
        _IDS, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
        num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
        vision_config=dict(_TOWER, out_hidden_size=2048)),
    "Qwen/Qwen2.5-VL-7B-Instruct": dict(
        _IDS, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False,
        vision_config=dict(_TOWER, out_hidden_size=3584)),
}
SHAPES: dict[str, Qwen25VLConfig] = {
    "qwen2.5-vl-3b": Qwen25VLConfig.from_hf(HUB_CONFIGS["Qwen/Qwen2.5-VL-3B-Instruct"]),
    "qwen2.5-vl-7b": Qwen25VLConfig.from_hf(HUB_CONFIGS["Qwen/Qwen2.5-VL-7B-Instruct"]),
}
