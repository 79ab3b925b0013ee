"""Gemma 3 weight map: HF `Gemma3ForConditionalGeneration` keys -> NNX state paths (see `models/weights.py`).

Two key layouts: hub checkpoints (google/gemma-3-4b-it, -12b-it) and transformers 5's `save_pretrained` use
`language_model.model.*`, `vision_tower.vision_model.*` (5.2x: `vision_tower.*`), `multi_modal_projector.*`; the
in-memory names of transformers >= 4.52 are `model.language_model.*`, `model.vision_tower.vision_model.*`,
`model.multi_modal_projector.*`. The LM head is tied to the embedding (absent, or a copy that is skipped).
"""

from __future__ import annotations

from jaxprune.models.siglip import optional_targets, siglip_weight_rules
from jaxprune.models.weights import Rule, linear

_LM = r"(?:model\.language_model\.|language_model\.model\.)"
_LAYER = _LM + r"layers\.(\d+)\."
_TO = r"language_model.layers.\1."
_NORMS = {"input_layernorm": "input_norm", "post_attention_layernorm": "post_attn_norm",
          "pre_feedforward_layernorm": "pre_mlp_norm", "post_feedforward_layernorm": "post_mlp_norm"}
_PROJECTOR = r"(?:model\.)?multi_modal_projector\."

GEMMA3: tuple[Rule, ...] = siglip_weight_rules(r"(?:model\.)?vision_tower\.(?:vision_model\.)?", "vision_tower.") + (
    (_PROJECTOR + r"mm_input_projection_weight", "projector.mm_input_projection", None),  # [Dv, D] as used
    (_PROJECTOR + r"mm_soft_emb_norm\.weight", "projector.mm_soft_emb_norm.weight", None),
    (_LM + r"embed_tokens\.weight", "language_model.embed_tokens.embedding", None),
    (_LAYER + r"self_attn\.(q|k|v|o)_proj\.weight", _TO + r"attn.\2_proj.kernel", linear),
    (_LAYER + r"self_attn\.(q|k)_norm\.weight", _TO + r"attn.\2_norm.weight", None),
    (_LAYER + r"mlp\.(gate|up|down)_proj\.weight", _TO + r"mlp.\2_proj.kernel", linear),
    *((_LAYER + hf + r"\.weight", _TO + ours + ".weight", None) for hf, ours in _NORMS.items()),
    (_LM + r"norm\.weight", "language_model.norm.weight", None),
    (r"(?:language_model\.)?lm_head\.weight", "language_model.lm_head.kernel", linear),
)

# a tied head may still be saved (skipped when the config ties it); tower layers past those built
OPTIONAL_TARGETS = ("language_model.lm_head.",) + optional_targets("vision_tower.")
