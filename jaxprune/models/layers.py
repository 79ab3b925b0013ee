"""Building blocks every family shares: the one linear-layer constructor and LLaVA's two-layer projector."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.models.activations import activation


def linear(n_in: int, n_out: int, dtype: jnp.dtype, rngs: nnx.Rngs, *, bias: bool = True,
           f32_out: bool = False) -> nnx.Linear:
  """An `nnx.Linear` with weights and compute in `dtype` (kernel [in, out]).

  `f32_out` for row-parallel layers (an attention output or MLP down projection): the matmul accumulates and
  returns float32 and the caller rounds to `dtype` once, so partial sums reduced across "model" shards give a
  bf16 model the same answers under tensor parallelism as on one device (and the replicated towers compute what
  the multi-device tests measured)."""
  return nnx.Linear(n_in, n_out, use_bias=bias, dtype=dtype, param_dtype=dtype, rngs=rngs,
                    preferred_element_type=jnp.float32 if f32_out else None)


class MultimodalProjector(nnx.Module):
  """LLaVA's projector (LLaVA-1.5, LLaVA-OneVision): vision features [.., Dv * feature layers] -> linear, act,
  linear -> [.., D]. The second matmul sums in float32 and is rounded once."""

  def __init__(self, cfg, *, dtype: jnp.dtype, rngs: nnx.Rngs):
    dv, d = cfg.vision.hidden_size * len(cfg.feature_layers), cfg.text.hidden_size
    self.linear_1 = linear(dv, d, dtype, rngs, bias=cfg.projector_bias)
    self.linear_2 = linear(d, d, dtype, rngs, bias=cfg.projector_bias, f32_out=True)
    self.act = activation(cfg.projector_hidden_act)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.linear_2(self.act(self.linear_1(x))).astype(x.dtype)
