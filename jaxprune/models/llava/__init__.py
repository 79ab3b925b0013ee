"""LLaVA-1.5 (`LlavaForConditionalGeneration`): family 1 — CLIP ViT-L/14 tower, 2-layer projector, Llama decoder."""

from jaxprune.models.base import Family
from jaxprune.models.llava import weights
from jaxprune.models.llava.clip import VisionTower
from jaxprune.models.llava.config import PRESETS, SHAPES, LlavaConfig, VisionConfig
from jaxprune.models.llava.host import LlavaHost
from jaxprune.models.llava.modeling import Llava, Projector

__all__ = ["FAMILY", "PRESETS", "SHAPES", "Llava", "LlavaHost", "LlavaConfig", "Projector", "VisionConfig", "VisionTower"]

FAMILY = Family("llava", ("LlavaForConditionalGeneration", "llava"), LlavaConfig.from_hf, Llava, weights.LLAVA,
                optional_targets=weights.OPTIONAL_TARGET_PREFIXES, host=LlavaHost, presets=PRESETS,
                shapes=SHAPES)
