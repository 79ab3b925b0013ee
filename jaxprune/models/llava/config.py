"""LLaVA-1.5 configs: a CLIP ViT tower and the LLaVA wrapper, read from Hugging Face `config.json` dicts."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxprune.models.config import DecoderReadout, TextConfig, ViTConfig, check_token_ids, get_first, key_of


@dataclasses.dataclass(frozen=True)
class VisionConfig(ViTConfig):
  """A CLIP ViT vision tower (pre-LN, [CLS] token, learned absolute positions; CLIP's defaults)."""

  layer_norm_eps: float = 1e-5
  hidden_act: str = "quick_gelu"


@dataclasses.dataclass(frozen=True)
class LlavaConfig(DecoderReadout):
  """LLaVA-1.5: CLIP tower -> 2-layer projector -> Llama decoder, features merged at <image> tokens.

  `vision_feature_layer` indexes HF's hidden_states tuple (0 = embeddings); a tuple of layers concatenates their
  features along the channel axis before the projector, as transformers does for a list.
  """

  text: TextConfig
  vision: VisionConfig
  image_token_id: int
  vision_feature_layer: int | tuple[int, ...] = -2
  vision_feature_select_strategy: str = "default"  # "default" drops [CLS], "full" keeps it
  projector_hidden_act: str = "gelu"
  projector_bias: bool = True

  # ---- what pruning, cost and eval read (models/base.py: VLMConfig)

  @property
  def visual_tokens_per_image(self) -> int:
    """Visual tokens one image contributes to the LLM sequence (Nv)."""
    extra = 1 if self.vision_feature_select_strategy == "full" else 0
    return self.vision.num_patches + extra

  num_image_tokens = visual_tokens_per_image  # the name older code and notebooks use

  @property
  def grid(self) -> tuple[int, int] | None:
    """The token grid of one image, or None when [CLS] sits among the visual tokens (no grid)."""
    return self.vision.grid if self.vision_feature_select_strategy == "default" else None

  @property
  def vision_signals(self) -> frozenset[str]:
    """[CLS] attention and keys exist when the deepest selected layer is an encoder layer (not the
    embeddings); the grid when [CLS] is not among the visual tokens."""
    signals = {"importance", "keys"} if self.vision_layers_used > 0 else set()
    return frozenset(signals | ({"grid"} if self.grid else set()))

  def vision_flops(self, num_visual: int | None = None) -> int:
    """Matmul FLOPs of the tower (layers actually used) and projector for the images behind `num_visual`
    tokens (default one image): patch-embedding conv as a matmul, pre-LN layers on Np + 1 tokens ([CLS]),
    the projector on every visual token (pruning happens after it)."""
    images = 1 if num_visual is None else max(1, -(-num_visual // self.visual_tokens_per_image))
    v, dt = self.vision, self.text.hidden_size
    t, dv = v.num_patches + 1, v.hidden_size  # tokens incl. [CLS]
    patch = 2 * v.num_patches * (v.num_channels * v.patch_size ** 2) * dv
    layer = (2 * t * dv * 4 * dv  # q, k, v, o
             + 2 * (2 * t * t * dv)  # QK^T and probs @ V over all heads
             + 2 * (2 * t * dv * v.intermediate_size))  # fc1, fc2
    proj = 2 * self.visual_tokens_per_image * (dv * len(self.feature_layers) * dt + dt * dt)
    return images * (patch + self.vision_layers_used * layer + proj)

  # ---- the tower

  @property
  def feature_layers(self) -> tuple[int, ...]:
    """HF hidden_states indexes (>= 0) whose features the projector reads, in config order."""
    n = self.vision.num_layers
    layers = self.vision_feature_layer if isinstance(self.vision_feature_layer, tuple) else (
        self.vision_feature_layer,)
    used = tuple(layer if layer >= 0 else n + 1 + layer for layer in layers)
    for layer, u in zip(layers, used):
      if not 0 <= u <= n:
        raise ValueError(f"vision_feature_layer={layer} is outside [-{n + 1}, {n}]")
    return used

  @property
  def vision_layers_used(self) -> int:
    """How many encoder layers run: HF hidden_states[i] is the output of layer i-1."""
    return max(self.feature_layers)

  @classmethod
  def from_hf(cls, d: Mapping[str, Any]) -> LlavaConfig:
    layer = d.get("vision_feature_layer", -2)
    if isinstance(layer, list):
      if not layer or not all(isinstance(x, int) for x in layer):
        raise ValueError(f"config.json: vision_feature_layer={layer!r}: expected an int or a list of ints")
      layer = tuple(layer)
    elif not isinstance(layer, int):
      raise ValueError(f"config.json: vision_feature_layer={layer!r}: expected an int or a list of ints")
    text = TextConfig.from_hf(d["text_config"])
    # LLaVA keeps the tie flag at the top level; it decides whether lm_head is its own weight.
    text = dataclasses.replace(text, tie_word_embeddings=bool(d.get("tie_word_embeddings", text.tie_word_embeddings)))
    strategy = d.get("vision_feature_select_strategy", "default")
    if strategy not in ("default", "full"):
      raise ValueError(f"config.json: vision_feature_select_strategy={strategy!r}: expected 'default' or 'full'")
    image_token_id = get_first(d, "image_token_index", "image_token_id", default=32000)
    check_token_ids({key_of(d, "image_token_index", "image_token_id"): image_token_id}, text)
    return cls(
        text=text,
        vision=VisionConfig.from_hf(d["vision_config"]),
        image_token_id=image_token_id,
        vision_feature_layer=layer,
        vision_feature_select_strategy=strategy,
        projector_hidden_act=d.get("projector_hidden_act", "gelu"),
        projector_bias=bool(d.get("multimodal_projector_bias", True)),
    )


# registry names -> hub ids (downloaded only when online)
PRESETS = {"llava": "llava-hf/llava-1.5-7b-hf", "llava-7b": "llava-hf/llava-1.5-7b-hf",
           "llava-13b": "llava-hf/llava-1.5-13b-hf"}

# Architecture shapes of the released checkpoints (abstract planning and benchmarks; no weights).
SHAPES = {
    "llava-7b": LlavaConfig(
        text=TextConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32,
                        num_kv_heads=32, head_dim=128, rms_norm_eps=1e-5, rope_theta=10000.0,
                        max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=0),
        vision=VisionConfig(hidden_size=1024, intermediate_size=4096, num_layers=24, num_heads=16, image_size=336,
                            patch_size=14),
        image_token_id=32000,
    ),
}
