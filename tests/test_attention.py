"""The CPU query-blocked attention path: equal to one `jax.nn.dot_product_attention` call, and the models
built on it still match transformers when every sequence is long enough to be split into blocks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.models import attention
from jaxprune.models.attention import attend

CASES = {  # name: (B, T, S, H, G, causal prefix, left padding of sequence 0)
    "causal prefill, GQA, left padding": (3, 37, 37, 6, 2, True, 5),
    "causal prefill into a longer cache": (2, 29, 40, 4, 4, True, 3),
    "bidirectional (vision tower)": (2, 33, 33, 4, 4, False, 0),
    "one query row per block": (1, 9, 9, 2, 1, True, 0),
}


@pytest.mark.parametrize("block", [1, 4, 8])
@pytest.mark.parametrize("case", CASES)
def test_blocked_equals_single_call(case, block):
  b, t, s, h, g, causal, padding = CASES[case]
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.standard_normal((b, t, h, 16)), jnp.float32)
  k, v = (jnp.asarray(rng.standard_normal((b, s, g, 16)), jnp.float32) for _ in range(2))
  valid = np.ones((b, s), bool)
  valid[0, :padding] = False
  if causal:  # query i at slot i; slots >= t are empty cache slots
    mask = np.tril(np.ones((t, s), bool)) & (np.arange(s) < t)[None]
    mask = jnp.asarray(mask[None, None] & valid[:, None, None, :])  # [B, 1, T, S]
  else:
    mask = None
  want = np.asarray(jax.nn.dot_product_attention(q, k, v, mask=mask))
  got = np.asarray(attend(q, k, v, mask, causal_prefix=causal, block=block))
  assert got.shape == want.shape and np.isfinite(got).all()
  seen = np.ones((b, t), bool) if mask is None else np.asarray(mask).any(-1)[:, 0]  # rows with a visible key
  assert np.abs(got - want)[seen].max() <= 1e-5
  assert seen.sum() == b * t - padding  # the test compares every real row


def test_cpu_uses_blocks():
  assert attention.blocked_on("cpu") and not attention.blocked_on("gpu") and not attention.blocked_on("tpu")


@pytest.fixture
def tiny_blocks(monkeypatch):
  """Every sequence of the tiny models is longer than 2 blocks; compiled programs of other tests are dropped."""
  monkeypatch.setattr(attention, "QUERY_BLOCK", 4)
  jax.clear_caches()
  yield
  jax.clear_caches()


def test_tiny_llava_matches_transformers_through_blocks(tiny_blocks, llava_case):
  """The conformance suite's LLaVA logits (one image, several images), batch = alone, and the CLIP tower."""
  import test_llava_parity
  from families.base import Runs
  from families.test_conformance import check_batch_equals_each_alone, check_logits, check_several_images
  assert attention.blocked_on()  # the path under test is the one these tests take
  check_logits(llava_case, llava_case.batch_samples())
  check_several_images(llava_case)
  check_batch_equals_each_alone(llava_case, Runs(llava_case), None)  # its own Runs: no result computed elsewhere
  test_llava_parity.test_vision_tower_and_cls_attention_match((llava_case.hf, llava_case.path), llava_case.loaded)


def _prefill_operands(b, t, h, g, dh, padding, dtype=jnp.float32):
  """Random q/k/v and the causal & key-padding mask `jaxprune.core.decoding.prefill` builds."""
  rng = np.random.default_rng(1)
  q = jnp.asarray(rng.standard_normal((b, t, h, dh)), dtype)
  k, v = (jnp.asarray(rng.standard_normal((b, t, g, dh)), dtype) for _ in range(2))
  valid = np.ones((b, t), bool)
  valid[0, :padding] = False
  mask = jnp.asarray(np.tril(np.ones((t, t), bool))[None, None] & valid[:, None, None, :])  # [B, 1, T, T]
  return q, k, v, mask, valid


@pytest.fixture
def pallas_forced():
  attention.set_implementation("pallas")
  yield
  attention.set_implementation("auto")


# platform: (T, block the kernel needs) -- TPU kv blocks are 128-multiples, the Triton kernel takes 16 and up
PALLAS = {"tpu": 128, "gpu": 32}


@pytest.mark.parametrize("causal", [True, False], ids=["causal prefill, GQA, left padding", "no mask (tower)"])
@pytest.mark.parametrize("platform", PALLAS)
def test_pallas_kernel_in_interpret_mode_equals_xla(platform, causal, pallas_forced):
  """Each backend's Pallas flash kernel, run in interpret mode on CPU, against jax.nn.dot_product_attention."""
  reason = attention.pallas_kernels()[platform]
  if reason is not None:
    pytest.skip(f"the {platform} Pallas kernel does not import in this jax: {reason}")
  q, k, v, mask, valid = _prefill_operands(2, PALLAS[platform], 4, 2, 32, padding=7)
  if not causal:
    mask, valid = None, np.ones_like(valid)
  assert attention.choose(q, k, mask, causal_prefix=causal, backend=platform) == f"pallas-{platform}"
  want = np.asarray(jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla"))
  got = np.asarray(jax.jit(lambda q, k, v, m: attend(q, k, v, m, causal_prefix=causal, backend=platform))(
      q, k, v, mask))
  assert got.shape == want.shape and np.isfinite(got).all()
  assert np.abs(got - want)[valid].max() <= 2e-5  # every real row; padding rows see no key on the XLA path


def test_pallas_leaves_decode_and_other_masks_to_xla(pallas_forced):
  """One query row (decode) or a mask that is not causal + key padding: the kernels cannot express them."""
  q, k, v, mask, valid = _prefill_operands(2, 128, 4, 2, 32, padding=7)
  step_q, step_mask = q[:, -1:], mask[:, :, -1:]  # [B, 1, H, Dh], [B, 1, 1, S]: a decode step
  assert attention.choose(step_q, k, step_mask, backend="tpu") == "xla"
  assert attention.choose(q, k, mask, causal_prefix=False, backend="tpu") == "xla"
  assert attention.choose(q[:, :100], k, mask[:, :, :100], causal_prefix=True, backend="tpu") == "xla"  # T != S
  want = np.asarray(jax.nn.dot_product_attention(step_q, k, v, mask=step_mask))
  got = np.asarray(attend(step_q, k, v, step_mask, backend="tpu"))
  assert np.abs(got - want).max() <= 1e-6


def test_default_choice_per_backend():
  q, k, _, mask, _ = _prefill_operands(1, 128, 4, 2, 32, padding=0)
  q16, k16 = q.astype(jnp.bfloat16), k.astype(jnp.bfloat16)
  assert attention.choose(q, k, mask, causal_prefix=True, backend="cpu") == "blocked"
  assert attention.choose(q16, k16, mask, causal_prefix=True, backend="gpu") == "cudnn"  # bf16 prefill
  assert attention.choose(q, k, mask, causal_prefix=True, backend="gpu") == "xla"  # fp32 parity work
  assert attention.choose(q16[:, :1], k16, mask[:, :, :1], backend="gpu") == "xla"  # decode: one row
  big_head = jnp.zeros((1, 128, 4, 256), jnp.bfloat16)
  assert attention.choose(big_head, big_head, mask, causal_prefix=True, backend="gpu") == "xla"
  expected_tpu = "pallas-tpu" if attention.pallas_kernels()["tpu"] is None else "xla"
  assert attention.choose(q, k, mask, causal_prefix=True, backend="tpu") == expected_tpu
  assert attention.choose(q[:, :96], k[:, :96], mask[:, :, :96, :96], causal_prefix=True, backend="tpu") == "xla"


def test_implementation_switch():
  try:
    attention.set_implementation("xla")
    assert not attention.blocked_on("cpu")
    attention.set_implementation("blocked")
    assert attention.blocked_on("gpu")
    attention.set_implementation("pallas")
    assert not attention.blocked_on("cpu")
    with pytest.raises(ValueError, match="attention implementation 'flash'"):
      attention.set_implementation("flash")
  finally:
    attention.set_implementation("auto")
  assert attention.IMPLEMENTATION is None and attention.blocked_on("cpu")
