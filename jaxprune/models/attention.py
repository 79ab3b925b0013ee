"""Scaled dot-product attention shared by the decoder and the vision tower: one entry point, a kernel per backend.

Everywhere the numerics are `jax.nn.dot_product_attention`'s (float32 logits and softmax, GQA by grouping); the
kernels below compute the same function and are tested against it (tests/test_attention.py).

Which path `attend` takes (chosen at trace time from the backend, shapes and dtype; `choose` says which):
- CPU: query blocks of at most `QUERY_BLOCK` rows ("blocked"). XLA's CPU lowering of one call builds a
  [B, H, T, S] score tensor far larger than the caches, and a causal mask still computes the upper triangle;
  each block's scores stay in cache, and with `causal_prefix` a block reads only the keys up to its last row
  (about half the score FLOPs of a prefill). `benchmarks/attention_cpu.py` measures the gain.
- GPU: cuDNN's fused flash attention (`jax.nn.dot_product_attention(implementation="cudnn")`) for multi-row
  bf16/fp16 queries with a head dim cuDNN takes (a multiple of 8, <= 128); XLA otherwise (float32 parity work,
  and the one-row decode step, which is memory-bound and where XLA's fusion is already fine).
- TPU: the Pallas flash-attention kernel (`jax.experimental.pallas.ops.tpu.flash_attention`) when it imports and
  the sequence splits into 128-multiple blocks; XLA otherwise.
The Pallas kernels (TPU flash, and the Triton flash kernel `jax.experimental.pallas.ops.gpu.attention.mha` when
asked for on GPU) take a mask only as "causal" plus per-token segment ids, so they serve two mask shapes:
no mask (the vision tower), and `causal_prefix` with T == S, whose mask must be `tril & key_valid[:, None, :]`
(what `jaxprune.core.decoding.prefill` builds); key_valid is read back from the mask's last row and padding
gets segment 0. Padding rows then attend to padding keys, where the XLA path sees no key at all: both are
finite, and no real row reads them. Any other mask goes to XLA.

`IMPLEMENTATION` forces a path for programs traced from now on: None (default) = the choice above; "blocked"
(a CPU run on a GPU machine); "xla" / "cudnn" (passed to `jax.nn.dot_product_attention`, unblocked; cudnn
errors surface instead of falling back); "pallas" (the backend's Pallas kernel where the mask allows, XLA
elsewhere; off its own platform a Pallas kernel runs in interpret mode, which is how CPU tests cover it).

Shapes: B batch, T queries, S keys, H query heads, G kv heads, Dh head dim.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp

QUERY_BLOCK = 64  # swept 32-256 on 2 CPU cores (benchmarks/attention_cpu.py shapes): 64 was fastest or tied
IMPLEMENTATIONS = (None, "blocked", "xla", "cudnn", "pallas")
IMPLEMENTATION: str | None = None
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
CUDNN_MAX_HEAD_DIM = 128  # 256 on Hopper and later; 128 holds on every cuDNN-flash GPU
TPU_FLASH_BLOCKS = (512, 256, 128)  # the TPU kernel's kv blocks must be multiples of 128
GPU_FLASH_BLOCKS = (128, 64, 32, 16)


def blocked_on(backend: str | None = None) -> bool:
  """Whether `attend` splits long queries into blocks (by default on the CPU backend only)."""
  if IMPLEMENTATION is not None:
    return IMPLEMENTATION == "blocked"
  return (backend or jax.default_backend()) == "cpu"


def set_implementation(name: str | None) -> None:
  """Choose the attention path for programs traced from now on ("auto"/None, "blocked", "xla", "cudnn", "pallas")."""
  global IMPLEMENTATION
  name = None if name in (None, "auto") else name
  if name not in IMPLEMENTATIONS:
    raise ValueError(f"attention implementation {name!r}: expected one of auto, blocked, xla, cudnn, pallas")
  IMPLEMENTATION = name


# ------------------------------------------------------------------------------------------ kernel choice


@functools.cache
def pallas_kernels() -> dict[str, str | None]:
  """Which Pallas attention kernels import in this jax: {"tpu": reason or None, "gpu": ...} (None = available)."""
  found = {}
  for platform, module in (("tpu", "jax.experimental.pallas.ops.tpu.flash_attention"),
                           ("gpu", "jax.experimental.pallas.ops.gpu.attention")):
    try:
      __import__(module)
      found[platform] = None
    except Exception as e:  # an import of experimental code can fail in many ways; record why
      found[platform] = f"{module}: {type(e).__name__}: {e}"
  return found


def _divisor_block(n: int, blocks: tuple[int, ...]) -> int | None:
  return next((b for b in blocks if n % b == 0), None)


def _segment_form(t: int, s: int, mask, causal_prefix: bool) -> bool:
  """Whether the mask is one a Pallas kernel expresses: none, or causal prefill with per-key padding."""
  return mask is None or (causal_prefix and t == s)


def choose(q: jax.Array, k: jax.Array, mask: jax.Array | None = None, *, causal_prefix: bool = False,
           backend: str | None = None) -> str:
  """The path `attend` takes for these operands: "blocked", "xla", "cudnn", "pallas-tpu" or "pallas-gpu"."""
  backend = backend or jax.default_backend()
  t, s, dh = q.shape[1], k.shape[1], q.shape[-1]
  platform = "gpu" if backend == "gpu" else "tpu"  # off both, the TPU kernel (interpret mode)
  blocks = GPU_FLASH_BLOCKS if platform == "gpu" else TPU_FLASH_BLOCKS
  pallas = f"pallas-{platform}"
  pallas_ok = (_segment_form(t, s, mask, causal_prefix) and pallas_kernels()[platform] is None
               and _divisor_block(t, blocks) is not None and _divisor_block(s, blocks) is not None)
  if IMPLEMENTATION in ("blocked", "xla", "cudnn"):
    return IMPLEMENTATION
  if IMPLEMENTATION == "pallas":
    return pallas if pallas_ok else "xla"
  if backend == "cpu":
    return "blocked"
  if backend == "gpu":
    cudnn_ok = (t > 1 and q.dtype in CUDNN_DTYPES and k.dtype == q.dtype and dh % 8 == 0
                and dh <= CUDNN_MAX_HEAD_DIM)
    return "cudnn" if cudnn_ok else "xla"
  if backend == "tpu":
    return pallas if pallas_ok else "xla"
  return "xla"


# ------------------------------------------------------------------------------------------ entry point


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None, *,
           causal_prefix: bool = False, block: int | None = None, backend: str | None = None) -> jax.Array:
  """q [B, T, H, Dh], k/v [B, S, G, Dh], mask [B, 1, T, S] bool or None -> [B, T, H, Dh].

  causal_prefix: query row i sits at key slot i and the mask hides every slot > i (a causal prefill, possibly
  into a longer cache), so a block of rows never needs keys past its last row; when T == S the mask must be
  causal & per-key padding, nothing else (the Pallas kernels rebuild it from that). Fully masked rows (left
  padding) come out finite, never NaN. block: force query blocks of this size (tests, benchmarks).
  backend: choose as if on this backend (tests; a Pallas kernel off its platform runs in interpret mode).
  """
  path = "blocked" if block else choose(q, k, mask, causal_prefix=causal_prefix, backend=backend)
  if path == "blocked":
    return _blocked(q, k, v, mask, causal_prefix, block or QUERY_BLOCK)
  if path in ("pallas-tpu", "pallas-gpu"):
    return _pallas(q, k, v, mask, causal_prefix, platform=path[-3:])
  if path == "cudnn":
    causal = causal_prefix and q.shape[1] == k.shape[1]  # lets cuDNN skip tiles above the diagonal
    if IMPLEMENTATION == "cudnn":
      return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal, implementation="cudnn")
    try:  # shape/version checks run at trace time: an unsupported case falls back to XLA, once said
      return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal, implementation="cudnn")
    except (NotImplementedError, ValueError, RuntimeError) as e:
      _warn_once(f"cuDNN attention unavailable for q {q.shape} {q.dtype} ({type(e).__name__}: {e}); using XLA")
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla" if path == "xla" else None)


@functools.cache
def _warn_once(message: str) -> None:
  warnings.warn(message, stacklevel=3)


def _blocked(q, k, v, mask, causal_prefix: bool, block: int) -> jax.Array:
  t = q.shape[1]
  if t < 2 * block:
    return jax.nn.dot_product_attention(q, k, v, mask=mask)
  size = -(-t // -(-t // block))  # equal blocks of at most `block` rows (257 -> 5 x 52, not 4 x 64 + 1)
  outputs = []
  for start in range(0, t, size):  # static slices: one fused program
    stop = min(start + size, t)
    keys_end = stop if causal_prefix else k.shape[1]
    block_mask = None if mask is None else mask[:, :, start:stop, :keys_end]
    outputs.append(jax.nn.dot_product_attention(q[:, start:stop], k[:, :keys_end], v[:, :keys_end],
                                                mask=block_mask))
  return jnp.concatenate(outputs, axis=1)  # [B, T, H, Dh]


def _pallas(q, k, v, mask, causal_prefix: bool, *, platform: str) -> jax.Array:
  """A Pallas flash kernel; `choose` has checked that the mask is none or causal + key padding, T == S."""
  b, t, h, dh = q.shape
  s, g = k.shape[1], k.shape[2]
  if g != h:  # the kernels take one kv head per query head
    k, v = (jnp.repeat(x, h // g, axis=2) for x in (k, v))  # [B, S, H, Dh]
  causal = mask is not None and causal_prefix
  key_valid = None if mask is None else jnp.broadcast_to(mask, (b, 1, t, s))[:, 0, -1, :]  # [B, S]: the last
  # causal row sees every real key
  interpret = jax.default_backend() != platform
  scale = dh ** -0.5
  if platform == "gpu":
    from jax.experimental.pallas.ops.gpu import attention as gpu_flash
    bq, bk = _divisor_block(t, GPU_FLASH_BLOCKS), _divisor_block(s, GPU_FLASH_BLOCKS)
    segments = None if key_valid is None else key_valid.astype(jnp.int32)
    return gpu_flash.mha(q, k, v, segments, sm_scale=scale, causal=causal,
                         block_sizes=gpu_flash.BlockSizes(block_q=bq, block_k=bk), interpret=interpret)
  from jax.experimental.pallas import tpu as pltpu
  from jax.experimental.pallas.ops.tpu import flash_attention as tpu_flash
  bq, bk = _divisor_block(t, TPU_FLASH_BLOCKS), _divisor_block(s, TPU_FLASH_BLOCKS)
  blocks = tpu_flash.BlockSizes(block_q=bq, block_k_major=bk, block_k=bk, block_b=1)
  segments = None
  if key_valid is not None:
    ids = key_valid.astype(jnp.int32)
    segments = tpu_flash.SegmentIds(q=ids, kv=ids)
  q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))  # the TPU kernel is [B, H, T, Dh]
  run = lambda: tpu_flash.flash_attention(q, k, v, segment_ids=segments, causal=causal, sm_scale=scale,
                                          block_sizes=blocks)
  if interpret:
    with pltpu.force_tpu_interpret_mode():
      out = run()
  else:
    out = run()
  return out.transpose(0, 2, 1, 3)  # [B, T, H, Dh]
