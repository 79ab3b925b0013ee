"""Declarative HF -> jaxprune weight map for Qwen2.5-VL (`jaxprune.convert` loads by it).

Rules are `(hf_key_regex, target_path, transform)` as in the other families' maps. Two key layouts: hub
checkpoints (Qwen/Qwen2.5-VL-3B-Instruct, -7B-Instruct) and transformers 5's `save_pretrained` use `visual.*`,
`model.*`, `lm_head.*`; the in-memory names of transformers >= 4.52 (saved as such by some 4.5x versions) are
`model.visual.*`, `model.language_model.*`, `lm_head.*`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def linear(w: np.ndarray) -> np.ndarray:
  """torch Linear [out, in] -> Flax kernel [in, out]."""
  return w.T


def patch_conv(w: np.ndarray) -> np.ndarray:
  """torch Conv3d [Dv, C, T, p, p] (stride = kernel) -> matmul kernel [C*T*p*p, Dv] over flattened patches."""
  return w.reshape(w.shape[0], -1).T


_VIS = r"(?:model\.)?visual\."
_BLOCK = _VIS + r"blocks\.(\d+)\."
_LM = r"(?:model\.language_model\.|model\.)"  # checked after the visual rules, so `model.visual.*` never lands here
_LAYER = _LM + r"layers\.(\d+)\."
_TO = r"language_model.layers.\1."

QWEN2_5_VL: tuple[tuple[str, str | None, Callable | None], ...] = (
    (_VIS + r"patch_embed\.proj\.weight", "vision_tower.patch_embed.proj.kernel", patch_conv),
    (_BLOCK + r"norm(1|2)\.weight", r"vision_tower.blocks.\1.norm\2.weight", None),
    (_BLOCK + r"attn\.(qkv|proj)\.weight", r"vision_tower.blocks.\1.attn.\2.kernel", linear),
    (_BLOCK + r"attn\.(qkv|proj)\.bias", r"vision_tower.blocks.\1.attn.\2.bias", None),
    (_BLOCK + r"mlp\.(gate|up|down)_proj\.weight", r"vision_tower.blocks.\1.mlp.\2_proj.kernel", linear),
    (_BLOCK + r"mlp\.(gate|up|down)_proj\.bias", r"vision_tower.blocks.\1.mlp.\2_proj.bias", None),
    (_VIS + r"merger\.ln_q\.weight", "vision_tower.merger.ln_q.weight", None),
    (_VIS + r"merger\.mlp\.(0|2)\.weight", r"vision_tower.merger.mlp_\1.kernel", linear),
    (_VIS + r"merger\.mlp\.(0|2)\.bias", r"vision_tower.merger.mlp_\1.bias", None),
    (_LM + r"embed_tokens\.weight", "language_model.embed_tokens.embedding", None),
    (_LAYER + r"self_attn\.(q|k|v|o)_proj\.weight", _TO + r"attn.\2_proj.kernel", linear),
    (_LAYER + r"self_attn\.(q|k|v)_proj\.bias", _TO + r"attn.\2_proj.bias", None),
    (_LAYER + r"mlp\.(gate|up|down)_proj\.weight", _TO + r"mlp.\2_proj.kernel", linear),
    (_LAYER + r"input_layernorm\.weight", _TO + "input_norm.weight", None),
    (_LAYER + r"post_attention_layernorm\.weight", _TO + "post_attn_norm.weight", None),
    (_LM + r"norm\.weight", "language_model.norm.weight", None),
    (r"lm_head\.weight", "language_model.lm_head.kernel", linear),
)
