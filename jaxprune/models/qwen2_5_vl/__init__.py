"""Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`): family 2 — window-attention vision tower with 2-D RoPE and a
2x2 patch merger, the Qwen2 decoder with M-RoPE, dynamic resolution padded to buckets."""

from jaxprune.models.base import Family
from jaxprune.models.qwen2_5_vl import weights
from jaxprune.models.qwen2_5_vl.config import HUB_CONFIGS, SHAPES, Qwen25VisionConfig, Qwen25VLConfig
from jaxprune.models.qwen2_5_vl.host import Qwen25VLHost
from jaxprune.models.qwen2_5_vl.modeling import Qwen25VL

__all__ = ["FAMILY", "HUB_CONFIGS", "PRESETS", "SHAPES", "Qwen25VL", "Qwen25VLConfig", "Qwen25VLHost",
           "Qwen25VisionConfig"]

# registry names -> hub ids (downloaded only when online)
PRESETS = {"qwen2.5-vl-3b": "Qwen/Qwen2.5-VL-3B-Instruct", "qwen2.5-vl-7b": "Qwen/Qwen2.5-VL-7B-Instruct"}

FAMILY = Family("qwen2_5_vl", ("Qwen2_5_VLForConditionalGeneration", "qwen2_5_vl"), Qwen25VLConfig.from_hf,
                Qwen25VL, weights.QWEN2_5_VL, optional_targets=("language_model.lm_head.",), host=Qwen25VLHost,
                presets=PRESETS, shapes=SHAPES)
