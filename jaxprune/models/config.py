"""The shared decoder config, read from Hugging Face `config.json` dicts; each family's own config lives in its folder.

Frozen so they hash and can be static arguments of `jax.jit`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar


def get_first(d: Mapping[str, Any], *names: str, default: Any = None) -> Any:
  for name in names:
    if d.get(name) is not None:
      return d[name]
  return default


def key_of(d: Mapping[str, Any], *names: str) -> str:
  """The first of `names` that `d` sets (else the first name): how a config.json spells a key, for messages."""
  return next((name for name in names if d.get(name) is not None), names[0])


def check_token_ids(ids: Mapping[str, Any], text: TextConfig, *, in_vocab: tuple[str, ...] = ()) -> None:
  """The special token ids a family reads from config.json ({key: value}), checked when the config loads ->
  ValueError, one line naming the key and value, when one is not an int >= 0, equals another of them, equals a
  text control token of the decoder (bos/eos/pad: that text would turn into visual slots), or lies outside the
  decoder's vocab while its embedding is read (keys in `in_vocab`)."""
  eos = text.eos_token_id if isinstance(text.eos_token_id, tuple) else (text.eos_token_id,)
  owner = {v: k for k, v in [("pad_token_id", text.pad_token_id), ("bos_token_id", text.bos_token_id)] +
           [("eos_token_id", e) for e in eos] if v is not None}
  for key, value in ids.items():
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise ValueError(f"config.json: {key}={value!r} is not a token id (an int >= 0)")
    if key in in_vocab and value >= text.vocab_size:
      raise ValueError(f"config.json: {key}={value} lies outside the decoder's vocab (vocab_size={text.vocab_size}): "
                       f"the token has no embedding")
    if value in owner:
      raise ValueError(f"config.json: {key}={value} is also {owner[value]}={value}; each special token needs an id "
                       f"of its own")
    owner[value] = key


def check_placeholder_token(tokenizer, token_id: int, key: str, token: str | None = None) -> None:
  """config.json's `key` = `token_id` against the checkpoint's tokenizer, when the host is built (before any
  prompt) -> ValueError, one line naming the key and value, when the id is an ordinary text token (not one of the
  tokenizer's added or special tokens: that text would turn into image slots) or, given the placeholder text the
  chat template and processor emit (`token`, e.g. "<image>"), when that text does not tokenize to the id."""
  got = None if token is None else tokenizer.convert_tokens_to_ids(token)
  if token is not None and got == token_id:
    return
  known = got is not None and (got != tokenizer.unk_token_id or token == tokenizer.unk_token)
  theirs = f"; its image placeholder {token!r} is id {got}" if known else \
      "" if token is None else f"; it has no token {token!r}"
  special = set(getattr(tokenizer, "added_tokens_decoder", {})) | set(tokenizer.all_special_ids)
  if 0 <= token_id < len(tokenizer) and token_id not in special:
    piece = tokenizer.convert_ids_to_tokens(token_id)
    raise ValueError(f"config.json: {key}={token_id} is the tokenizer's ordinary text token {piece!r}, which would "
                     f"turn that text into image slots{theirs}")
  if token is not None:
    raise ValueError(f"config.json: {key}={token_id} does not match the tokenizer{theirs}")


class DecoderReadout:
  """The decoder facts every family's config answers the same way (a base of their frozen dataclasses, which
  hold the decoder's `TextConfig` as `text`): its layer count and its RoPE axes (1, or 3 for M-RoPE)."""

  ROPE_AXES: ClassVar[int] = 1

  @property
  def num_layers(self) -> int:
    return self.text.num_layers  # decoder layers (where prune points may sit)

  @property
  def rope_axes(self) -> int:
    return self.ROPE_AXES


class DynamicResolution(DecoderReadout):
  """The readout of a family whose visual token count depends on the image (AnyRes crops, dynamic resolution):
  no count per image and no single token grid; each image's own grid lives in the batch's `VisualLayout`."""

  @property
  def visual_tokens_per_image(self) -> None:
    return None

  @property
  def grid(self) -> None:
    return None


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """A Llama-family decoder (Llama, SmolLM2, Vicuna, Mistral-style GQA; Qwen2 via `attention_bias`)."""

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  # Hashable form of HF's rope_scaling dict: (("rope_type", "llama3"), ("factor", 8.0), ...).
  rope_scaling: tuple[tuple[str, Any], ...] | None = None
  # M-RoPE (Qwen2-VL family): how many of the Dh/2 rotary frequencies each of the (t, row, col) axes drives.
  mrope_section: tuple[int, ...] | None = None
  max_position_embeddings: int = 4096
  tie_word_embeddings: bool = False
  attention_bias: bool = False
  mlp_bias: bool = False
  bos_token_id: int | None = None
  eos_token_id: int | tuple[int, ...] | None = None
  pad_token_id: int | None = None

  @classmethod
  def from_hf(cls, d: Mapping[str, Any]) -> TextConfig:
    hidden = d["hidden_size"]
    heads = d["num_attention_heads"]
    scaling = d.get("rope_scaling") or d.get("rope_parameters")
    theta = get_first(d, "rope_theta", default=None)
    if theta is None and isinstance(scaling, Mapping):
      theta = scaling.get("rope_theta")
    mrope = None
    if isinstance(scaling, Mapping):
      mrope = scaling.get("mrope_section")
      scaling = {k: v for k, v in scaling.items() if k not in ("rope_theta", "mrope_section", "mrope_interleaved")}
      if scaling.get("rope_type", scaling.get("type")) == "mrope":
        scaling = {k: v for k, v in scaling.items() if k not in ("rope_type", "type")}
      rope_type = scaling.get("rope_type", scaling.get("type", "default"))
      scaling = None if rope_type == "default" else tuple(sorted(
          (k, tuple(v) if isinstance(v, list) else v) for k, v in scaling.items()))
    eos = d.get("eos_token_id")
    return cls(
        vocab_size=d["vocab_size"],
        hidden_size=hidden,
        intermediate_size=d["intermediate_size"],
        num_layers=d["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=get_first(d, "num_key_value_heads", default=heads),
        head_dim=get_first(d, "head_dim", default=hidden // heads),
        rms_norm_eps=get_first(d, "rms_norm_eps", default=1e-6),
        rope_theta=float(theta if theta is not None else 10000.0),
        rope_scaling=scaling,
        mrope_section=tuple(mrope) if mrope else None,
        max_position_embeddings=get_first(d, "max_position_embeddings", default=4096),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        attention_bias=bool(d.get("attention_bias", False)),
        mlp_bias=bool(d.get("mlp_bias", False)),
        bos_token_id=d.get("bos_token_id"),
        eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        pad_token_id=d.get("pad_token_id"),
    )


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  """A ViT vision tower's shape (CLIP, SigLIP); a family's tower config subclasses it with its own defaults."""

  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  image_size: int
  patch_size: int
  num_channels: int = 3
  layer_norm_eps: float = 1e-5
  hidden_act: str = "quick_gelu"

  @property
  def grid(self) -> tuple[int, int]:
    side = self.image_size // self.patch_size
    return side, side

  @property
  def num_patches(self) -> int:
    return self.grid[0] * self.grid[1]

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @classmethod
  def from_hf(cls, d: Mapping[str, Any]):
    """A `vision_config` dict; absent optional keys take this class's defaults."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    return cls(hidden_size=d["hidden_size"], intermediate_size=d["intermediate_size"],
               num_layers=d["num_hidden_layers"], num_heads=d["num_attention_heads"], image_size=d["image_size"],
               patch_size=d["patch_size"], num_channels=d.get("num_channels", defaults["num_channels"]),
               layer_norm_eps=d.get("layer_norm_eps", defaults["layer_norm_eps"]),
               hidden_act=d.get("hidden_act", defaults["hidden_act"]))
