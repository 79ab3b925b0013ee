"""Pruning on LLaVA-OneVision (AnyRes views, image-newline slots, padded visual slots, 1-D RoPE), checked against
transformers and plain NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flax import nnx
from test_llava_onevision import IMAGE, SIZES, image_for, prompt, save_tiny_onevision

from jaxprune.convert.hf import load_model
from jaxprune.core import decoding
from jaxprune.generate import Generator, prefill
from jaxprune.models.llava_onevision import host
from jaxprune.prune.methods import METHODS
from jaxprune.prune.pipeline import Pruner
from jaxprune.prune.plan import PlanError, PrunePlan
from jaxprune.prune.select import kept_map, split_positions

NUM_LAYERS = 3
QUESTION = 4  # the last 4 text tokens of every prompt are its question
BUCKETS = dict(length_multiple=128, visual_multiple=8, crop_multiple=8)


@pytest.fixture(scope="module")
def onevision(tmp_path_factory):
  path = tmp_path_factory.mktemp("onevision_prune")
  hf = save_tiny_onevision(path, seed=0)
  loaded = load_model(path, dtype="float32")
  assert loaded.config.num_layers == NUM_LAYERS
  return hf, loaded.model, loaded.config


def _sample(cfg, i, size, extra=()):
  """(expanded ids + extra, [image], query mask): text, an image, text ending in the question."""
  images = [image_for(size, cfg, 200 + i)]
  ids = host.expand_image_tokens(prompt(2 + 3 * i, 3 + 2 * i + QUESTION, 1, seed=100 + i), images, cfg)
  n = len(ids)
  ids = ids + list(extra)
  query = np.zeros(len(ids), bool)
  query[n - QUESTION:n] = True
  return ids, images, query


def _batch(cfg, samples, **buckets):
  ids, images, query = zip(*samples)
  return host.pack_batch(list(ids), list(images), cfg, query=list(query), **(buckets or BUCKETS))


_GENERATORS: dict = {}


def _run(model, cfg, plan, inputs, steps=2):
  if steps not in _GENERATORS:
    _GENERATORS[steps] = Generator(model, max_new_tokens=steps, eos_ids=(), pad_id=0)
  pruner = Pruner.build(plan, cfg) if plan else None
  return _GENERATORS[steps](inputs, prune_points_fn=pruner, keep_logits=True)


def test_keep_all_is_bit_identical_for_every_method_and_pool_is_refused(onevision):
  """keep >= the visual slots: every method's plan adds no prune point (so the program is the unpruned one), and
  end to end three methods (text-side, attention, vision-side; two plans) give the unpruned logits and tokens
  bit for bit. pool (one fixed grid) and the oracle bounds (no task ground truth here) are refused in one line."""
  _, model, cfg = onevision
  inputs = _batch(cfg, [_sample(cfg, 0, SIZES[0]), _sample(cfg, 1, SIZES[2])])
  n_slots = inputs.layout.max_visual
  assert n_slots == 48  # the 2x2-crop image's 46 (base 4x4 + shrunk 5x5 with newlines), padded to a multiple of 8
  tokens, vision = nnx.jit(lambda m, x: m.input_tokens(x))(model, inputs)
  first = {"zero": 0, "late": 1, "any": 0}
  checked = set()
  for name, method in METHODS.items():
    plan = f"{name}@{first[method.layers]}:{n_slots}"
    if method.fixed_grid or "relevance" in method.needs:
      with pytest.raises(PlanError) as e:
        Pruner.build(plan, cfg)
      assert ("needs one fixed token grid per image" if method.fixed_grid else "needs the signal 'relevance'") \
          in str(e.value) and "\n" not in str(e.value)
      continue
    assert Pruner.build(plan, cfg)(model, tokens, vision) == {}, plan
    checked.add(name)
  assert checked == {n for n, m in METHODS.items() if not m.fixed_grid and "relevance" not in m.needs}
  base = _run(model, cfg, None, inputs)
  for plan in (f"latesim@0:{n_slots}+fastv@2:{n_slots}", f"clsattn@1:{n_slots + 3}"):
    out = _run(model, cfg, plan, inputs)
    np.testing.assert_array_equal(np.asarray(out["logits"]), np.asarray(base["logits"]), err_msg=plan)
    np.testing.assert_array_equal(np.asarray(out["tokens"]), np.asarray(base["tokens"]), err_msg=plan)


def _hf_forward(hf, ids, images, **kwargs):
  ids_t = torch.tensor([ids])
  with torch.no_grad():
    return hf(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), pixel_values=torch.tensor(images[0].crops[None]),
              image_sizes=torch.tensor([images[0].size]), **kwargs)


def test_fastv_matches_transformers_eager_attention(onevision):
  hf, model, cfg = onevision
  keep, layer = 9, 2
  ids, images, query = _sample(cfg, 1, SIZES[1])
  attn = _hf_forward(hf, ids, images, output_attentions=True).attentions[layer - 1][0].numpy()  # [H, L, L]
  image_positions = np.flatnonzero(np.asarray(ids) == IMAGE)
  row = attn[:, -1, image_positions].mean(axis=0)  # last token, head mean -> [Nv]
  expected = np.sort(np.argsort(-row, kind="stable")[:keep])
  inputs = _batch(cfg, [(ids, images, query)], length_multiple=128, visual_multiple=64, crop_multiple=8)
  assert inputs.layout.max_visual > len(image_positions)  # padded visual slots are present
  out = _run(model, cfg, f"fastv@{layer}:{keep}", inputs, steps=1)
  np.testing.assert_array_equal(np.flatnonzero(np.asarray(kept_map(out["kept"], inputs.layout.max_visual))[0]),
                                expected)


@pytest.mark.parametrize("plan_text", ["latesim@1:5", "latesim@2:5[aggregate=max,norm=raw]"])
def test_latesim_equals_numpy_from_transformers_hidden_states(onevision, plan_text):
  hf, model, cfg = onevision
  ids, images, query = _sample(cfg, 3, SIZES[2])
  stage = PrunePlan.parse(plan_text).stages[0]
  h = _hf_forward(hf, ids, images, output_hidden_states=True).hidden_states[stage.layer][0].numpy().astype(np.float64)
  weight = None if stage.option("norm") == "raw" else \
      hf.model.language_model.layers[stage.layer].input_layernorm.weight.detach().numpy()
  eps = hf.config.text_config.rms_norm_eps
  normed = lambda x: x if weight is None else x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * weight
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  image_positions = np.flatnonzero(np.asarray(ids) == IMAGE)
  sims = unit(normed(h[image_positions])) @ unit(normed(h[np.flatnonzero(query)])).T  # [Nv, Q]
  expected = sims.mean(1) if stage.option("aggregate") == "mean" else sims.max(1)
  inputs = _batch(cfg, [(ids, images, query)])
  pruner = Pruner.build(plan_text, cfg)

  @nnx.jit
  def scores(model, inputs):
    captured = {}

    def points(model, tokens, vision):
      def record(tokens, trace):
        image_idx, text_idx = split_positions(tokens.image, vision.layout.max_visual)
        captured["s"] = pruner.scores(stage, tokens, image_idx, text_idx, model.language_model, vision, trace)
        return tokens
      return {stage.layer: record}

    prefill(model, inputs, extra_slots=0, prune_points_fn=points)
    return captured["s"]

  got = np.asarray(scores(model, inputs))[0]
  n = len(image_positions)
  assert np.all(got[:-n] == -np.inf)  # padded visual slots never score
  assert np.abs(got[-n:] - expected).max() <= 1e-5


@pytest.mark.parametrize("plan_text", ["clsattn@0:8", "fastv@1:12[query=question]+latesim@2:6"])
def test_pruned_decode_equals_recompute(onevision, plan_text):
  """8 cached steps after a pruned prefill == the pruned prefill of prompt + generated tokens without a cache."""
  _, model, cfg = onevision
  steps = 8
  sizes = [SIZES[0], SIZES[3]]
  out = _run(model, cfg, plan_text, _batch(cfg, [_sample(cfg, i, s) for i, s in enumerate(sizes)]), steps=steps)
  generated, logits = np.asarray(out["tokens"]), np.asarray(out["logits"])
  inputs = _batch(cfg, [_sample(cfg, i, s, extra=generated[i, :steps - 1]) for i, s in enumerate(sizes)])

  @nnx.jit
  def recompute(model, inputs):
    tokens, vision = model.input_tokens(inputs)
    lm = model.language_model
    h, _, final = decoding.prefill(lm, tokens, extra_slots=0, prune_points=Pruner.build(plan_text, cfg)(
        model, tokens, vision))
    return lm.logits(h[:, -steps:]), final

  ref, final = recompute(model, inputs)
  kept = out["kept"]
  for b in range(2):  # the same visual tokens at the same positions
    mine, theirs = np.asarray(kept.image[b] & kept.valid[b]), np.asarray(final.image[b] & final.valid[b])
    np.testing.assert_array_equal(np.asarray(kept.patch[b])[mine], np.asarray(final.patch[b])[theirs])
    np.testing.assert_array_equal(np.asarray(kept.positions[b])[mine], np.asarray(final.positions[b])[theirs])
  assert np.abs(logits - np.asarray(ref)).max() <= 1e-4


def test_one_compile_per_bucket_and_plan_for_new_image_sizes(onevision):
  _, model, cfg = onevision
  gen = Generator(model, max_new_tokens=2, eos_ids=(), pad_id=0)
  latesim = Pruner.build("latesim@1:5", cfg)
  shapes = set()
  for sizes in ([SIZES[0], SIZES[1]], [SIZES[3], (20, 30)], [(16, 40), SIZES[2]]):
    inputs = _batch(cfg, [_sample(cfg, i, s) for i, s in enumerate(sizes)], length_multiple=128,
                    visual_multiple=64, crop_multiple=16)
    shapes.add((inputs.ids.shape, inputs.layout.max_visual, inputs.pixels.crops.shape))
    gen(inputs, prune_points_fn=latesim)
  assert len(shapes) == 1 and gen.compiles == 1
  gen(inputs, prune_points_fn=Pruner.build("fastv@1:5", cfg))
  assert gen.compiles == 2


def test_kept_map_is_one_map_per_view_with_the_newline_column(onevision):
  """uniform@0 on a 2x2-crop image: the kept-token map splits by view (layout image index 0 = base 4x4, 1 = crops
  5x5 + newline column), each view strided on its own grid; clsattn never keeps a newline before a patch."""
  _, model, cfg = onevision
  inputs = _batch(cfg, [_sample(cfg, 0, SIZES[2])])
  layout = inputs.layout
  view, col, gw = (np.asarray(x[0]) for x in (layout.image, layout.col, layout.grid_w))
  newline = np.asarray(inputs.pixels.newline[0])
  np.testing.assert_array_equal(newline, (view == 1) & (col == gw - 1))
  out = _run(model, cfg, "uniform@0:8", inputs, steps=1)
  kept = np.asarray(kept_map(out["kept"], layout.max_visual))[0]
  assert kept[view == 0].sum() > 0 and kept[view == 1].sum() > 0 and kept.sum() == 8
  out = _run(model, cfg, "clsattn@0:40", inputs, steps=1)  # 46 slots: 5 newlines + 1 patch dropped
  kept = np.asarray(kept_map(out["kept"], layout.max_visual))[0]
  assert kept[newline].sum() == 0 and kept[~newline & np.asarray(layout.valid[0])].sum() == 40
