"""Pruning on the tiny random LLaVA that is not in the family conformance suite (tests/families/test_conformance.py):
clsattn's scores against CLIP's [CLS] row in transformers, the cost model's KV bytes against the real cache, and
the plan grammar's one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_NV, tiny_pixels, tiny_prompt

from jaxprune import cost
from jaxprune.generate import Generator, pad_batch, prefill
from jaxprune.prune.pipeline import Pruner
from jaxprune.prune.plan import PlanError, PrunePlan
from jaxprune.prune.select import split_positions


def _prompts():
  """Three prompts of different lengths with the question after the image, and the question spans."""
  shapes = [(2, 5), (6, 9), (3, 2)]
  prompts = [tiny_prompt(before, after, seed=60 + i) for i, (before, after) in enumerate(shapes)]
  spans = [(1 + before + TINY_NV, 1 + before + TINY_NV + after) for before, after in shapes]
  return prompts, spans


def _batch(prompts, spans, pixels, multiple=16):
  return pad_batch(prompts, pad_id=0, multiple=multiple, query_spans=spans, pixels=pixels)


_GENERATORS: dict = {}


def _run(model, cfg, plan, batch, steps=4):
  """Generate with a shared Generator per (model, steps), so equal (bucket, plan) pairs reuse one compile."""
  key = (id(model), steps)
  if key not in _GENERATORS:
    _GENERATORS[key] = Generator(model, max_new_tokens=steps, eos_ids=(), pad_id=0)
  pruner = Pruner.build(plan, cfg) if plan else None
  return _GENERATORS[key](batch, prune_points_fn=pruner, keep_logits=True)


def _captured_scores(loaded, plan_text, prompt, span, pixels):
  """Scores the pipeline computes at its stage, captured eagerly through a pass-through prune point."""
  model, cfg = loaded.model, loaded.config
  pruner = Pruner.build(plan_text, cfg)
  stage = pruner.plan.stages[0]
  captured = {}

  def points(model, tokens, vision):
    def record(tokens, trace):
      image_idx, text_idx = split_positions(tokens.image, TINY_NV)
      captured["scores"] = np.asarray(pruner.scores(stage, tokens, image_idx, text_idx, model.language_model,
                                                    vision, trace))[0]
      return tokens
    return {stage.layer: record}

  batch = pad_batch([prompt], pad_id=0, multiple=1, query_spans=[span], pixels=pixels)
  prefill(model, (batch.ids, batch.valid, batch.pixels, batch.query), extra_slots=0, prune_points_fn=points)
  return captured["scores"]


def test_clsattn_scores_equal_transformers_cls_row(tiny_llava, tiny_llava_jax):
  hf, _ = tiny_llava
  prompt = tiny_prompt(2, 4, seed=90)
  pixels = tiny_pixels(1, seed=9)
  with torch.no_grad():
    out = hf.model.vision_tower(torch.tensor(pixels), output_attentions=True, output_hidden_states=True)
  used = len(out.hidden_states) + hf.config.vision_feature_layer
  expected = out.attentions[used - 1][0, :, 0, 1:].sum(0).numpy()
  got = _captured_scores(tiny_llava_jax, "clsattn@0:5", prompt, (1 + 2 + TINY_NV, len(prompt)), pixels)
  assert np.abs(got - expected).max() <= 1e-5


@pytest.mark.parametrize("plan_text", ["none", "latesim@2:5", "fastv@1:8+latesim@3:3", "visionzip@0:6"])
def test_kv_bytes_from_cost_model_equal_cache_bytes(tiny_llava_jax, plan_text):
  model, cfg = tiny_llava_jax.model, tiny_llava_jax.config
  steps = 5
  prompts, spans = _prompts()
  batch = _batch(prompts, spans, tiny_pixels(3, seed=1))
  out = _run(model, cfg, None if plan_text == "none" else plan_text, batch, steps=steps)
  stages = [(s.layer, s.keep) for s in PrunePlan.parse(plan_text).stages]
  expected = cost.kv_cache_bytes(cfg, batch.ids.shape[1], stages, num_visual=TINY_NV, max_new_tokens=steps,
                                 batch=3, bytes_per_element=4)
  assert int(out["kv_bytes"]) == expected


@pytest.mark.parametrize("plan_text, message", [
    ("magic@1:4", "unknown method 'magic'"),
    ("latesim@4:4", "layer 4 is outside [0, 4)"),
    ("latesim@-1:4", "layer -1 is outside"),
    ("latesim@1:0", "keep must be >= 1"),
    ("latesim@2:8+fastv@2:4", "layers must strictly increase"),
    ("latesim@1:4+fastv@2:8", "exceeds the previous stage's 4"),
    ("fastv@0:4", "does not exist at layer 0"),
    ("embedsim@2:4", "exists only at layer 0"),
    ("latesim@1:4[colour=red]", "unknown option 'colour'"),
    ("latesim@1:4[aggregate=median]", "aggregate='median' must be one of"),
    ("pool@0:5", "pool cannot tile the 4x4 grid into 5 tokens"),
    ("latesim@1:1.5", "ratio keep must lie in (0, 1)"),
    ("latesim@1", "cannot parse stage"),
])
def test_bad_plans_raise_one_clear_line(tiny_llava_jax, plan_text, message):
  with pytest.raises(PlanError) as e:
    Pruner.build(plan_text, tiny_llava_jax.config)
  assert message in str(e.value) and "\n" not in str(e.value)


def test_ratio_keep_and_plan_text_round_trip(tiny_llava_jax):
  plan = PrunePlan.parse("fastv@1:0.5+latesim@2:4[aggregate=max]")
  assert str(plan) == "fastv@1:0.5+latesim@2:4[aggregate=max]"
  assert [s.keep for s in plan.validate(tiny_llava_jax.config).stages] == [8, 4]
  assert not PrunePlan.parse("none")
