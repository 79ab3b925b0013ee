"""Hugging Face `hidden_act` names -> JAX functions, one table for every tower and projector."""

from __future__ import annotations

import jax

ACTIVATIONS = {
    "silu": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
}


def activation(name: str, key: str = "hidden_act"):
  """The function for `name`; one line naming the config key for a name not in the table."""
  if name not in ACTIVATIONS:
    raise ValueError(f"config.json: {key} {name!r} is not supported ({', '.join(ACTIVATIONS)})")
  return ACTIVATIONS[name]
