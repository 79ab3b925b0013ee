"""Scaled dot-product attention shared by the decoder and the vision tower.

Everywhere the numerics are `jax.nn.dot_product_attention`'s (float32 logits and softmax, GQA by grouping).
On CPU, XLA lowers it to one [B, H, T, S] score tensor: for a 640-token prefill that is far larger than the
caches, and a causal mask still computes the upper triangle it then throws away. So on CPU long queries run in
static blocks of at most `QUERY_BLOCK` rows: each block's scores stay in cache, and with `causal_prefix` a block reads
only the keys up to its last row (about half the score FLOPs of a prefill). `benchmarks/attention_cpu.py`
measures the gain. On GPU/TPU the call is left whole for XLA or a fused kernel to handle.

`IMPLEMENTATION` picks the path at trace time: None (default) = blocked on CPU, `jax.nn.dot_product_attention`'s
own choice elsewhere; "blocked" forces blocks (a CPU run on a GPU machine); "xla" / "cudnn" are passed to
`jax.nn.dot_product_attention(implementation=...)` unblocked (`benchmarks/prefill.py --attention cudnn`).

Shapes: B batch, T queries, S keys, H query heads, G kv heads, Dh head dim.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

QUERY_BLOCK = 64  # swept 32-256 on 2 CPU cores (benchmarks/attention_cpu.py shapes): 64 was fastest or tied
IMPLEMENTATIONS = (None, "blocked", "xla", "cudnn")
IMPLEMENTATION: str | None = None


def blocked_on(backend: str | None = None) -> bool:
  """Whether `attend` splits long queries into blocks (by default on the CPU backend only)."""
  if IMPLEMENTATION is not None:
    return IMPLEMENTATION == "blocked"
  return (backend or jax.default_backend()) == "cpu"


def set_implementation(name: str | None) -> None:
  """Choose the attention path for programs traced from now on ("auto"/None, "blocked", "xla", "cudnn")."""
  global IMPLEMENTATION
  name = None if name in (None, "auto") else name
  if name not in IMPLEMENTATIONS:
    raise ValueError(f"attention implementation {name!r}: expected one of auto, blocked, xla, cudnn")
  IMPLEMENTATION = name


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None, *,
           causal_prefix: bool = False, block: int | None = None) -> jax.Array:
  """q [B, T, H, Dh], k/v [B, S, G, Dh], mask [B, 1, T, S] bool or None -> [B, T, H, Dh].

  causal_prefix: query row i sits at key slot i and the mask already hides every slot > i (a causal prefill,
  possibly into a longer cache), so a block of rows never needs keys past its last row. Fully masked rows
  (left padding) come out finite, never NaN.
  """
  block = block or (QUERY_BLOCK if blocked_on() else None)
  t = q.shape[1]
  if block is None or t < 2 * block:
    fused = IMPLEMENTATION if IMPLEMENTATION in ("xla", "cudnn") else None
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=fused)
  size = -(-t // -(-t // block))  # equal blocks of at most `block` rows (257 -> 5 x 52, not 4 x 64 + 1)
  outputs = []
  for start in range(0, t, size):  # static slices: one fused program
    stop = min(start + size, t)
    keys_end = stop if causal_prefix else k.shape[1]
    block_mask = None if mask is None else mask[:, :, start:stop, :keys_end]
    outputs.append(jax.nn.dot_product_attention(q[:, start:stop], k[:, :keys_end], v[:, :keys_end],
                                                mask=block_mask))
  return jnp.concatenate(outputs, axis=1)  # [B, T, H, Dh]
