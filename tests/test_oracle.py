"""`oracle` / `anti-oracle`: the ground-truth bounds, available only when the task gives relevance per slot."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_NV, tiny_pixels, tiny_prompt

from jaxprune.generate import Generator, pad_batch
from jaxprune.prune.pipeline import Pruner
from jaxprune.prune.plan import PlanError
from jaxprune.prune.select import kept_map

RELEVANCE = frozenset({"relevance"})


def _kept(loaded, plan, relevance):
  prompts = [tiny_prompt(2, 5, seed=1), tiny_prompt(4, 3, seed=2)]
  batch = pad_batch(prompts, pad_id=0, multiple=16, pixels=tiny_pixels(2, seed=3)).replace(relevance=relevance)
  out = Generator(loaded.model, max_new_tokens=1, eos_ids=(), pad_id=0)(
      batch, prune_points_fn=Pruner.build(plan, loaded.config, RELEVANCE))
  return np.asarray(kept_map(out["kept"], TINY_NV))


def test_oracle_keeps_the_relevant_cells_first_and_anti_oracle_drops_them_first(tiny_llava_jax):
  rng = np.random.RandomState(0)
  relevance = np.zeros((2, TINY_NV), np.float32)
  relevance[0, [1, 5, 6]] = 1
  relevance[1, rng.choice(TINY_NV, 4, replace=False)] = 1
  for layer in (0, 2):
    kept = _kept(tiny_llava_jax, f"oracle@{layer}:5", relevance)
    assert kept.sum(axis=1).tolist() == [5, 5]
    assert np.all(kept[relevance > 0])  # every relevant cell survives, then random ones fill the budget
    kept = _kept(tiny_llava_jax, f"anti-oracle@{layer}:{TINY_NV - 4}", relevance)
    assert not np.any(kept[1][relevance[1] > 0])  # the 4 relevant cells go first
    assert kept[0].sum() == TINY_NV - 4 and not np.all(kept[0][relevance[0] > 0])
  # exactly the mask's cells at keep = number of relevant cells
  kept = _kept(tiny_llava_jax, "oracle@1:3", relevance)
  np.testing.assert_array_equal(np.flatnonzero(kept[0]), [1, 5, 6])


def test_oracle_needs_a_task_with_relevance(tiny_llava_jax):
  with pytest.raises(PlanError) as e:
    Pruner.build("oracle@0:4", tiny_llava_jax.config)
  assert "needs the signal 'relevance'" in str(e.value) and "\n" not in str(e.value)
