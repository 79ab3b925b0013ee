"""Analytic prefill cost of LLaVA-style models under a visual-token pruning plan.

A plan (`stages`) is a sequence of `(layer, keep)` pairs: decoder layers
`layer, layer + 1, ...` run with `keep` visual tokens per image (layer 0 =
pruned before the LLM). Layers must strictly increase and keeps must not
increase (a dropped token never comes back); keep >= num_visual means no
reduction. prompt_len counts the prompt's num_visual tokens (all its images).

FLOP conventions (all exact integers):
- Only matmuls count, 2*m*n*k each. Norms, softmax, RoPE, activations,
  residual adds, biases and embedding lookups are ignored (they are O(L*D)).
- Attention counts the FULL S x S score (QK^T) and probs @ V matmuls, not the
  causal half: that is what dense kernels compute.
- lm_head runs for the last position only: generation needs only its logits.
- Vision side (a VLM config with include_vision): counted by the family
  (`VLMConfig.vision_flops`), e.g. LLaVA's CLIP layers on Np + 1 tokens and the
  projector on every visual token (pruning happens after it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jaxprune.models.config import TextConfig

Plan = Sequence[tuple[int, int]]  # or a validated `jaxprune.prune.plan.PrunePlan`


def _is_vlm(cfg: Any) -> bool:
  return not isinstance(cfg, TextConfig)  # a family config (models/base.py: VLMConfig)


def _text(cfg: Any) -> TextConfig:
  return cfg.text if _is_vlm(cfg) else cfg


def _num_visual(cfg: Any, num_visual: int | None) -> int:
  if num_visual is not None:
    return num_visual
  if _is_vlm(cfg):
    if cfg.visual_tokens_per_image is None:
      raise ValueError("this model's visual-token count depends on the image: pass num_visual")
    return cfg.visual_tokens_per_image
  return 0


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


def _pairs(num_layers: int, stages: Plan) -> Plan:
  """(layer, keep) per stage: a PrunePlan was validated against the model when it was built (`PrunePlan.validate`),
  so it is taken as it is; raw pairs (benchmarks, notebooks) are checked here."""
  if hasattr(stages, "stages"):
    return [(stage.layer, stage.keep) for stage in stages.stages]
  validate_plan(num_layers, stages)
  return stages


def sequence_lengths(num_layers: int, prompt_len: int, num_visual: int, stages: Plan = ()) -> list[int]:
  """Prefill sequence length seen by each decoder layer under the plan."""
  if not 0 <= num_visual <= prompt_len:
    raise ValueError(f"num_visual={num_visual} must be in [0, prompt_len={prompt_len}]")
  stages = _pairs(num_layers, stages)
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


def vision_flops(cfg: Any, num_visual: int | None = None) -> int:
  """Matmul FLOPs of the vision side (tower + projector) behind `num_visual` LLM tokens; the family says how
  (`VLMConfig.vision_flops`)."""
  return cfg.vision_flops(num_visual)


def prefill_flops(
    cfg: Any,
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
  if include_vision and _is_vlm(cfg):
    total += vision_flops(cfg, _num_visual(cfg, num_visual))
  return batch * total


def kv_cache_bytes(
    cfg: Any,
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
