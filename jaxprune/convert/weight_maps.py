"""Declarative HF -> jaxprune weight maps, one per model family.

Each rule is `(hf_key_regex, target_path, transform)`: the regex must match the whole HF key, the target is a
dotted NNX state path with `\\1`-style groups, `transform` reshapes the HF tensor into NNX layout, and a target
of `None` means the weight is knowingly unused. Rules are tried in order; the first match wins.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray] | None
Rule = tuple[str, str | None, Transform]


def linear(w: np.ndarray) -> np.ndarray:
  """torch Linear [out, in] -> Flax kernel [in, out]."""
  return w.T


def conv(w: np.ndarray) -> np.ndarray:
  """torch Conv2d [out, in, kh, kw] -> Flax kernel [kh, kw, in, out]."""
  return w.transpose(2, 3, 1, 0)


def _llama_body(hf: str, ours: str) -> tuple[Rule, ...]:
  """Decoder rules with HF prefix regex `hf` mapped to NNX prefix `ours`."""
  layer = hf + r"layers\.(\d+)\."
  to = ours + r"layers.\1."
  return (
      (hf + r"embed_tokens\.weight", ours + "embed_tokens.embedding", None),
      (layer + r"self_attn\.(q|k|v|o)_proj\.weight", to + r"attn.\2_proj.kernel", linear),
      (layer + r"self_attn\.(q|k|v)_proj\.bias", to + r"attn.\2_proj.bias", None),
      (layer + r"mlp\.(gate|up|down)_proj\.weight", to + r"mlp.\2_proj.kernel", linear),
      (layer + r"mlp\.(gate|up|down)_proj\.bias", to + r"mlp.\2_proj.bias", None),
      (layer + r"input_layernorm\.weight", to + "input_norm.weight", None),
      (layer + r"post_attention_layernorm\.weight", to + "post_attn_norm.weight", None),
      (layer + r"self_attn\.rotary_emb\.inv_freq", None, None),  # recomputed from the config
      (hf + r"norm\.weight", ours + "norm.weight", None),
  )


# LlamaForCausalLM (Llama 2/3, SmolLM2, Vicuna): "model.layers.0..." and "lm_head.weight".
LLAMA: tuple[Rule, ...] = _llama_body(r"model\.", "") + (
    (r"lm_head\.weight", "lm_head.kernel", linear),
)

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
) + _llama_body(r"(?:model\.language_model\.|language_model\.model\.)", "language_model.")

# Targets that may legitimately be absent from the built model: encoder layers past the one LLaVA reads, and
# the LM head of a model whose head is tied to its embedding (GGUF exports and some checkpoints still carry it).
OPTIONAL_TARGET_PREFIXES = ("vision_tower.layers.", "lm_head.", "language_model.lm_head.")
