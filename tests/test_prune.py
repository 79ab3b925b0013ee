"""Pruning semantics on the tiny random LLaVA, checked against transformers and naive references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_IMAGE_TOKEN, TINY_NV, tiny_pixels, tiny_prompt

from jaxprune import cost
from jaxprune.generate import Generator, pad_batch, prefill
from jaxprune.prune.pipeline import Pruner
from jaxprune.prune.plan import PlanError, PrunePlan
from jaxprune.prune.select import kept_map, split_positions

NUM_LAYERS = 4
# One plan per method (and a multi-stage one), each actually pruning (keep < Nv = 16).
PLANS = ["latesim@2:5", "latesim@1:6[aggregate=max,norm=raw,query=text]", "embedsim@0:7", "fastv@1:5",
         "fastv@3:4[query=question]", "clsattn@0:6", "clsattn@2:6", "visionzip@0:6", "divprune@0:5",
         "random@1:5[seed=3]", "uniform@0:4", "pool@0:4", "fastv@1:8+latesim@2:4+clsattn@3:2",
         "latesim@1:6[reindex=true]", "divprune@0:6[reindex=false]"]


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


@pytest.mark.parametrize("layer", range(NUM_LAYERS))
def test_keep_all_is_bit_identical(tiny_llava_jax, layer):
  model, cfg = tiny_llava_jax.model, tiny_llava_jax.config
  prompts, spans = _prompts()
  batch = _batch(prompts, spans, tiny_pixels(3, seed=1))
  base = _run(model, cfg, None, batch)
  methods = ["latesim", "clsattn", "random", "uniform"] + (["fastv"] if layer else ["embedsim", "divprune",
                                                                                      "visionzip", "pool"])
  for method in methods:
    out = _run(model, cfg, f"{method}@{layer}:{TINY_NV + layer}", batch)  # keep >= Nv
    np.testing.assert_array_equal(np.asarray(out["logits"]), np.asarray(base["logits"]))


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_fastv_matches_transformers_eager_attention(tiny_llava, tiny_llava_jax, layer):
  hf, _ = tiny_llava
  keep = 5
  prompt = tiny_prompt(4, 7, seed=70 + layer)
  pixels = tiny_pixels(1, seed=layer)
  with torch.no_grad():
    out = hf(input_ids=torch.tensor([prompt]), pixel_values=torch.tensor(pixels), output_attentions=True)
  attn = out.attentions[layer - 1][0].numpy()  # [H, L, L] weights of layer K-1
  image_positions = np.flatnonzero(np.asarray(prompt) == TINY_IMAGE_TOKEN)
  row = attn[:, -1, image_positions].mean(axis=0)  # head mean, last-token row -> [Nv]
  expected = np.sort(np.argsort(-row, kind="stable")[:keep])
  result = _run(tiny_llava_jax.model, tiny_llava_jax.config, f"fastv@{layer}:{keep}",
                pad_batch([prompt], pad_id=0, multiple=1, pixels=pixels), steps=1)
  kept = np.flatnonzero(np.asarray(kept_map(result["kept"], TINY_NV))[0])
  np.testing.assert_array_equal(kept, expected)


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


def _naive_latesim(h, image_positions, query_positions, weight, eps, aggregate):
  def normed(x):
    if weight is None:
      return x
    return x / np.sqrt(np.mean(x * x) + eps) * weight
  out = []
  for i in image_positions:
    sims = []
    for j in query_positions:
      a, b = normed(h[i]), normed(h[j])
      sims.append(float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    out.append(np.mean(sims) if aggregate == "mean" else np.max(sims))
  return np.asarray(out)


@pytest.mark.parametrize("plan_text", ["latesim@2:5", "latesim@3:5[aggregate=max,norm=raw]", "embedsim@0:5",
                                       "latesim@1:5[query=text]"])
def test_latesim_equals_numpy_from_transformers_hidden_states(tiny_llava, tiny_llava_jax, plan_text):
  hf, _ = tiny_llava
  before, after = 3, 6
  prompt = tiny_prompt(before, after, seed=80)
  span = (1 + before + TINY_NV, len(prompt))
  pixels = tiny_pixels(1, seed=8)
  stage = PrunePlan.parse(plan_text).stages[0]
  with torch.no_grad():
    out = hf(input_ids=torch.tensor([prompt]), pixel_values=torch.tensor(pixels), output_hidden_states=True)
  h = out.hidden_states[stage.layer][0].numpy().astype(np.float64)  # what enters decoder layer K
  weight = (None if stage.option("norm") == "raw"
            else hf.model.language_model.layers[stage.layer].input_layernorm.weight.detach().numpy())
  image_positions = np.flatnonzero(np.asarray(prompt) == TINY_IMAGE_TOKEN)
  if stage.option("query") == "question":
    query_positions = range(*span)
  else:
    query_positions = [i for i in range(len(prompt)) if prompt[i] != TINY_IMAGE_TOKEN]
  expected = _naive_latesim(h, image_positions, query_positions, weight, hf.config.text_config.rms_norm_eps,
                            stage.option("aggregate"))
  got = _captured_scores(tiny_llava_jax, plan_text, prompt, span, pixels)
  assert np.abs(got - expected).max() <= 1e-5


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


def test_divprune_equals_plain_python_greedy_on_projector_outputs(tiny_llava, tiny_llava_jax):
  hf, _ = tiny_llava
  keep = 6
  prompt = tiny_prompt(2, 4, seed=91)
  pixels = tiny_pixels(1, seed=10)
  with torch.no_grad():
    feats = hf.model.get_image_features(pixel_values=torch.tensor(pixels))
  feats = getattr(feats, "pooler_output", feats)
  feats = (torch.cat(list(feats), 0) if isinstance(feats, (list, tuple)) else feats).reshape(TINY_NV, -1).numpy()
  x = feats / np.linalg.norm(feats, axis=1, keepdims=True)
  dist = 1 - x @ x.T
  n = len(x)
  first = max(range(n), key=lambda i: (min(dist[i, j] for j in range(n) if j != i), -i))
  chosen = [first]
  while len(chosen) < keep:
    rest = [i for i in range(n) if i not in chosen]
    chosen.append(max(rest, key=lambda i: (min(dist[i, j] for j in chosen), -i)))
  result = _run(tiny_llava_jax.model, tiny_llava_jax.config, f"divprune@0:{keep}",
                pad_batch([prompt], pad_id=0, multiple=1, pixels=pixels), steps=1)
  kept = np.flatnonzero(np.asarray(kept_map(result["kept"], TINY_NV))[0])
  np.testing.assert_array_equal(kept, sorted(chosen))


@pytest.mark.parametrize("plan_text", ["latesim@2:5", "clsattn@1:6", "visionzip@0:6", "fastv@1:8+latesim@3:3",
                                       "random@2:4[reindex=true]"])
def test_pruned_decode_equals_recompute(tiny_llava_jax, plan_text):
  """8 cached steps after a pruned prefill == re-running the pruned prefill on prompt + generated tokens.

  The plans score from the question tokens or the image only, and generated tokens come after both, so
  the recompute keeps the same visual tokens at the same positions (the first stage of the multi-stage
  plan reads FastV's last row only... of the prompt, hence it is checked through its later latesim stage
  at a layer whose selection is still fixed by the first).
  """
  model, cfg = tiny_llava_jax.model, tiny_llava_jax.config
  steps = 8
  prompts, spans = _prompts()
  prompts, spans = prompts[:2], spans[:2]
  pixels = tiny_pixels(2, seed=12)
  out = _run(model, cfg, plan_text, _batch(prompts, spans, pixels), steps=steps)
  tokens, logits = np.asarray(out["tokens"]), np.asarray(out["logits"])
  pruner = Pruner.build(plan_text, cfg)
  first_kept = np.asarray(kept_map(out["kept"], TINY_NV))
  for step in range(steps):
    seqs = [p + tokens[i, :step].tolist() for i, p in enumerate(prompts)]
    batch = pad_batch(seqs, pad_id=0, multiple=32, query_spans=spans, pixels=pixels)  # few compiles; pads masked
    if plan_text.startswith("fastv") and step > 0:
      break  # FastV's query (the last token) moves with every generated token; step 0 is the prompt itself
    ref, _, kept, _ = prefill(model, (batch.ids, batch.valid, batch.pixels, batch.query), extra_slots=0,
                              prune_points_fn=pruner)
    np.testing.assert_array_equal(np.asarray(kept_map(kept, TINY_NV)), first_kept)
    assert np.abs(logits[:, step] - np.asarray(ref)).max() <= 1e-4, step


@pytest.mark.parametrize("plan_text", PLANS)
def test_batch_equals_each_sample_alone(tiny_llava_jax, plan_text):
  model, cfg = tiny_llava_jax.model, tiny_llava_jax.config
  prompts, spans = _prompts()
  pixels = tiny_pixels(3, seed=13)
  together = _run(model, cfg, plan_text, _batch(prompts, spans, pixels))
  maps = np.asarray(kept_map(together["kept"], TINY_NV))
  keep = Pruner.build(plan_text, cfg).plan.stages[-1].keep
  merged = "visionzip" in plan_text
  assert (maps.sum(1) == (keep - round(keep * 10 / 64) if merged else keep)).all()
  for i in range(3):
    alone = _run(model, cfg, plan_text, _batch(prompts[i:i + 1], spans[i:i + 1], pixels[i:i + 1]))
    np.testing.assert_array_equal(np.asarray(together["tokens"][i]), np.asarray(alone["tokens"][0]))
    assert np.abs(np.asarray(together["logits"][i]) - np.asarray(alone["logits"][0])).max() <= 1e-4
    np.testing.assert_array_equal(maps[i], np.asarray(kept_map(alone["kept"], TINY_NV))[0])


def test_one_compile_per_bucket_and_plan(tiny_llava_jax):
  model, cfg = tiny_llava_jax.model, tiny_llava_jax.config
  gen = Generator(model, max_new_tokens=3, eos_ids=(), pad_id=0)
  prompts, spans = _prompts()
  latesim, fastv = Pruner.build("latesim@2:5", cfg), Pruner.build("fastv@1:5", cfg)
  gen(_batch(prompts, spans, tiny_pixels(3, seed=1), multiple=32), prune_points_fn=latesim)
  gen(_batch(prompts[::-1], spans[::-1], tiny_pixels(3, seed=2), multiple=32), prune_points_fn=latesim)
  assert gen.compiles == 1  # new images and questions, same bucket and plan
  gen(_batch(prompts, spans, tiny_pixels(3, seed=3), multiple=32), prune_points_fn=Pruner.build("latesim@2:5", cfg))
  assert gen.compiles == 1  # an equal plan built again hashes the same
  gen(_batch(prompts, spans, tiny_pixels(3, seed=3), multiple=32), prune_points_fn=fastv)
  assert gen.compiles == 2


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
