"""Gemma 3 configs: frozen dataclasses read from Hugging Face `config.json` dicts.

Two layouts of the decoder's RoPE exist: transformers >= 5 saves `rope_parameters` per layer type
(`full_attention`, `sliding_attention`); hub checkpoints (google/gemma-3-4b-it, -12b-it) keep `rope_theta`
(global layers), `rope_local_base_freq` (sliding layers), and `rope_scaling` (global layers only). Layer types
come from `layer_types`, or from the older `sliding_window_pattern` (every n-th layer global).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxprune.models.config import DecoderReadout, TextConfig, check_token_ids, get_first, key_of
from jaxprune.models.siglip import SiglipVisionConfig

SLIDING, FULL = "sliding_attention", "full_attention"


def _hashable_scaling(params: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...] | None:
  """HF rope parameters -> the sorted tuple `llama.rope_inverse_frequencies` reads; None for plain RoPE."""
  params = {k: v for k, v in dict(params or {}).items() if k != "rope_theta"}
  if params.get("rope_type", params.get("type", "default")) == "default":
    return None
  return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items()))


# transformers' Gemma3TextConfig defaults: the released config.json files list only what differs from them
_TEXT_DEFAULTS = dict(vocab_size=262_208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                      num_attention_heads=8, num_key_value_heads=4, head_dim=256, rms_norm_eps=1e-6,
                      max_position_embeddings=131_072, query_pre_attn_scalar=256, sliding_window=4096,
                      pad_token_id=0, eos_token_id=1, bos_token_id=2)


@dataclasses.dataclass(frozen=True)
class Gemma3TextConfig(TextConfig):
  """The Gemma 3 decoder: a TextConfig (what cost, pruning and the decode loop read) plus what Gemma adds.

  `rope_theta` / `rope_scaling` are the global (full-attention) layers'; sliding layers use their own base.
  """

  layer_types: tuple[str, ...] = ()  # per layer: "sliding_attention" or "full_attention"
  sliding_window: int = 4096  # a sliding layer's query sees keys at most sliding_window - 1 tokens back
  local_rope_theta: float = 10000.0
  local_rope_scaling: tuple[tuple[str, Any], ...] | None = None
  query_pre_attn_scalar: float = 256.0  # attention logits are q.k / sqrt(query_pre_attn_scalar)
  final_logit_softcapping: float | None = None  # None in a Gemma3Config: the VLM never caps (see from_hf)
  hidden_activation: str = "gelu_pytorch_tanh"

  @classmethod
  def from_hf(cls, d: Mapping[str, Any]) -> Gemma3TextConfig:
    where = "config.json: text_config"
    d = {**_TEXT_DEFAULTS, **d}
    if d.get("attn_logit_softcapping") is not None:
      raise ValueError(f"{where}.attn_logit_softcapping={d['attn_logit_softcapping']} is not supported (Gemma 2 "
                       f"style soft-capped attention; Gemma 3 has none)")
    if d.get("use_bidirectional_attention"):
      raise ValueError(f"{where}.use_bidirectional_attention=true (an embedding model) is not supported")
    act = d.get("hidden_activation") or d.get("hidden_act") or "gelu_pytorch_tanh"
    if act != "gelu_pytorch_tanh":
      raise ValueError(f"{where}.hidden_activation={act!r} is not supported (gelu_pytorch_tanh)")
    n = d["num_hidden_layers"]
    types = d.get("layer_types")
    if types is None:  # hub configs: every `sliding_window_pattern`-th layer is global
      pattern = get_first(d, "sliding_window_pattern", "_sliding_window_pattern", default=6)
      types = [SLIDING if (i + 1) % pattern else FULL for i in range(n)]
    bad = [t for t in types if t not in (SLIDING, FULL)]
    if len(types) != n or bad:
      raise ValueError(f"{where}.layer_types must list {n} entries of {SLIDING!r}/{FULL!r}, got {list(types)}")
    rope = d.get("rope_parameters")
    if isinstance(rope, Mapping) and (FULL in rope or SLIDING in rope):
      full, local = dict(rope.get(FULL) or {}), dict(rope.get(SLIDING) or {})
    else:  # hub layout
      full = dict(d.get("rope_scaling") or {})
      full["rope_theta"] = get_first(d, "rope_theta", default=1_000_000.0)
      local = {"rope_theta": get_first(d, "rope_local_base_freq", default=10_000.0)}
    base = TextConfig.from_hf({**d, "rope_scaling": None, "rope_parameters": None,
                               "rope_theta": full.get("rope_theta", 1_000_000.0),
                               "tie_word_embeddings": d.get("tie_word_embeddings", True)})
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(TextConfig)}
    fields["rope_scaling"] = _hashable_scaling(full)
    return cls(**fields, layer_types=tuple(types), sliding_window=int(d.get("sliding_window") or 4096),
               local_rope_theta=float(local.get("rope_theta", 10_000.0)),
               local_rope_scaling=_hashable_scaling(local),
               query_pre_attn_scalar=float(get_first(d, "query_pre_attn_scalar", default=256)),
               final_logit_softcapping=d.get("final_logit_softcapping"), hidden_activation=act)

  def local_rope(self) -> TextConfig:
    """The same config with the sliding layers' RoPE, for `llama.rope_inverse_frequencies`."""
    return dataclasses.replace(self, rope_theta=self.local_rope_theta, rope_scaling=self.local_rope_scaling)


@dataclasses.dataclass(frozen=True)
class Gemma3Config(DecoderReadout):
  """Gemma 3: SigLIP tower -> average pool to `mm_tokens_per_image` -> RMSNorm + matmul projector -> decoder.

  A prompt's image is `<start_of_image>` + mm_tokens_per_image `<image_soft_token>` + `<end_of_image>`; only
  the soft tokens are visual (see the family docstring in `__init__.py`)."""

  text: Gemma3TextConfig
  vision: SiglipVisionConfig
  mm_tokens_per_image: int = 256
  image_token_id: int = 262_144
  boi_token_id: int = 255_999
  eoi_token_id: int = 256_000

  # ---- what pruning, cost and eval read (models/base.py: VLMConfig)

  @property
  def visual_tokens_per_image(self) -> int:
    return self.mm_tokens_per_image

  @property
  def tokens_per_side(self) -> int:
    return int(round(self.mm_tokens_per_image ** 0.5))

  @property
  def pool_kernel(self) -> int:
    """Patches per side pooled into one token (64 / 16 = 4 for the released 896 px tower)."""
    return self.vision.grid[0] // self.tokens_per_side

  @property
  def grid(self) -> tuple[int, int]:
    return self.tokens_per_side, self.tokens_per_side

  @property
  def vision_signals(self) -> frozenset[str]:
    """Attention received in the tower's last layer (SigLIP has no [CLS]) and its keys, pooled per token like
    the features; every token sits on the image's fixed token grid."""
    return frozenset({"importance", "keys", "grid"})

  def vision_flops(self, num_visual: int | None = None) -> int:
    """Matmul FLOPs of the tower (every layer, plus the signal's q.k) and the projector for the images behind
    `num_visual` tokens (default one image). Pooling is additions only."""
    images = 1 if num_visual is None else max(1, -(-num_visual // self.mm_tokens_per_image))
    projector = 2 * self.mm_tokens_per_image * self.vision.hidden_size * self.text.hidden_size
    return images * (self.vision.flops() + projector)

  @classmethod
  def from_hf(cls, d: Mapping[str, Any]) -> Gemma3Config:
    for key in ("text_config", "vision_config"):
      if key not in d:
        raise ValueError(f"config.json: no {key} (is this a Gemma3ForConditionalGeneration checkpoint?)")
    text_dict = dict(d["text_config"])
    text_dict.setdefault("tie_word_embeddings", d.get("tie_word_embeddings", True))
    # transformers' Gemma3ForConditionalGeneration applies its lm_head without the text config's
    # final_logit_softcapping (only the text-only Gemma3ForCausalLM caps): the VLM's logits are never capped
    text = dataclasses.replace(Gemma3TextConfig.from_hf(text_dict), final_logit_softcapping=None)
    vision = SiglipVisionConfig.from_hf(d["vision_config"])
    ids = {key_of(d, f"{name}_index", f"{name}_id"): get_first(d, f"{name}_index", f"{name}_id", default=default)
           for name, default in (("image_token", 262_144), ("boi_token", 255_999), ("eoi_token", 256_000))}
    # the image's delimiters are embedded; the soft-token placeholder may lie past the table (transformers maps it)
    check_token_ids(ids, text, in_vocab=tuple(k for k in ids if not k.startswith("image_token")))
    image_id, boi_id, eoi_id = ids.values()
    cfg = cls(text=text, vision=vision, mm_tokens_per_image=int(d.get("mm_tokens_per_image", 256)),
              image_token_id=image_id, boi_token_id=boi_id, eoi_token_id=eoi_id)
    side, grid = cfg.tokens_per_side, vision.grid[0]
    if side * side != cfg.mm_tokens_per_image or grid % side:
      raise ValueError(f"config.json: mm_tokens_per_image={cfg.mm_tokens_per_image} must be a square whose side "
                       f"divides the tower's {grid}x{grid} patch grid")
    return cfg


_TOWER = dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
              num_attention_heads=16, image_size=896, patch_size=14, layer_norm_eps=1e-6, vision_use_head=False)
_TEXT = dict(model_type="gemma3_text", sliding_window=1024, rope_scaling={"rope_type": "linear", "factor": 8.0})
_IDS = dict(architectures=["Gemma3ForConditionalGeneration"], model_type="gemma3", mm_tokens_per_image=256,
            boi_token_index=255_999, eoi_token_index=256_000, image_token_index=262_144)
# config.json of the released checkpoints (hub layout: the text config lists only what differs from transformers'
# defaults), for abstract planning and benchmarks without weights
HUB_CONFIGS: dict[str, dict] = {
    "google/gemma-3-4b-it": dict(_IDS, vision_config=_TOWER, text_config=dict(
        _TEXT, hidden_size=2560, intermediate_size=10240, num_hidden_layers=34)),
    "google/gemma-3-12b-it": dict(_IDS, vision_config=_TOWER, text_config=dict(
        _TEXT, hidden_size=3840, intermediate_size=15360, num_hidden_layers=48, num_attention_heads=16,
        num_key_value_heads=8)),
}
PRESETS = {"gemma-3-4b": "google/gemma-3-4b-it", "gemma-3-12b": "google/gemma-3-12b-it"}
SHAPES: dict[str, Gemma3Config] = {name: Gemma3Config.from_hf(HUB_CONFIGS[hub]) for name, hub in PRESETS.items()}
