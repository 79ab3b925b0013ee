"""Model families (architecture -> config, module, weight map) and named presets (name -> hub id).

Adding a family: write `models/<family>/` with a `FAMILY` and add it to `_FAMILIES` — one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from jaxprune.models import gemma3, llava, llava_onevision, qwen2_5_vl
from jaxprune.models.base import Family
from jaxprune.models.config import TextConfig
from jaxprune.models.llama import LlamaModel
from jaxprune.models.weights import LLAMA

# The shared decoder on its own: LlamaForCausalLM checkpoints (SmolLM2, Llama, Vicuna), text-only.
LLAMA_TEXT = Family("llama", ("LlamaForCausalLM", "llama"), TextConfig.from_hf, LlamaModel, LLAMA,
                    optional_targets=("lm_head.",), is_vlm=False)

_FAMILIES: tuple[Family, ...] = (
    llava.FAMILY,
    qwen2_5_vl.FAMILY,
    gemma3.FAMILY,
    llava_onevision.FAMILY,
    LLAMA_TEXT,
)

# config.json "architectures"[0] (or "model_type" when absent) -> family
FAMILIES: dict[str, Family] = {arch: family for family in _FAMILIES for arch in family.architectures}

# Short names accepted by `--model` and `jaxprune.load` -> Hugging Face hub id (downloaded only when online).
PRESETS: dict[str, str] = {
    "llava": "llava-hf/llava-1.5-7b-hf",
    "llava-7b": "llava-hf/llava-1.5-7b-hf",
    "llava-13b": "llava-hf/llava-1.5-13b-hf",
    **qwen2_5_vl.PRESETS,
    **gemma3.PRESETS,
    **llava_onevision.PRESETS,
}

# Checkpoints shipped in this repository's checkpoints/ folder (available from a source checkout).
CHECKPOINTS_DIR = Path(__file__).resolve().parents[2] / "checkpoints"
LOCAL_PRESETS: dict[str, Path] = {
    "llava-easyvqa": CHECKPOINTS_DIR / "llava-easyvqa",
    "llava-scenes": CHECKPOINTS_DIR / "llava-scenes",
}


def family_for(hf_config: Mapping[str, Any], source: str) -> Family:
  """The family of an HF config dict; one clear error naming the file for anything unknown."""
  archs = hf_config.get("architectures") or [hf_config.get("model_type")]
  for arch in archs:
    if arch in FAMILIES:
      return FAMILIES[arch]
  known = sorted(k for k in FAMILIES if k[0].isupper())
  raise ValueError(f"{source}: unknown architecture {archs[0]!r} (supported: {', '.join(known)})")


# Architecture shapes of known checkpoints, for abstract planning and benchmarks (no weights involved).
SHAPES: dict[str, Any] = {**llava.SHAPES, **qwen2_5_vl.SHAPES, **gemma3.SHAPES, **llava_onevision.SHAPES}
LLAVA_15_7B = SHAPES["llava-7b"]  # kept for benchmarks written against it
