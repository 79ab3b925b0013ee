"""LLaVA-1.5 weight map: HF `LlavaForConditionalGeneration` keys -> NNX state paths (see `models/weights.py`)."""

from __future__ import annotations

from jaxprune.models.weights import Rule, conv, linear, llama_body

# LlavaForConditionalGeneration. transformers >= 4.52 saves "model.language_model.*", "model.vision_tower.*";
# llava-hf checkpoints on the hub use the older "language_model.model.*", "vision_tower.vision_model.*".
_TOWER = r"(?:model\.)?vision_tower\.(?:vision_model\.)?"
_VLAYER = _TOWER + r"encoder\.layers\.(\d+)\."
LLAVA: tuple[Rule, ...] = (
    (_TOWER + r"embeddings\.patch_embedding\.weight", "vision_tower.embeddings.patch_embedding.kernel", conv),
    (_TOWER + r"embeddings\.class_embedding", "vision_tower.embeddings.class_embedding", None),
    (_TOWER + r"embeddings\.position_embedding\.weight", "vision_tower.embeddings.position_embedding.embedding",
     None),
    (_TOWER + r"embeddings\.position_ids", None, None),
    (_TOWER + r"pre_layrnorm\.weight", "vision_tower.pre_layrnorm.scale", None),
    (_TOWER + r"pre_layrnorm\.bias", "vision_tower.pre_layrnorm.bias", None),
    (_TOWER + r"post_layernorm\.(weight|bias)", None, None),  # LLaVA reads a layer before the post-LN
    (_VLAYER + r"self_attn\.(q|k|v|out)_proj\.weight", r"vision_tower.layers.\1.self_attn.\2_proj.kernel", linear),
    (_VLAYER + r"self_attn\.(q|k|v|out)_proj\.bias", r"vision_tower.layers.\1.self_attn.\2_proj.bias", None),
    (_VLAYER + r"layer_norm(1|2)\.weight", r"vision_tower.layers.\1.layer_norm\2.scale", None),
    (_VLAYER + r"layer_norm(1|2)\.bias", r"vision_tower.layers.\1.layer_norm\2.bias", None),
    (_VLAYER + r"mlp\.(fc1|fc2)\.weight", r"vision_tower.layers.\1.\2.kernel", linear),
    (_VLAYER + r"mlp\.(fc1|fc2)\.bias", r"vision_tower.layers.\1.\2.bias", None),
    (r"(?:model\.)?multi_modal_projector\.(linear_1|linear_2)\.weight", r"projector.\1.kernel", linear),
    (r"(?:model\.)?multi_modal_projector\.(linear_1|linear_2)\.bias", r"projector.\1.bias", None),
    (r"(?:language_model\.)?lm_head\.weight", "language_model.lm_head.kernel", linear),
) + llama_body(r"(?:model\.language_model\.|language_model\.model\.)", "language_model.")

# Targets that may legitimately be absent from the built model: encoder layers past the one LLaVA reads, and
# the LM head of a model whose head is tied to its embedding (GGUF exports and some checkpoints still carry it).
OPTIONAL_TARGET_PREFIXES = ("vision_tower.layers.", "lm_head.", "language_model.lm_head.")
