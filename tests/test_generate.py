"""Cached greedy decode against uncached recompute, and one compile per length bucket."""

from __future__ import annotations

import numpy as np
from conftest import tiny_pixels, tiny_prompt

from jaxprune.generate import Generator, pad_batch, prefill

STEPS = 16


def test_cached_decode_equals_uncached_recompute(tiny_llava_jax):
  model = tiny_llava_jax.model
  prompts = [tiny_prompt(3, 4, seed=21), tiny_prompt(9, 2, seed=22)]
  pixels = tiny_pixels(2, seed=7)
  gen = Generator(model, max_new_tokens=STEPS, eos_ids=(), pad_id=0)
  out = gen(pad_batch(prompts, pad_id=0, multiple=8, pixels=pixels), keep_logits=True)
  tokens, logits = np.asarray(out["tokens"]), np.asarray(out["logits"])
  for step in range(STEPS):
    # Recompute from scratch: the prompt plus everything generated so far, no cache.
    seqs = [p + tokens[i, :step].tolist() for i, p in enumerate(prompts)]
    batch = pad_batch(seqs, pad_id=0, multiple=32, pixels=pixels)  # 2 buckets, 2 compiles (padding is masked)
    ref, _, _, _ = prefill(model, (batch.ids, batch.valid, batch.pixels, None), extra_slots=0)
    ref = np.asarray(ref)
    assert np.abs(logits[:, step] - ref).max() <= 1e-4, step
    np.testing.assert_array_equal(tokens[:, step], ref.argmax(-1))


def test_one_compile_per_bucket(tiny_llava_jax):
  gen = Generator(tiny_llava_jax.model, max_new_tokens=4, eos_ids=(2,), pad_id=0)
  run = lambda prompts, seed: gen(pad_batch(prompts, pad_id=0, multiple=32, pixels=tiny_pixels(len(prompts), seed)))
  run([tiny_prompt(2, 3, seed=1), tiny_prompt(5, 5, seed=2)], 0)  # lengths 22 and 27 -> bucket 32
  assert gen.compiles == 1
  run([tiny_prompt(8, 4, seed=3), tiny_prompt(1, 1, seed=4)], 1)  # new question, new image, same bucket
  run([tiny_prompt(6, 9, seed=5), tiny_prompt(3, 3, seed=6)], 2)
  assert gen.compiles == 1
  run([tiny_prompt(20, 5, seed=7), tiny_prompt(3, 3, seed=8)], 3)  # 42 tokens -> bucket 64
  assert gen.compiles == 2
  run([tiny_prompt(25, 5, seed=9), tiny_prompt(3, 30, seed=10)], 4)
  assert gen.compiles == 2


def test_eos_stops_and_pads(tiny_llava_jax):
  model = tiny_llava_jax.model
  batch = pad_batch([tiny_prompt(3, 3, seed=31)], pad_id=0, multiple=8, pixels=tiny_pixels(1))
  free = np.asarray(Generator(model, max_new_tokens=8, eos_ids=(), pad_id=0)(batch)["tokens"])[0]
  eos = int(free[2])  # pretend the third greedy token is EOS
  stopped = np.asarray(Generator(model, max_new_tokens=8, eos_ids=(eos,), pad_id=0)(batch)["tokens"])[0]
  first = free.tolist().index(eos)
  np.testing.assert_array_equal(stopped[:first + 1], free[:first + 1])
  assert (stopped[first + 1:] == 0).all()
