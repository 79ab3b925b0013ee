"""Pruning on Qwen2.5-VL (dynamic resolution, padded visual slots, M-RoPE), checked against transformers and plain
Python: the LLaVA checks of test_prune.py, plus what a variable visual-token count and 3-D positions add."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flax import nnx
from test_qwen2_5_vl import IMAGE, hf_config, patches_for, prompt, tiny_qwen  # noqa: F401 (tiny_qwen: a fixture)

from jaxprune.core import decoding
from jaxprune.generate import Generator, prefill
from jaxprune.models.qwen2_5_vl import Qwen25VLConfig, host
from jaxprune.prune import scorers
from jaxprune.prune.methods import METHODS
from jaxprune.prune.pipeline import Pruner
from jaxprune.prune.plan import PlanError, PrunePlan
from jaxprune.prune.select import kept_map, split_positions

NUM_LAYERS = 3
# merged-token grids (t, rows, cols) of 4x4, 4x6 and 3x5 tokens: 16, 24 and 15 visual tokens, none square but one
GRIDS = [(1, 8, 8), (1, 8, 12), (1, 6, 10)]
# visual slots padded to a multiple of 8: a batch of all three has N = 24, alone they have 16, 24 and 16
BUCKETS = dict(length_multiple=64, visual_multiple=8, patch_multiple=256)
QUESTION = 4  # the last 4 text tokens of every prompt are its question
TASK_SIGNALS = frozenset({"relevance"})  # what `_batch` adds, as a task with ground truth would
CFG = Qwen25VLConfig.from_hf(hf_config().to_dict())  # the tiny model's config, for building inputs


def _sample(i, grid, extra=()):
  """(expanded ids + extra tokens, [grid], [patches], query mask over the ids): text, an image, text + question."""
  ids = host.expand_image_tokens(prompt(2 + 3 * i, 3 + 2 * i + QUESTION, 1, seed=100 + i), [grid], CFG)
  n = len(ids)
  ids = ids + list(extra)
  query = np.zeros(len(ids), bool)
  query[n - QUESTION:n] = True
  return ids, [grid], [patches_for(grid, 200 + i)], query


@pytest.fixture(scope="module")
def qwen(tiny_qwen):
  """(HF torch model, jaxprune model, config): test_qwen2_5_vl's tiny random model, built once for this module."""
  cfg = tiny_qwen[2]
  assert (cfg.image_token_id, cfg.vision.merge_unit, cfg.num_layers) == (IMAGE, CFG.vision.merge_unit, NUM_LAYERS)
  return tiny_qwen


def _batch(samples, **buckets):
  """Samples -> ModelInputs, with a ground-truth relevance table per slot (the task signal `oracle` reads): the
  cells on every third anti-diagonal of each image's own grid."""
  ids, grids, patches, query = zip(*samples)
  inputs = host.pack_batch(list(ids), list(grids), list(patches), CFG, query=list(query), **(buckets or BUCKETS))
  layout = inputs.layout
  relevant = np.asarray(layout.valid) & ((np.asarray(layout.row) + np.asarray(layout.col)) % 3 == 0)
  return inputs.replace(relevance=relevant.astype(np.float32))


_GENERATORS: dict = {}


def _run(model, cfg, plan, inputs, steps=4):
  """Generate with a shared Generator per steps count, so equal (bucket, plan) pairs reuse one compile."""
  if steps not in _GENERATORS:
    _GENERATORS[steps] = Generator(model, max_new_tokens=steps, eos_ids=(), pad_id=0)
  pruner = Pruner.build(plan, cfg, TASK_SIGNALS) if plan else None
  return _GENERATORS[steps](inputs, prune_points_fn=pruner, keep_logits=True)


def _layers(method):
  return {"zero": [0], "late": list(range(1, NUM_LAYERS)), "any": list(range(NUM_LAYERS))}[METHODS[method].layers]


def _kept_slots(out, n_slots):
  return np.asarray(kept_map(out["kept"], n_slots))


def test_keep_all_is_bit_identical_for_every_method_and_pool_is_refused(qwen):
  _, model, cfg = qwen
  inputs = _batch([_sample(i, g) for i, g in enumerate(GRIDS)])
  n_slots = inputs.layout.max_visual
  assert n_slots == 24
  base = _run(model, cfg, None, inputs, steps=2)
  ran = set()
  # each method at the first layer where its signal exists with keep = N, and two at their last layer with keep > N
  # (every plan is a compile, so a few)
  plans = [(name, _layers(name)[0], n_slots) for name in METHODS]
  plans += [(name, _layers(name)[-1], n_slots + 3) for name in ("latesim", "fastv")]
  for name, layer, keep in plans:
    method = METHODS[name]
    plan = f"{name}@{layer}:{keep}"
    if method.fixed_grid:
      with pytest.raises(PlanError) as e:
        Pruner.build(plan, cfg)
      assert "needs one fixed token grid per image" in str(e.value) and "\n" not in str(e.value)
      continue
    out = _run(model, cfg, plan, inputs, steps=2)
    np.testing.assert_array_equal(np.asarray(out["logits"]), np.asarray(base["logits"]), err_msg=plan)
    np.testing.assert_array_equal(np.asarray(out["tokens"]), np.asarray(base["tokens"]), err_msg=plan)
    ran.add(name)
  assert ran == {name for name, method in METHODS.items() if not method.fixed_grid} and "pool" not in ran
  with pytest.raises(PlanError, match="pool needs one fixed token grid per image"):  # refused at any keep
    Pruner.build("pool@0:4", cfg)
  with pytest.raises(PlanError, match="oracle needs the signal 'relevance'"):  # a task without ground truth
    Pruner.build("oracle@0:4", cfg)


def _hf_forward(hf, ids, grid, patches, **kwargs):
  ids_t = torch.tensor([ids])
  with torch.no_grad():
    return hf(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), pixel_values=torch.tensor(patches[0]),
              image_grid_thw=torch.tensor([grid]), mm_token_type_ids=(ids_t == IMAGE).int(), **kwargs)


@pytest.mark.parametrize("layer", [1, 2])
def test_fastv_matches_transformers_eager_attention(qwen, layer):
  hf, model, cfg = qwen
  hf.set_attn_implementation("eager")
  keep = 6
  ids, grids, patches, query = _sample(layer, GRIDS[1 + layer % 2])
  out = _hf_forward(hf, ids, grids[0], patches, output_attentions=True)
  attn = out.attentions[layer - 1][0].numpy()  # [H, L, L] weights of layer K-1
  image_positions = np.flatnonzero(np.asarray(ids) == IMAGE)
  row = attn[:, -1, image_positions].mean(axis=0)  # last-token row, head mean -> [Nv]
  expected = np.sort(np.argsort(-row, kind="stable")[:keep])
  inputs = _batch([(ids, grids, patches, query)], length_multiple=64, visual_multiple=32, patch_multiple=256)
  assert inputs.layout.max_visual > len(image_positions)  # padded visual slots are present
  result = _run(model, cfg, f"fastv@{layer}:{keep}", inputs, steps=1)
  np.testing.assert_array_equal(np.flatnonzero(_kept_slots(result, inputs.layout.max_visual)[0]), expected)


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


def _naive_latesim(h, image_positions, query_positions, weight, eps, aggregate):
  def normed(x):
    return x if weight is None else x / np.sqrt(np.mean(x * x) + eps) * weight
  out = []
  for i in image_positions:
    sims = [float(normed(h[i]) @ normed(h[j])) / (np.linalg.norm(normed(h[i])) * np.linalg.norm(normed(h[j])))
            for j in query_positions]
    out.append(np.mean(sims) if aggregate == "mean" else np.max(sims))
  return np.asarray(out)


@pytest.mark.parametrize("plan_text", ["latesim@1:5", "latesim@2:5[aggregate=max,norm=raw]", "embedsim@0:5",
                                       "latesim@1:5[query=text]"])
def test_latesim_equals_numpy_from_transformers_hidden_states(qwen, plan_text):
  hf, model, cfg = qwen
  ids, grids, patches, query = _sample(3, GRIDS[2])
  stage = PrunePlan.parse(plan_text).stages[0]
  h = _hf_forward(hf, ids, grids[0], patches, output_hidden_states=True).hidden_states[stage.layer][0]
  h = h.numpy().astype(np.float64)  # what enters decoder layer K
  weight = (None if stage.option("norm") == "raw"
            else hf.model.language_model.layers[stage.layer].input_layernorm.weight.detach().numpy())
  image_positions = np.flatnonzero(np.asarray(ids) == IMAGE)
  query_positions = (np.flatnonzero(query) if stage.option("query") == "question"
                     else np.flatnonzero(np.asarray(ids) != IMAGE))
  expected = _naive_latesim(h, image_positions, query_positions, weight, hf.config.text_config.rms_norm_eps,
                            stage.option("aggregate"))
  inputs = _batch([(ids, grids, patches, query)])
  got = _captured_scores(model, Pruner.build(plan_text, cfg), inputs)[0]
  n = len(image_positions)
  assert np.all(got[:-n] == -np.inf)  # padded visual slots (in the left padding) never score
  assert np.abs(got[-n:] - expected).max() <= 1e-5


@pytest.mark.parametrize("plan_text", ["latesim@1:6", "embedsim@0:6", "clsattn@0:6[reindex=false]", "visionzip@0:8",
                                       "fastv@1:10[query=question]+latesim@2:4", "random@2:4[reindex=true,seed=2]"])
def test_pruned_decode_equals_recompute(qwen, plan_text):
  """8 cached steps after a pruned prefill == the pruned prefill of prompt + generated tokens without a cache,
  read at every generated position (causal: one run gives every step). The plans score from the question, the
  image or the layout, which generated tokens do not change, so the recompute keeps the same visual tokens at
  the same 3-D positions (checked), and text after them continues where decoding does."""
  _, model, cfg = qwen
  steps = 8
  samples = [_sample(0, GRIDS[0]), _sample(1, GRIDS[2])]
  out = _run(model, cfg, plan_text, _batch(samples), steps=steps)
  generated, logits = np.asarray(out["tokens"]), np.asarray(out["logits"])
  longer = [_sample(i, g, extra=generated[i, :steps - 1]) for i, g in enumerate([GRIDS[0], GRIDS[2]])]
  inputs = _batch(longer)
  assert inputs.layout.max_visual == 16

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
    mine = np.asarray(kept.image[b] & kept.valid[b])
    theirs = np.asarray(final.image[b] & final.valid[b])
    np.testing.assert_array_equal(np.asarray(kept.patch[b])[mine], np.asarray(final.patch[b])[theirs])
    np.testing.assert_array_equal(np.asarray(kept.positions[b])[mine], np.asarray(final.positions[b])[theirs])
  assert np.abs(logits - np.asarray(ref)).max() <= 1e-4


def test_one_compile_per_bucket_and_plan_for_new_image_sizes(qwen):
  _, model, cfg = qwen
  gen = Generator(model, max_new_tokens=2, eos_ids=(), pad_id=0)
  latesim = Pruner.build("latesim@1:5", cfg)
  shapes = set()
  for grids in ([GRIDS[0], GRIDS[1]], [GRIDS[2], (1, 8, 10)], [(1, 10, 4), (1, 12, 8)]):
    inputs = _batch([_sample(i, g) for i, g in enumerate(grids)])
    shapes.add((inputs.ids.shape, inputs.layout.max_visual, inputs.pixels.patches.shape))
    gen(inputs, prune_points_fn=latesim)
  assert len(shapes) == 1 and gen.compiles == 1  # three pairs of image sizes, one bucket: one compile
  gen(inputs, prune_points_fn=Pruner.build("latesim@1:5", cfg))
  assert gen.compiles == 1  # an equal plan built again hashes the same
  gen(inputs, prune_points_fn=Pruner.build("fastv@1:5", cfg))
  assert gen.compiles == 2


@pytest.mark.parametrize("plan_text", ["divprune@0:6", "random@1:5[seed=3]", "uniform@0:6", "clsattn@2:6",
                                       "visionzip@0:8", "embedsim@0:6", "fastv@1:10+latesim@2:4", "oracle@1:6"])
def test_batch_equals_each_sample_alone(qwen, plan_text):
  """Images of 16, 24 and 15 tokens: together N = 24 slots; the 16- and 15-token samples alone N = 16 (the 24-token
  one alone would add a compile and no padding). Padded slots are never kept and change no score, so every sample
  keeps the same tokens and answers the same."""
  _, model, cfg = qwen
  samples = [_sample(i, g) for i, g in enumerate(GRIDS)]
  together_inputs = _batch(samples)
  together = _run(model, cfg, plan_text, together_inputs)
  n_slots = together_inputs.layout.max_visual
  maps = _kept_slots(together, n_slots)
  keep = Pruner.build(plan_text, cfg, TASK_SIGNALS).plan.stages[-1].keep
  kept_real = keep - max(1, round(keep * 10 / 64)) if plan_text.startswith("visionzip") else keep  # merged: slot -1
  for i, (_, [(t, h, w)], _, _) in enumerate(samples):
    n = t * h * w // 4
    assert maps[i, :n].sum() == kept_real and not maps[i, n:].any(), i  # no padded slot kept
    if plan_text.startswith("oracle"):  # relevant cells first: as many as the budget allows (5, 6 or 8 exist)
      relevant = np.asarray(together_inputs.relevance)[i] > 0
      assert (maps[i] & relevant).sum() == min(keep, relevant.sum())
    if n == n_slots:
      continue
    alone_inputs = _batch(samples[i:i + 1])
    alone = _run(model, cfg, plan_text, alone_inputs)
    np.testing.assert_array_equal(maps[i, :n], _kept_slots(alone, alone_inputs.layout.max_visual)[0, :n])
    np.testing.assert_array_equal(np.asarray(together["tokens"][i]), np.asarray(alone["tokens"][0]))
    assert np.abs(np.asarray(together["logits"][i]) - np.asarray(alone["logits"][0])).max() <= 1e-4


def _python_reindex(kept):
  """The `reindex` rule under M-RoPE, in plain Python over the kept sequence (text and kept visual tokens, in
  order): text takes one past the largest id so far; an image starts right after what precedes it and each kept
  token keeps its (t, row, col) offset from that image's start."""
  out, next_free, current = [], 0, None
  for kind, value in kept:
    if kind == "text":
      out.append((next_free,) * 3)
      next_free, current = next_free + 1, None
      continue
    image, t, row, col = value
    if image != current:
      start, current = next_free, image
    new = (start + t, start + row, start + col)
    out.append(new)
    next_free = max(next_free, max(new) + 1)
  return out


@pytest.mark.parametrize("reindex", [None, False])
def test_layer0_reindex_follows_the_mrope_rule(qwen, reindex):
  """Two images (3x5 and 4x6 tokens) with text between, pruned at K = 0: with `reindex` (the default at K = 0) the
  kept tokens' positions equal the rule stated in plain Python; with reindex=false they keep the prompt's ids."""
  _, model, cfg = qwen
  grids = [GRIDS[2], GRIDS[1]]
  ids = host.expand_image_tokens(prompt(3, 4, 2, seed=7), grids, cfg)
  query = np.zeros(len(ids), bool)
  query[-4:] = True
  inputs = host.pack_batch([ids], [grids], [[patches_for(g, 300 + k) for k, g in enumerate(grids)]], cfg,
                           query=[query], **BUCKETS)
  options = "[seed=4]" if reindex is None else "[reindex=false,seed=4]"
  out = _run(model, cfg, f"random@0:12{options}", inputs, steps=2)
  kept = out["kept"]
  valid = np.asarray(kept.valid[0])
  positions = np.asarray(kept.positions[0])[valid]
  patch, image = np.asarray(kept.patch[0])[valid], np.asarray(kept.image[0])[valid]
  layout = inputs.layout
  assert image.sum() == 12 and len(set(np.asarray(layout.image[0])[patch[image]])) == 2  # both images pruned
  original = host.rope_positions(ids, grids, cfg)  # [L, 3] of the unpadded prompt
  slot_of = np.cumsum(np.asarray(ids) == IMAGE) - 1  # visual slot of each prompt position
  kept_prompt = [i for i in range(len(ids)) if ids[i] != IMAGE or slot_of[i] in set(patch[image].tolist())]
  if reindex is False:
    np.testing.assert_array_equal(positions, original[kept_prompt])
  else:
    seq = [("text", None) if ids[i] != IMAGE else
           ("image", tuple(int(np.asarray(f[0])[slot_of[i]]) for f in (layout.image, layout.t, layout.row, layout.col)))
           for i in kept_prompt]
    np.testing.assert_array_equal(positions, np.asarray(_python_reindex(seq)))
    assert positions.max() < original.max()  # dropped tokens no longer push the text after them
  # decoding continues one past the largest id on any axis
  assert positions[-1, 0] == positions.max()


def test_uniform_uses_each_images_own_grid(qwen):
  """uniform on non-square images keeps the lattice of `uniform_layout_scores` for that grid: 4x6 tokens, keep 6
  -> rows {1, 3} x cols {1, 3, 5}; 3x5 tokens, keep 4 -> rows {0, 2} x cols {1, 3}. Kept-token maps read the
  layout's (row, col) per slot."""
  _, model, cfg = qwen
  samples = [_sample(0, GRIDS[1]), _sample(1, GRIDS[2])]
  for keep, expected in ((6, [{(1, 1), (1, 3), (1, 5), (3, 1), (3, 3), (3, 5)}, None]),
                         (4, [None, {(0, 1), (0, 3), (2, 1), (2, 3)}])):
    inputs = _batch(samples)
    out = _run(model, cfg, f"uniform@0:{keep}", inputs)
    maps = _kept_slots(out, inputs.layout.max_visual)
    lattice = np.asarray(scorers.uniform_layout_scores(inputs.layout, keep)) > 0
    row, col = np.asarray(inputs.layout.row), np.asarray(inputs.layout.col)
    for b in range(2):
      np.testing.assert_array_equal(maps[b], lattice[b])
      cells = {(int(row[b, s]), int(col[b, s])) for s in np.flatnonzero(maps[b])}
      assert len(cells) == keep
      if expected[b] is not None:
        assert cells == expected[b]
