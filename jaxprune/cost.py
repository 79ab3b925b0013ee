"""Analytic prefill cost of LLaVA-style models under a visual-token pruning plan.

A plan (`stages`) is a sequence of `(layer, keep)` pairs: decoder layers
`layer, layer + 1, ...` run with `keep` visual tokens per image (layer 0 =
pruned before the LLM). Layers must strictly increase and keeps must not
increase (a dropped token never comes back); keep >= num_visual means no
reduction. Prompts hold one image: prompt_len counts its num_visual tokens.

FLOP conventions (all exact integers):
- Only matmuls count, 2*m*n*k each. Norms, softmax, RoPE, activations,
  residual adds, biases and embedding lookups are ignored (they are O(L*D)).
- Attention counts the FULL S x S score (QK^T) and probs @ V matmuls, not the
  causal half: that is what dense kernels compute.
- lm_head runs for the last position only: generation needs only its logits.
- Vision tower (LlavaConfig with include_vision): the patch-embedding conv as
  a matmul, `vision_layers_used` pre-LN layers on Np + 1 tokens ([CLS]), then
  the 2-layer projector on all `num_image_tokens` (pruning happens after it).
"""

from __future__ import annotations

from typing import Sequence

from jaxprune.models.config import LlavaConfig, TextConfig

Plan = Sequence[tuple[int, int]]


def _text(cfg: LlavaConfig | TextConfig) -> TextConfig:
  return cfg.text if isinstance(cfg, LlavaConfig) else cfg


def _num_visual(cfg: LlavaConfig | TextConfig, num_visual: int | None) -> int:
  if num_visual is not None:
    return num_visual
  return cfg.num_image_tokens if isinstance(cfg, LlavaConfig) else 0


def validate_plan(num_layers: int, stages: Plan) -> None:
  """Raise ValueError naming the first problem of a plan."""
  prev_layer, prev_keep = -1, None
  for i, (layer, keep) in enumerate(stages):
    if not 0 <= layer < num_layers:
      raise ValueError(f"plan stage {i}: layer {layer} is outside [0, {num_layers})")
    if keep < 1:
      raise ValueError(f"plan stage {i}: keep={keep} must be >= 1")
    if layer <= prev_layer:
      raise ValueError(f"plan stage {i}: layer {layer} does not increase (previous stage is at layer {prev_layer})")
    if prev_keep is not None and keep > prev_keep:
      raise ValueError(f"plan stage {i}: keep={keep} grows (previous stage keeps {prev_keep})")
    prev_layer, prev_keep = layer, keep


def sequence_lengths(num_layers: int, prompt_len: int, num_visual: int, stages: Plan = ()) -> list[int]:
  """Prefill sequence length seen by each decoder layer under the plan."""
  if not 0 <= num_visual <= prompt_len:
    raise ValueError(f"num_visual={num_visual} must be in [0, prompt_len={prompt_len}]")
  validate_plan(num_layers, stages)
  text_len = prompt_len - num_visual
  lengths, visual, stage = [], num_visual, 0
  for layer in range(num_layers):
    while stage < len(stages) and stages[stage][0] <= layer:
      visual = min(visual, stages[stage][1])
      stage += 1
    lengths.append(text_len + visual)
  return lengths


def decoder_layer_flops(cfg: TextConfig, seq_len: int) -> int:
  """Matmul FLOPs of one decoder layer on seq_len tokens (batch 1)."""
  d, s = cfg.hidden_size, seq_len
  q_dim, kv_dim = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
  proj = 2 * s * d * (2 * q_dim + 2 * kv_dim)  # q, o and k, v (GQA)
  attn = 2 * (2 * cfg.num_heads * s * s * cfg.head_dim)  # QK^T and probs @ V, full S x S
  mlp = 3 * 2 * s * d * cfg.intermediate_size  # SwiGLU gate, up, down
  return proj + attn + mlp


def vision_flops(cfg: LlavaConfig) -> int:
  """Matmul FLOPs of the vision tower (layers actually used) plus projector, one image."""
  v, dt = cfg.vision, cfg.text.hidden_size
  t, dv = v.num_patches + 1, v.hidden_size  # tokens incl. [CLS]
  patch = 2 * v.num_patches * (v.num_channels * v.patch_size ** 2) * dv
  layer = (2 * t * dv * 4 * dv  # q, k, v, o
           + 2 * (2 * t * t * dv)  # QK^T and probs @ V over all heads
           + 2 * (2 * t * dv * v.intermediate_size))  # fc1, fc2
  proj = 2 * cfg.num_image_tokens * (dv * dt + dt * dt)
  return patch + cfg.vision_layers_used * layer + proj


def prefill_flops(
    cfg: LlavaConfig | TextConfig,
    prompt_len: int,
    stages: Plan = (),
    *,
    num_visual: int | None = None,
    batch: int = 1,
    include_vision: bool = True,
) -> int:
  """Matmul FLOPs of one prefill under the plan (see module docstring)."""
  text = _text(cfg)
  lengths = sequence_lengths(text.num_layers, prompt_len, _num_visual(cfg, num_visual), stages)
  total = sum(decoder_layer_flops(text, s) for s in lengths)
  total += 2 * text.hidden_size * text.vocab_size  # lm_head, last position only
  if include_vision and isinstance(cfg, LlavaConfig):
    total += vision_flops(cfg)
  return batch * total


def kv_cache_bytes(
    cfg: LlavaConfig | TextConfig,
    prompt_len: int,
    stages: Plan = (),
    *,
    num_visual: int | None = None,
    max_new_tokens: int = 0,
    batch: int = 1,
    bytes_per_element: int = 2,
) -> int:
  """Bytes of the decoder KV cache: per layer k and v of [batch, S_layer + max_new_tokens, Hkv, Dh]."""
  text = _text(cfg)
  lengths = sequence_lengths(text.num_layers, prompt_len, _num_visual(cfg, num_visual), stages)
  per_token = 2 * text.num_kv_heads * text.head_dim * bytes_per_element  # k and v
  return batch * per_token * sum(s + max_new_tokens for s in lengths)
