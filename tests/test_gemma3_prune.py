"""Pruning on Gemma 3, checked against transformers and plain NumPy: the identity at keep >= N for every method,
FastV and latesim scores, the bidirectional image block and the sliding window after pruning, cached decode
after a pruned prefill, and one compile per (bucket, plan)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flax import nnx
from test_gemma3 import BUCKET, IMAGE, NV, TOL, WINDOW, pixels_for, prompt, tiny_gemma  # noqa: F401 (a fixture)

from jaxprune.core import decoding
from jaxprune.generate import Generator, pad_batch, prefill
from jaxprune.prune.methods import METHODS
from jaxprune.prune.pipeline import Pruner
from jaxprune.prune.plan import PrunePlan
from jaxprune.prune.select import split_positions

NUM_LAYERS = 4
QUESTION = 4  # the last 4 tokens of every prompt are its question
TASK_SIGNALS = frozenset({"relevance"})  # what `_batch` adds, as a task with ground truth would


def _batch(prompts, pixels):
  """Prompts (question = last QUESTION tokens) + one image each -> ModelInputs with a relevance table per slot
  (cells on every third anti-diagonal of the 4x4 grid), the task signal `oracle` reads."""
  spans = [(len(p) - QUESTION, len(p)) for p in prompts]
  inputs = pad_batch(prompts, pad_id=0, multiple=BUCKET, pixels=pixels, query_spans=spans)
  cells = np.arange(NV)
  relevant = ((cells // 4 + cells % 4) % 3 == 0).astype(np.float32)
  return inputs.replace(relevance=np.tile(relevant, (len(prompts), 1)))


_GENERATORS: dict = {}


def _run(model, cfg, plan, inputs, steps=4):
  """Generate with a shared Generator per steps count, so equal (bucket, plan) pairs reuse one compile."""
  if steps not in _GENERATORS:
    _GENERATORS[steps] = Generator(model, max_new_tokens=steps, eos_ids=(), pad_id=0)
  pruner = Pruner.build(plan, cfg, TASK_SIGNALS) if plan else None
  return _GENERATORS[steps](inputs, prune_points_fn=pruner, keep_logits=True)


def _layers(method):
  return {"zero": [0], "late": list(range(1, NUM_LAYERS)), "any": list(range(NUM_LAYERS))}[METHODS[method].layers]


def test_keep_all_is_the_identity_for_every_method(tiny_gemma):
  """keep >= N builds no prune point at all (so no gather runs and nothing can differ); every method is accepted
  for this family (the tower offers importance, keys and the 4x4 grid). A two-stage plan runs end to end:
  bit-identical logits and tokens."""
  _, loaded, _ = tiny_gemma
  model, cfg = loaded.model, loaded.config
  inputs = _batch([prompt(2, 3 + QUESTION, seed=20), prompt(4, 1 + QUESTION, seed=21)], pixels_for(2, seed=22))
  tokens, vision = nnx.jit(lambda m, i: m.input_tokens(i))(model, inputs)
  vision = vision.replace(relevance=inputs.relevance)
  for name in METHODS:
    for layer, keep in ((_layers(name)[0], NV), (_layers(name)[-1], NV + 3)):
      assert Pruner.build(f"{name}@{layer}:{keep}", cfg, TASK_SIGNALS)(model, tokens, vision) == {}, name
  base = _run(model, cfg, None, inputs, steps=2)
  out = _run(model, cfg, f"latesim@1:{NV + 3}+fastv@2:{NV}", inputs, steps=2)
  np.testing.assert_array_equal(np.asarray(out["logits"]), np.asarray(base["logits"]))
  np.testing.assert_array_equal(np.asarray(out["tokens"]), np.asarray(base["tokens"]))


def _captured_scores(model, pruner, inputs):
  """The pipeline's scores at its (single) stage [B, N] over the image positions in sequence order, captured by a
  pass-through prune point inside one jit."""
  stage = pruner.plan.stages[0]

  @nnx.jit
  def run(model, inputs):
    captured = {}

    def points(model, tokens, vision):
      def record(tokens, trace):
        image_idx, text_idx = split_positions(tokens.image, vision.layout.max_visual)
        captured["scores"] = pruner.scores(stage, tokens, image_idx, text_idx, model.language_model, vision, trace)
        return tokens
      return {stage.layer: record}

    prefill(model, inputs, extra_slots=0, prune_points_fn=points)
    return captured["scores"]

  return np.asarray(run(model, inputs))


def _hf_forward(hf, ids, pixels, **kwargs):
  ids_t = torch.tensor([ids])
  with torch.no_grad():
    return hf(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), pixel_values=torch.tensor(pixels),
              token_type_ids=(ids_t == IMAGE).long(), **kwargs)


@pytest.mark.parametrize("plan_text", ["fastv@2:6", "fastv@2:6[query=question]"])
def test_fastv_scores_equal_transformers_eager_attention(tiny_gemma, plan_text):
  """Layer K-1 = 1 is a global layer (Gemma's scale 1/sqrt(query_pre_attn_scalar) != 1/sqrt(Dh) here); the score
  is the head-mean attention of the last token (or the question tokens' mean) on each soft token."""
  hf, loaded, _ = tiny_gemma
  ids, pixels = prompt(3, 2 + QUESTION, seed=23), pixels_for(1, seed=24)
  attn = _hf_forward(hf, ids, pixels, output_attentions=True).attentions[1][0].numpy()  # [H, L, L] of layer 1
  rows = [len(ids) - 1] if "question" not in plan_text else list(range(len(ids) - QUESTION, len(ids)))
  image_positions = np.flatnonzero(np.asarray(ids) == IMAGE)
  expected = attn[:, rows][:, :, image_positions].mean(axis=(0, 1))  # [Nv]
  got = _captured_scores(loaded.model, Pruner.build(plan_text, loaded.config), _batch([ids], pixels))[0]
  assert np.abs(got - expected).max() <= 1e-5


def _naive_latesim(h, image_positions, query_positions, weight, eps, aggregate):
  def normed(x):
    return x if weight is None else x / np.sqrt(np.mean(x * x) + eps) * weight
  out = []
  for i in image_positions:
    sims = [float(normed(h[i]) @ normed(h[j])) / (np.linalg.norm(normed(h[i])) * np.linalg.norm(normed(h[j])))
            for j in query_positions]
    out.append(np.mean(sims) if aggregate == "mean" else np.max(sims))
  return np.asarray(out)


@pytest.mark.parametrize("plan_text", ["latesim@1:5", "latesim@3:5[aggregate=max,norm=raw]", "embedsim@0:5",
                                       "latesim@2:5[query=text]"])
def test_latesim_equals_numpy_from_transformers_hidden_states(tiny_gemma, plan_text):
  """h = what enters decoder layer K in transformers; Gemma's input norm is (1 + w)-scaled."""
  hf, loaded, _ = tiny_gemma
  ids, pixels = prompt(2, 3 + QUESTION, seed=25), pixels_for(1, seed=26)
  stage = PrunePlan.parse(plan_text).stages[0]
  h = _hf_forward(hf, ids, pixels, output_hidden_states=True).hidden_states[stage.layer][0].numpy().astype(np.float64)
  weight = (None if stage.option("norm") == "raw"
            else 1.0 + hf.model.language_model.layers[stage.layer].input_layernorm.weight.detach().numpy())
  image_positions = np.flatnonzero(np.asarray(ids) == IMAGE)
  query_positions = (np.arange(len(ids) - QUESTION, len(ids)) if stage.option("query") == "question"
                     else np.flatnonzero(np.asarray(ids) != IMAGE))
  expected = _naive_latesim(h, image_positions, query_positions, weight, hf.config.text_config.rms_norm_eps,
                            stage.option("aggregate"))
  got = _captured_scores(loaded.model, Pruner.build(plan_text, loaded.config), _batch([ids], pixels))[0]
  assert np.abs(got - expected).max() <= 1e-5


def test_layer0_pruning_equals_transformers_on_the_kept_sequence(tiny_gemma):
  """At K = 0 the LLM never sees the dropped tokens: jaxprune's logits equal transformers run on the kept
  sequence itself (inputs_embeds of text + kept soft tokens, token_type_ids marking the kept soft tokens), so
  the kept tokens of the image see each other both ways and the window (6, crossing the image) counts kept
  tokens. Two prompts of different lengths, left-padded together."""
  hf, loaded, _ = tiny_gemma
  model, cfg = loaded.model, loaded.config
  prompts = [prompt(3, 6 + QUESTION, seed=27), prompt(1, 2 + QUESTION, seed=28)]
  inputs = _batch(prompts, pixels_for(2, seed=29))
  pruner = Pruner.build("random@0:7[seed=1]", cfg)

  @nnx.jit
  def run(model, inputs):
    tokens, _ = model.input_tokens(inputs)
    _, _, kept, h = prefill(model, inputs, extra_slots=0, prune_points_fn=pruner)
    return tokens.hidden, kept, model.language_model.logits(h)

  embeds, kept, logits = run(model, inputs)
  for b, ids in enumerate(prompts):
    valid = np.asarray(kept.valid[b])
    is_image = np.asarray(kept.image[b])[valid]
    slots = np.asarray(kept.patch[b])[valid][is_image]
    assert is_image.sum() == 7 and len(set(slots.tolist())) == 7
    # the kept sequence in the original embeddings: all text, and the soft tokens of the kept slots
    offset = BUCKET - len(ids)
    keep = [offset + i for i in range(len(ids)) if ids[i] != IMAGE or (i - ids.index(IMAGE)) in set(slots.tolist())]
    x = torch.tensor(np.asarray(embeds[b])[keep][None])
    types = torch.tensor((np.asarray(ids)[np.asarray(keep) - offset] == IMAGE)[None]).long()
    with torch.no_grad():
      ref = hf(inputs_embeds=x, attention_mask=torch.ones(types.shape, dtype=torch.long), token_type_ids=types).logits
    assert np.abs(np.asarray(logits[b])[valid] - ref[0].numpy()).max() <= TOL


@pytest.mark.parametrize("plan_text", ["fastv@2:10[query=question]+random@3:4[reindex=true,seed=2]",
                                       "visionzip@0:8", "pool@0:4"])
def test_pruned_decode_equals_recompute(tiny_gemma, plan_text):
  """8 cached steps (past the window of 6) after a pruned prefill == the pruned prefill of prompt + generated
  tokens without a cache, read at every generated position. The plans score from the question, the image or
  the grid, which generated tokens do not change, so the recompute keeps the same tokens at the same positions
  (checked)."""
  _, loaded, _ = tiny_gemma
  model, cfg = loaded.model, loaded.config
  steps = 8
  prompts = [prompt(2, 3 + QUESTION, seed=30), prompt(5, 1 + QUESTION, seed=31)]
  pixels = pixels_for(2, seed=32)
  out = _run(model, cfg, plan_text, _batch(prompts, pixels), steps=steps)
  generated, logits = np.asarray(out["tokens"]), np.asarray(out["logits"])
  longer = [p + generated[i, :steps - 1].tolist() for i, p in enumerate(prompts)]
  spans = [(len(p) - QUESTION, len(p)) for p in prompts]  # the question stays where it was
  inputs = pad_batch(longer, pad_id=0, multiple=BUCKET, pixels=pixels, query_spans=spans)

  @nnx.jit
  def recompute(model, inputs):
    tokens, vision = model.input_tokens(inputs)
    lm = model.language_model
    points = Pruner.build(plan_text, cfg)(model, tokens, vision)
    h, _, final = decoding.prefill(lm, tokens, extra_slots=0, prune_points=points)
    return lm.logits(h[:, -steps:]), final  # [B, steps, V]: the prompt's last token, then each generated one

  ref, final = recompute(model, inputs)
  kept = out["kept"]
  for b in range(2):  # the same visual tokens at the same positions
    mine, theirs = np.asarray(kept.image[b] & kept.valid[b]), np.asarray(final.image[b] & final.valid[b])
    np.testing.assert_array_equal(np.asarray(kept.patch[b])[mine], np.asarray(final.patch[b])[theirs])
    np.testing.assert_array_equal(np.asarray(kept.positions[b])[mine], np.asarray(final.positions[b])[theirs])
  assert WINDOW < steps and np.abs(logits - np.asarray(ref)).max() <= TOL


def test_one_compile_per_bucket_and_plan(tiny_gemma):
  _, loaded, _ = tiny_gemma
  model, cfg = loaded.model, loaded.config
  gen = Generator(model, max_new_tokens=1, eos_ids=(), pad_id=0)
  latesim = Pruner.build("latesim@1:5", cfg)
  for seed in range(3):  # new prompts, lengths and images in one bucket
    inputs = _batch([prompt(1 + seed, 2 + QUESTION, seed=40 + seed), prompt(4, seed + QUESTION, seed=50 + seed)],
                    pixels_for(2, seed=60 + seed))
    gen(inputs, prune_points_fn=latesim)
  assert gen.compiles == 1
  gen(inputs, prune_points_fn=Pruner.build("latesim@1:5", cfg))
  assert gen.compiles == 1  # an equal plan built again hashes the same
  gen(inputs, prune_points_fn=Pruner.build("fastv@2:5", cfg))
  assert gen.compiles == 2
