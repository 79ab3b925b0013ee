"""Methods own their facts: seeding, where their signal exists, what they read; the eval and the cost model ask
the method instead of naming it."""

from __future__ import annotations

import pytest
from conftest import tiny_llava_hf_config

from jaxprune import cost
from jaxprune.eval.grid import build_grid
from jaxprune.models.llava import LlavaConfig
from jaxprune.prune.methods import METHODS
from jaxprune.prune.plan import LayerUnavailable, PlanError, PrunePlan


@pytest.fixture(scope="module")
def cfg():
  return LlavaConfig.from_hf(tiny_llava_hf_config().to_dict())


def test_each_method_says_whether_it_is_seeded_and_where_its_signal_exists():
  assert {name for name, m in METHODS.items() if m.seeded} == {"random", "oracle", "anti-oracle"}
  for name, method in METHODS.items():
    at0, at2 = method.unavailable_at(0), method.unavailable_at(2)
    assert (at0 is None) == (method.layers != "late") and (at2 is None) == (method.layers != "zero"), name
    assert all(why is None or why.startswith(name) for why in (at0, at2))


def test_a_missing_signal_at_a_layer_is_a_typed_error_the_grid_skips(cfg):
  with pytest.raises(LayerUnavailable, match="fastv reads layer K-1's attention"):
    PrunePlan.parse("fastv@0:4").validate(cfg)
  with pytest.raises(PlanError) as other:
    PrunePlan.parse("fastv@9:4").validate(cfg)  # outside the model: not skippable
  assert not isinstance(other.value, LayerUnavailable)

  class Args:
    method, layer, keep, seed = "fastv,divprune,random", "0,2", "4", 7
  plans, notes = build_grid(Args, cfg)
  assert [str(p) for p in plans] == ["fastv@2:4", "divprune@0:4", "random@0:4[seed=7]", "random@2:4[seed=7]"]
  assert any(note.startswith("skipped fastv@0") for note in notes)
  assert any(note.startswith("skipped divprune@2") for note in notes)


def test_reads_question_follows_the_query_option():
  for text, reads in (("latesim@1:4", True), ("latesim@1:4[query=text]", False), ("embedsim@0:4", True),
                      ("fastv@1:4[query=question]", True), ("fastv@1:4", False), ("random@1:4", False)):
    stage = PrunePlan.parse(text).stages[0]
    assert METHODS[stage.method].reads_question(stage) is reads, text


def test_cost_takes_a_validated_plan_as_it_is_and_checks_raw_pairs(cfg):
  plan = PrunePlan.parse("fastv@1:8+latesim@3:4").validate(cfg)
  pairs = [(1, 8), (3, 4)]
  assert cost.sequence_lengths(4, 40, 16, plan) == cost.sequence_lengths(4, 40, 16, pairs) == [40, 32, 32, 28]
  assert cost.prefill_flops(cfg, 40, plan) == cost.prefill_flops(cfg, 40, pairs)
  with pytest.raises(ValueError, match="does not increase"):
    cost.sequence_lengths(4, 40, 16, [(2, 8), (1, 4)])
