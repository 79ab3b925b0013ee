"""Model families (architecture -> config, module, weight map) and named presets (name -> hub id)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping

from jaxprune.convert import weight_maps
from jaxprune.models.config import LlavaConfig, TextConfig, VisionConfig
from jaxprune.models.llama import LlamaModel
from jaxprune.models.llava import Llava


@dataclasses.dataclass(frozen=True)
class Family:
  name: str
  config_from_hf: Callable[[Mapping[str, Any]], Any]
  module: type
  weight_map: tuple[weight_maps.Rule, ...]


LLAVA = Family("llava", LlavaConfig.from_hf, Llava, weight_maps.LLAVA)
LLAMA = Family("llama", TextConfig.from_hf, LlamaModel, weight_maps.LLAMA)

# config.json "architectures"[0] (or "model_type" when absent) -> family
FAMILIES: dict[str, Family] = {
    "LlavaForConditionalGeneration": LLAVA,
    "llava": LLAVA,
    "LlamaForCausalLM": LLAMA,
    "llama": LLAMA,
}

# Short names accepted by `--model` and `jaxprune.load` -> Hugging Face hub id (downloaded only when online).
PRESETS: dict[str, str] = {
    "llava": "llava-hf/llava-1.5-7b-hf",
    "llava-7b": "llava-hf/llava-1.5-7b-hf",
    "llava-13b": "llava-hf/llava-1.5-13b-hf",
}


# Architecture shapes of known checkpoints, for abstract planning and benchmarks (no weights involved).
LLAVA_15_7B = LlavaConfig(
    text=TextConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32,
                    num_kv_heads=32, head_dim=128, rms_norm_eps=1e-5, rope_theta=10000.0,
                    max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=0),
    vision=VisionConfig(hidden_size=1024, intermediate_size=4096, num_layers=24, num_heads=16, image_size=336,
                        patch_size=14),
    image_token_id=32000,
)

# Checkpoints shipped in this repository's checkpoints/ folder (available from a source checkout).
CHECKPOINTS_DIR = Path(__file__).resolve().parents[2] / "checkpoints"
LOCAL_PRESETS: dict[str, Path] = {
    "llava-easyvqa": CHECKPOINTS_DIR / "llava-easyvqa",
}


def family_for(hf_config: Mapping[str, Any], source: str) -> Family:
  """The family of an HF config dict; one clear error naming the file for anything unknown."""
  archs = hf_config.get("architectures") or [hf_config.get("model_type")]
  for arch in archs:
    if arch in FAMILIES:
      return FAMILIES[arch]
  known = sorted(k for k in FAMILIES if k[0].isupper())
  raise ValueError(f"{source}: unknown architecture {archs[0]!r} (supported: {', '.join(known)})")
