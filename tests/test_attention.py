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


def test_tiny_llava_matches_transformers_through_blocks(tiny_blocks, tiny_llava, tiny_llava_jax):
  import test_llava_parity
  assert attention.blocked_on()  # the path under test is the one these tests take
  test_llava_parity.test_logits_match_transformers(tiny_llava, tiny_llava_jax)
  test_llava_parity.test_vision_tower_and_cls_attention_match(tiny_llava, tiny_llava_jax)
  test_llava_parity.test_batch_of_different_lengths_equals_each_alone(tiny_llava, tiny_llava_jax)


def test_implementation_switch():
  try:
    attention.set_implementation("xla")
    assert not attention.blocked_on("cpu")
    attention.set_implementation("blocked")
    assert attention.blocked_on("gpu")
    with pytest.raises(ValueError, match="attention implementation 'flash'"):
      attention.set_implementation("flash")
  finally:
    attention.set_implementation("auto")
  assert attention.IMPLEMENTATION is None and attention.blocked_on("cpu")
