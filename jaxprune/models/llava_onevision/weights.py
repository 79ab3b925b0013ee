"""LLaVA-OneVision weight map: HF `LlavaOnevisionForConditionalGeneration` keys -> NNX state paths.

Two key layouts: llava-hf hub checkpoints use `vision_tower.vision_model.*`, `multi_modal_projector.*`,
`image_newline`, `language_model.model.*`, `language_model.lm_head.*`; transformers >= 4.52 saves
`model.vision_tower.vision_model.*`, `model.multi_modal_projector.*`, `model.image_newline`,
`model.language_model.*`, `lm_head.*`.
"""

from __future__ import annotations

from jaxprune.models.siglip import optional_targets, siglip_weight_rules
from jaxprune.models.weights import Rule, linear, llama_body

_PROJ = r"(?:model\.)?multi_modal_projector\.(linear_1|linear_2)\."
ONEVISION: tuple[Rule, ...] = (
    siglip_weight_rules(r"(?:model\.)?vision_tower\.(?:vision_model\.)?", "vision_tower.")
    + (
        (_PROJ + r"weight", r"projector.\1.kernel", linear),
        (_PROJ + r"bias", r"projector.\1.bias", None),
        (r"(?:model\.)?image_newline", "image_newline", None),
        (r"(?:language_model\.)?lm_head\.weight", "language_model.lm_head.kernel", linear),
    )
    + llama_body(r"(?:model\.language_model\.|language_model\.model\.)", "language_model.")
)

# tower layers past the deepest feature layer, and the LM head of a tied model, may be in a checkpoint unbuilt
OPTIONAL_TARGETS = optional_targets("vision_tower.") + ("language_model.lm_head.",)
