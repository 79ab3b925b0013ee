"""NNX LLaVA -> a Hugging Face LLaVA directory (config.json + model.safetensors + tokenizer/processor files).

The weights use the legacy llava-hf key names (`language_model.model.*`, `vision_tower.vision_model.*`,
`multi_modal_projector.*`), so the directory loads both with `jaxprune.convert.hf.load_model` and with
`transformers.LlavaForConditionalGeneration.from_pretrained`. Every exported key is checked against the forward
map `weights.LLAVA`: it must map back to the very NNX path it came from.

`Llava` only builds the vision layers LLaVA reads (`cfg.vision_layers_used`; layer -2 skips the last encoder
layer). transformers builds all `num_hidden_layers`, so the layers past the used ones and the post-LN are written
as inert placeholders (linear weights 0, LayerNorm weight 1 / bias 0). LLaVA takes its features from an earlier
hidden state and never reads them, so they cannot change any output.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from jaxprune.models.llava import weights
from jaxprune.models.llava.config import LlavaConfig
from jaxprune.models.llava.modeling import Llava

WEIGHTS_FILE = "model.safetensors"

_T = "language_model.model."  # legacy llava-hf decoder prefix
_V = "vision_tower.vision_model."  # legacy llava-hf CLIP prefix


def _linear_to_torch(w: np.ndarray) -> np.ndarray:
  """Flax kernel [in, out] -> torch Linear weight [out, in]."""
  return w.T


def _conv_to_torch(w: np.ndarray) -> np.ndarray:
  """Flax conv kernel HWIO [kh, kw, in, out] -> torch OIHW [out, in, kh, kw]."""
  return w.transpose(3, 2, 0, 1)


# (NNX path regex, HF key template, transform): the inverse of `weights.LLAVA`, first match wins.
_EXPORT_RULES: tuple[tuple[str, str, Callable[[np.ndarray], np.ndarray] | None], ...] = (
    (r"vision_tower\.embeddings\.patch_embedding\.kernel", _V + "embeddings.patch_embedding.weight", _conv_to_torch),
    (r"vision_tower\.embeddings\.class_embedding", _V + "embeddings.class_embedding", None),
    (r"vision_tower\.embeddings\.position_embedding\.embedding", _V + "embeddings.position_embedding.weight", None),
    (r"vision_tower\.pre_layrnorm\.scale", _V + "pre_layrnorm.weight", None),
    (r"vision_tower\.pre_layrnorm\.bias", _V + "pre_layrnorm.bias", None),
    (r"vision_tower\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.kernel",
     _V + r"encoder.layers.\1.self_attn.\2_proj.weight", _linear_to_torch),
    (r"vision_tower\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.bias", _V + r"encoder.layers.\1.self_attn.\2_proj.bias",
     None),
    (r"vision_tower\.layers\.(\d+)\.layer_norm(1|2)\.scale", _V + r"encoder.layers.\1.layer_norm\2.weight", None),
    (r"vision_tower\.layers\.(\d+)\.layer_norm(1|2)\.bias", _V + r"encoder.layers.\1.layer_norm\2.bias", None),
    (r"vision_tower\.layers\.(\d+)\.(fc1|fc2)\.kernel", _V + r"encoder.layers.\1.mlp.\2.weight", _linear_to_torch),
    (r"vision_tower\.layers\.(\d+)\.(fc1|fc2)\.bias", _V + r"encoder.layers.\1.mlp.\2.bias", None),
    (r"projector\.(linear_1|linear_2)\.kernel", r"multi_modal_projector.\1.weight", _linear_to_torch),
    (r"projector\.(linear_1|linear_2)\.bias", r"multi_modal_projector.\1.bias", None),
    (r"language_model\.lm_head\.kernel", "language_model.lm_head.weight", _linear_to_torch),
    (r"language_model\.embed_tokens\.embedding", _T + "embed_tokens.weight", None),
    (r"language_model\.layers\.(\d+)\.attn\.(q|k|v|o)_proj\.kernel", _T + r"layers.\1.self_attn.\2_proj.weight",
     _linear_to_torch),
    (r"language_model\.layers\.(\d+)\.attn\.(q|k|v)_proj\.bias", _T + r"layers.\1.self_attn.\2_proj.bias", None),
    (r"language_model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.kernel", _T + r"layers.\1.mlp.\2_proj.weight",
     _linear_to_torch),
    (r"language_model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.bias", _T + r"layers.\1.mlp.\2_proj.bias", None),
    (r"language_model\.layers\.(\d+)\.input_norm\.weight", _T + r"layers.\1.input_layernorm.weight", None),
    (r"language_model\.layers\.(\d+)\.post_attn_norm\.weight", _T + r"layers.\1.post_attention_layernorm.weight",
     None),
    (r"language_model\.norm\.weight", _T + "norm.weight", None),
)


def hf_key(path: str) -> tuple[str, Callable[[np.ndarray], np.ndarray] | None]:
  """NNX state path -> (legacy llava-hf key, NNX -> torch layout transform)."""
  for rx, template, fn in _EXPORT_RULES:
    m = re.fullmatch(rx, path)
    if m:
      return m.expand(template), fn
  raise ValueError(f"save_hf_llava: no HF name for model weight {path!r}")


def _check_inverse(key: str, path: str) -> None:
  """The forward map must send the exported key back to the same NNX path (the maps stay exact inverses)."""
  for rx, target, _ in weights.LLAVA:
    m = re.fullmatch(rx, key)
    if m:
      back = None if target is None else m.expand(target)
      if back != path:
        raise AssertionError(f"export key {key!r} loads into {back!r}, not {path!r}: weight maps disagree")
      return
  raise AssertionError(f"export key {key!r} has no rule in weights.LLAVA")


def _placeholder_vision_weights(cfg: LlavaConfig, dtype: np.dtype) -> dict[str, np.ndarray]:
  """Inert weights for encoder layers past the used ones and the post-LN (never read by LLaVA, see module doc)."""
  v = cfg.vision
  d, f = v.hidden_size, v.intermediate_size
  out: dict[str, np.ndarray] = {}
  for i in range(cfg.vision_layers_used, v.num_layers):
    p = f"{_V}encoder.layers.{i}."
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
      out[p + f"self_attn.{name}.weight"] = np.zeros((d, d), dtype)
      out[p + f"self_attn.{name}.bias"] = np.zeros((d,), dtype)
    for n in (1, 2):
      out[p + f"layer_norm{n}.weight"] = np.ones((d,), dtype)
      out[p + f"layer_norm{n}.bias"] = np.zeros((d,), dtype)
    out[p + "mlp.fc1.weight"], out[p + "mlp.fc1.bias"] = np.zeros((f, d), dtype), np.zeros((f,), dtype)
    out[p + "mlp.fc2.weight"], out[p + "mlp.fc2.bias"] = np.zeros((d, f), dtype), np.zeros((d,), dtype)
  out[_V + "post_layernorm.weight"] = np.ones((d,), dtype)
  out[_V + "post_layernorm.bias"] = np.zeros((d,), dtype)
  return out


def hf_state_dict(model: Llava, cfg: LlavaConfig) -> dict[str, np.ndarray]:
  """All tensors of the HF checkpoint, in torch layout, in the model's parameter dtype."""
  tensors: dict[str, np.ndarray] = {}
  dtype = None
  for path, value in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    path = ".".join(str(p) for p in path)
    key, fn = hf_key(path)
    _check_inverse(key, path)
    array = np.asarray(value[...])
    dtype = array.dtype
    tensors[key] = np.ascontiguousarray(fn(array) if fn else array)
  tensors.update(_placeholder_vision_weights(cfg, dtype))
  return tensors


def hf_config_dict(cfg: LlavaConfig, dtype: str = "float32") -> dict[str, Any]:
  """config.json for `LlavaForConditionalGeneration`, holding every field `LlavaConfig.from_hf` reads."""
  t, v = cfg.text, cfg.vision
  rope = {"rope_type": "default"} if t.rope_scaling is None else {
      k: (list(x) if isinstance(x, tuple) else x) for k, x in t.rope_scaling}
  eos = list(t.eos_token_id) if isinstance(t.eos_token_id, tuple) else t.eos_token_id
  text = {
      "model_type": "llama",
      "vocab_size": t.vocab_size,
      "hidden_size": t.hidden_size,
      "intermediate_size": t.intermediate_size,
      "num_hidden_layers": t.num_layers,
      "num_attention_heads": t.num_heads,
      "num_key_value_heads": t.num_kv_heads,
      "head_dim": t.head_dim,
      "hidden_act": "silu",
      "rms_norm_eps": t.rms_norm_eps,
      "rope_theta": t.rope_theta,
      "rope_parameters": {**rope, "rope_theta": t.rope_theta},  # transformers >= 5 reads this
      "max_position_embeddings": t.max_position_embeddings,
      "tie_word_embeddings": t.tie_word_embeddings,
      "attention_bias": t.attention_bias,
      "mlp_bias": t.mlp_bias,
      "bos_token_id": t.bos_token_id,
      "eos_token_id": eos,
      "pad_token_id": t.pad_token_id,
      "dtype": dtype,
  }
  vision = {
      "model_type": "clip_vision_model",
      "hidden_size": v.hidden_size,
      "intermediate_size": v.intermediate_size,
      "num_hidden_layers": v.num_layers,
      "num_attention_heads": v.num_heads,
      "image_size": v.image_size,
      "patch_size": v.patch_size,
      "num_channels": v.num_channels,
      "layer_norm_eps": v.layer_norm_eps,
      "hidden_act": v.hidden_act,
      "dtype": dtype,
  }
  return {
      "model_type": "llava",
      "architectures": ["LlavaForConditionalGeneration"],
      "text_config": text,
      "vision_config": vision,
      "image_token_index": cfg.image_token_id,
      "image_seq_length": cfg.num_image_tokens,
      "vision_feature_layer": cfg.vision_feature_layer,
      "vision_feature_select_strategy": cfg.vision_feature_select_strategy,
      "projector_hidden_act": cfg.projector_hidden_act,
      "multimodal_projector_bias": cfg.projector_bias,
      "tie_word_embeddings": t.tie_word_embeddings,
      "pad_token_id": t.pad_token_id,
      "dtype": dtype,
  }


def save_hf_llava(model: Llava, cfg: LlavaConfig, out_dir: str | os.PathLike, *, tokenizer=None,
                  image_processor=None) -> Path:
  """Write `out_dir/{config.json, model.safetensors}` (+ tokenizer and image processor files when given).

  Weights keep the model's parameter dtype (cast the model first for a smaller file).
  """
  from safetensors.numpy import save_file

  if model.config != cfg:
    raise ValueError("save_hf_llava: `cfg` differs from the config the model was built with")
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  tensors = hf_state_dict(model, cfg)
  dtype = str(next(iter(tensors.values())).dtype)
  if dtype == "bfloat16":  # safetensors' numpy writer has no bf16: go through jax arrays
    import jax.numpy as jnp
    from safetensors.flax import save_file as save_flax
    save_flax({k: jnp.asarray(a) for k, a in tensors.items()}, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
  else:
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
  (out / "config.json").write_text(json.dumps(hf_config_dict(cfg, dtype), indent=2) + "\n")
  if tokenizer is not None:
    tokenizer.save_pretrained(str(out))
  if image_processor is not None:
    image_processor.save_pretrained(str(out))
  return out
