"""The SigLIP vision tower (transformers' `SiglipVisionModel`) in Flax NNX, shared by the families that use it
(LLaVA-OneVision, Gemma 3).

API (stable; other families import it):
- `SiglipVisionConfig.from_hf(vision_config_dict)`: frozen config (hidden_size, intermediate_size, num_layers,
  num_heads, image_size, patch_size, ...; `grid` = (image_size // patch_size,) * 2, `num_patches`).
- `SiglipVisionTower(cfg, num_layers_used=None, *, dtype, rngs)`: builds the patch "conv" (one matmul over
  flattened patches), learned position embeddings, `num_layers_used` pre-LN encoder layers (default all) and
  `post_layernorm`. No [CLS] token and no pooling head (`vision_use_head` weights map to nothing).
- `tower(pixels [B, C, S, S], feature_layers=None) -> SiglipOutputs`:
    hidden [B, Np, Dv * len(feature_layers)]: `feature_layers=None` gives transformers' `last_hidden_state`
      (post_layernorm of the last built layer, what Gemma 3 reads); a tuple of `hidden_states` indexes
      (0 = embeddings, i = after layer i, negative from the config's full depth, -1 = last layer; no
      post_layernorm) gives those states concatenated on the feature axis (what LLaVA-OneVision reads);
    importance [B, Np] float32: the attention each patch *receives* in the deepest layer run, summed over heads
      and averaged over query patches (an image's patches sum to the head count); SigLIP has no [CLS], so this is
      the signal Qwen2.5-VL's tower gives `clsattn`/`visionzip` (attention received, VisPruner-style);
      None when no encoder layer runs (feature layer 0);
    keys [B, Np, Dh] float32: that layer's keys averaged over heads (VisionZip's similarity); None likewise.
- `siglip_weight_rules(hf_prefix, ours)`: the weight-map rules `(regex, target, transform)` for a tower whose HF
  keys start with the regex `hf_prefix` (e.g. r"(?:model\\.)?vision_tower\\.vision_model\\.") and whose NNX path
  starts with `ours` (e.g. "vision_tower."). Layers past `num_layers_used` and the head are the caller's
  optional targets (`optional_targets(ours)`).

Shapes: B images (or crops), C channels, S image side, p patch side, Np = (S/p)^2 patches, Dv hidden, H heads,
Dh head dim.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.models.activations import activation
from jaxprune.models.attention import attend
from jaxprune.models.config import ViTConfig
from jaxprune.models.layers import linear
from jaxprune.models.weights import Rule
from jaxprune.models.weights import linear as torch_linear


@dataclasses.dataclass(frozen=True)
class SiglipVisionConfig(ViTConfig):
  """SigLIP's defaults (no [CLS]; tanh GELU)."""

  layer_norm_eps: float = 1e-6
  hidden_act: str = "gelu_pytorch_tanh"

  @property
  def patch_dim(self) -> int:
    return self.num_channels * self.patch_size ** 2

  def layer_index(self, hidden_state_index: int) -> int:
    """An HF `hidden_states` index (negative allowed) -> 0..num_layers; one clear error when out of range."""
    i = hidden_state_index + self.num_layers + 1 if hidden_state_index < 0 else hidden_state_index
    if not 0 <= i <= self.num_layers:
      raise ValueError(f"config.json: vision feature layer {hidden_state_index} is outside the tower's "
                       f"{self.num_layers} layers")
    return i

  def flops(self, layers: int | None = None) -> int:
    """Matmul FLOPs of one image (crop) through the embedding and `layers` encoder layers (default all), plus
    the deepest layer's q.k once more for the attention-received signal."""
    n, d, f = self.num_patches, self.hidden_size, self.intermediate_size
    layers = self.num_layers if layers is None else layers
    per_layer = 2 * n * d * 4 * d + 2 * 2 * n * d * f + 2 * 2 * n * n * d  # qkvo, fc1+fc2, q.k and probs.v
    signal = 2 * n * n * d if layers else 0
    return 2 * n * self.patch_dim * d + layers * per_layer + signal

  @classmethod
  def from_hf(cls, d: Mapping[str, Any]) -> SiglipVisionConfig:
    config = super().from_hf(d)
    activation(config.hidden_act, "vision_config.hidden_act")  # refuse an unknown one at load
    return config


@flax.struct.dataclass
class SiglipOutputs:
  hidden: jax.Array  # [B, Np, Dv * F] selected states (see the module docstring)
  importance: jax.Array | None  # [B, Np] float32 attention received in the deepest layer run
  keys: jax.Array | None  # [B, Np, Dh] float32 that layer's keys, mean over heads


def _layer_norm(cfg: SiglipVisionConfig, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps, dtype=dtype, param_dtype=dtype, rngs=rngs)


def received_attention(q: jax.Array, k: jax.Array) -> jax.Array:
  """q, k [B, Np, H, Dh] -> [B, Np] float32: sum over heads of the mean over queries of softmax(q.k/sqrt(Dh)).
  One image at a time (lax.map), so memory holds one [H, Np, Np] block, not the whole batch's."""
  scale = q.shape[-1] ** -0.5

  def one(qk):
    qi, ki = qk
    logits = jnp.einsum("qhd,khd->hqk", qi.astype(jnp.float32), ki.astype(jnp.float32)) * scale  # [H, Np, Np]
    return jnp.mean(jnp.sum(jax.nn.softmax(logits, axis=-1), axis=0), axis=0)  # [Np]

  return jax.lax.map(one, (q, k))


class SiglipAttention(nnx.Module):

  def __init__(self, cfg: SiglipVisionConfig, *, dtype, rngs: nnx.Rngs):
    d = cfg.hidden_size
    self.q_proj, self.k_proj, self.v_proj = (linear(d, d, dtype, rngs) for _ in range(3))
    self.out_proj = linear(d, d, dtype, rngs, f32_out=True)
    self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim

  def __call__(self, x: jax.Array, signals: bool = False):
    """x [B, Np, Dv] -> (output [B, Np, Dv], importance [B, Np] | None, keys [B, Np, Dh] | None)."""
    b, n, d = x.shape
    split = lambda t: t.reshape(b, n, self.num_heads, self.head_dim)
    q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
    out = self.out_proj(attend(q, k, v).reshape(b, n, d)).astype(x.dtype)
    if not signals:
      return out, None, None
    return out, received_attention(q, k), jnp.mean(k.astype(jnp.float32), axis=2)


class SiglipEncoderLayer(nnx.Module):

  def __init__(self, cfg: SiglipVisionConfig, *, dtype, rngs: nnx.Rngs):
    self.layer_norm1 = _layer_norm(cfg, dtype, rngs)
    self.self_attn = SiglipAttention(cfg, dtype=dtype, rngs=rngs)
    self.layer_norm2 = _layer_norm(cfg, dtype, rngs)
    self.fc1 = linear(cfg.hidden_size, cfg.intermediate_size, dtype, rngs)
    self.fc2 = linear(cfg.intermediate_size, cfg.hidden_size, dtype, rngs, f32_out=True)
    self.act = activation(cfg.hidden_act)

  def __call__(self, x: jax.Array, signals: bool = False):
    attended, importance, keys = self.self_attn(self.layer_norm1(x), signals)
    x = x + attended
    x = x + self.fc2(self.act(self.fc1(self.layer_norm2(x)))).astype(x.dtype)
    return x, importance, keys


class SiglipVisionTower(nnx.Module):
  """Patch embedding + learned positions -> pre-LN encoder layers -> post_layernorm (see the module docstring)."""

  def __init__(self, cfg: SiglipVisionConfig, num_layers_used: int | None = None, *, dtype=jnp.bfloat16,
               rngs: nnx.Rngs):
    used = cfg.num_layers if num_layers_used is None else num_layers_used
    if not 0 <= used <= cfg.num_layers:
      raise ValueError(f"SigLIP tower: num_layers_used={used} outside [0, {cfg.num_layers}]")
    self.config = cfg
    self.patch_embedding = linear(cfg.patch_dim, cfg.hidden_size, dtype, rngs)
    self.position_embedding = nnx.Embed(cfg.num_patches, cfg.hidden_size, dtype=dtype, param_dtype=dtype, rngs=rngs)
    self.layers = nnx.List([SiglipEncoderLayer(cfg, dtype=dtype, rngs=rngs) for _ in range(used)])
    self.post_layernorm = _layer_norm(cfg, dtype, rngs)

  def embed(self, pixels: jax.Array) -> jax.Array:
    """pixels [B, C, S, S] -> [B, Np, Dv]: the stride-p conv as a matmul over (C, py, px)-flattened patches."""
    cfg = self.config
    b, c, s, _ = pixels.shape
    if (c, s) != (cfg.num_channels, cfg.image_size) or pixels.shape[3] != s:
      raise ValueError(f"SigLIP tower: pixels of shape {tuple(pixels.shape)}; expected [B, {cfg.num_channels}, "
                       f"{cfg.image_size}, {cfg.image_size}]")
    p, side = cfg.patch_size, cfg.grid[0]
    patches = pixels.reshape(b, c, side, p, side, p).transpose(0, 2, 4, 1, 3, 5).reshape(b, side * side, -1)
    x = self.patch_embedding(patches.astype(self.patch_embedding.kernel.dtype))  # [B, Np, Dv]
    return x + self.position_embedding.embedding[...][None].astype(x.dtype)

  def __call__(self, pixels: jax.Array, feature_layers: tuple[int, ...] | None = None) -> SiglipOutputs:
    cfg = self.config
    wanted = None if feature_layers is None else [cfg.layer_index(i) for i in feature_layers]
    deepest = len(self.layers) if wanted is None else max(wanted)
    if deepest > len(self.layers):
      raise ValueError(f"SigLIP tower: feature layer {deepest} needs {deepest} layers, {len(self.layers)} built")
    x = self.embed(pixels)
    states, importance, keys = [x], None, None
    for i, layer in enumerate(self.layers[:deepest]):
      x, imp, k = layer(x, signals=i + 1 == deepest)
      states.append(x)
      if i + 1 == deepest:
        importance, keys = imp, k
    if wanted is None:
      hidden = self.post_layernorm(x)
    else:
      hidden = jnp.concatenate([states[i] for i in wanted], axis=-1)
    return SiglipOutputs(hidden=hidden, importance=importance, keys=keys)


def patch_conv(w):
  """torch Conv2d [Dv, C, p, p] (stride = kernel) -> matmul kernel [C*p*p, Dv] over flattened patches."""
  return w.reshape(w.shape[0], -1).T


def siglip_weight_rules(hf_prefix: str, ours: str) -> tuple[Rule, ...]:
  """HF `SiglipVisionModel` keys under regex `hf_prefix` -> NNX paths under `ours` (see the module docstring)."""
  layer = hf_prefix + r"encoder\.layers\.(\d+)\."
  to = ours + r"layers.\1."
  return (
      (hf_prefix + r"embeddings\.patch_embedding\.weight", ours + "patch_embedding.kernel", patch_conv),
      (hf_prefix + r"embeddings\.patch_embedding\.bias", ours + "patch_embedding.bias", None),
      (hf_prefix + r"embeddings\.position_embedding\.weight", ours + "position_embedding.embedding", None),
      (hf_prefix + r"embeddings\.position_ids", None, None),
      (layer + r"self_attn\.(q|k|v|out)_proj\.weight", to + r"self_attn.\2_proj.kernel", torch_linear),
      (layer + r"self_attn\.(q|k|v|out)_proj\.bias", to + r"self_attn.\2_proj.bias", None),
      (layer + r"layer_norm(1|2)\.weight", to + r"layer_norm\2.scale", None),
      (layer + r"layer_norm(1|2)\.bias", to + r"layer_norm\2.bias", None),
      (layer + r"mlp\.(fc1|fc2)\.weight", to + r"\2.kernel", torch_linear),
      (layer + r"mlp\.(fc1|fc2)\.bias", to + r"\2.bias", None),
      (hf_prefix + r"post_layernorm\.weight", ours + "post_layernorm.scale", None),
      (hf_prefix + r"post_layernorm\.bias", ours + "post_layernorm.bias", None),
      (hf_prefix + r"head\..*", None, None),  # the pooling head: no VLM reads it
  )


def optional_targets(ours: str) -> tuple[str, ...]:
  """Targets a checkpoint may carry that a truncated tower does not build (layers past the one read)."""
  return (ours + "layers.",)
