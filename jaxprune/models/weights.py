"""Declarative HF -> jaxprune weight maps: the rule format, layout transforms and the shared decoder's rules.

Each family keeps its own map in `models/<family>/weights.py`; this module holds what they share.

Each rule is `(hf_key_regex, target_path, transform)`: the regex must match the whole HF key, the target is a
dotted NNX state path with `\\1`-style groups, `transform` reshapes the HF tensor into NNX layout, and a target
of `None` means the weight is knowingly unused. Rules are tried in order; the first match wins.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray] | None
Rule = tuple[str, str | None, Transform]


def linear(w: np.ndarray) -> np.ndarray:
  """torch Linear [out, in] -> Flax kernel [in, out]."""
  return w.T


def conv(w: np.ndarray) -> np.ndarray:
  """torch Conv2d [out, in, kh, kw] -> Flax kernel [kh, kw, in, out]."""
  return w.transpose(2, 3, 1, 0)


def llama_body(hf: str, ours: str) -> tuple[Rule, ...]:
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
LLAMA: tuple[Rule, ...] = llama_body(r"model\.", "") + (
    (r"lm_head\.weight", "lm_head.kernel", linear),
)
