"""Model families (architecture -> config, module, weight map, host, presets, shapes) and named presets.

Adding a family: write `models/<family>/` whose `__init__` defines `FAMILY` (its presets and shapes included) and
add the folder's name to `FAMILY_PACKAGES` — one line. Everything else here derives from the families.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jaxprune.models.base import Family
from jaxprune.models.config import TextConfig
from jaxprune.models.llama import LlamaModel
from jaxprune.models.weights import LLAMA

FAMILY_PACKAGES = ("llava", "qwen2_5_vl", "gemma3", "llava_onevision", "llava_next")  # folders under jaxprune/models/

# The shared decoder on its own: LlamaForCausalLM checkpoints (SmolLM2, Llama, Vicuna), text-only.
LLAMA_TEXT = Family("llama", ("LlamaForCausalLM", "llama"), TextConfig.from_hf, LlamaModel, LLAMA,
                    optional_targets=("lm_head.",), is_vlm=False)

VLM_FAMILIES: tuple[Family, ...] = tuple(importlib.import_module(f"jaxprune.models.{name}").FAMILY
                                         for name in FAMILY_PACKAGES)
_FAMILIES: tuple[Family, ...] = (*VLM_FAMILIES, LLAMA_TEXT)


def _merged(field: str) -> dict[str, Any]:
  """One name space over every family's `presets` or `shapes`; a name two families claim is a bug here."""
  out: dict[str, Any] = {}
  for family in _FAMILIES:
    for name, value in getattr(family, field).items():
      if name in out:
        raise ValueError(f"{field} name {name!r} is claimed by two families (one is {family.name})")
      out[name] = value
  return out


# config.json "architectures"[0] (or "model_type" when absent) -> family
FAMILIES: dict[str, Family] = {arch: family for family in _FAMILIES for arch in family.architectures}

# Short names accepted by `--model` and `jaxprune.load` -> Hugging Face hub id (downloaded only when online).
PRESETS: dict[str, str] = _merged("presets")

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
SHAPES: dict[str, Any] = _merged("shapes")
LLAVA_15_7B = SHAPES["llava-7b"]  # kept for benchmarks written against it
