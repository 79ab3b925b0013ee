"""LLaVA-NeXT weight map: HF `LlavaNextForConditionalGeneration` keys -> NNX state paths (see `models/weights.py`).

LLaVA-1.5's map (CLIP tower, projector, decoder; both key layouts: the llava-hf hub's `vision_tower.vision_model.*`,
`multi_modal_projector.*`, `language_model.model.*`, `language_model.lm_head.*` and transformers >= 4.52's
`model.vision_tower.*`, `model.multi_modal_projector.*`, `model.language_model.*`, `lm_head.*`) plus the learned
`image_newline` (`model.image_newline` in the newer layout).
"""

from __future__ import annotations

from jaxprune.models.llava import weights as llava_weights
from jaxprune.models.weights import Rule

NEXT: tuple[Rule, ...] = llava_weights.LLAVA + ((r"(?:model\.)?image_newline", "image_newline", None),)

# encoder layers past the deepest feature layer, and the LM head of a tied model
OPTIONAL_TARGETS = llava_weights.OPTIONAL_TARGET_PREFIXES
