"""The scenes lab-model recipe: the architecture it builds, its data (questions, cell labels, pixels), the
K = 0 token-dropping loss, a few training steps, the CLI's checkpoint through the eval path, and flag errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jaxprune.data import scenes
from jaxprune.recipes import easyvqa as base
from jaxprune.recipes import scenes as recipe_mod

TINY = dict(vision_hidden=32, vision_layers_used=1, text_hidden=32, text_layers=2, vision_pretrain_images=8,
            batch_size=16, questions_per_image=4, blind_per_step=2, eval_batch_size=8)
# One tiny end-to-end CLI run shared by the training, dropping and eval-path tests: width 32, 2 decoder layers,
# 1 tower layer, 16 scenes. The 96x96 images / 144 visual tokens are the recipe's (one sequence length, so the
# train step compiles once); every step after the compile costs milliseconds.
TRAIN_FLAGS = ["--steps", "40", "--warmup-steps", "4", "--lr", "3e-3", "--vision-pretrain-steps", "40",
               "--train-images", "16", "--test-images", "4", "--batch-size", "16", "--text-hidden", "32",
               "--text-layers", "2", "--vision-hidden", "32", "--vision-layers", "1", "--questions-per-image", "4",
               "--grow-from-layers", "1", "--grow-steps", "20",  # 20 steps of 1 layer, grown to 2, 40 more
               "--neighbour-layer", "0"]  # the probe reads the 1-layer decoder's only layer (layer 0 once grown)


@pytest.fixture(scope="module")
def tokenizer():
  return recipe_mod.build_tokenizer()


@pytest.fixture(scope="module")
def tiny(tokenizer):
  recipe = recipe_mod.Recipe(**TINY)
  cfg = recipe_mod.model_config(recipe, tokenizer)
  split = recipe_mod.load_split("train", 40, tokenizer, cfg, questions_per_image=4)
  return recipe, cfg, split


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """-> (the CLI's summary, its checkpoint dir): stage 1 + 40 stage-2 steps + eval + HF export, run once."""
  out = tmp_path_factory.mktemp("scenes") / "ckpt"
  return recipe_mod.main(["--out", str(out), *TRAIN_FLAGS]), out


@pytest.fixture(scope="module")
def runner(trained):
  from jaxprune.eval.runner import Runner
  return Runner.load(str(trained[1]), dtype="float32", max_new_tokens=4, bucket=8, batch_size=4, mesh=None)


def test_the_recipe_builds_a_deep_llava_with_144_visual_tokens(tokenizer):
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from jaxprune.models.llava import Llava
  cfg = recipe_mod.model_config(recipe_mod.Recipe(), tokenizer)
  assert cfg.text.num_layers >= 12 and cfg.text.hidden_size == 64
  assert cfg.num_image_tokens == 144 and cfg.grid == (12, 12) and cfg.vision.patch_size == 8
  model = nnx.eval_shape(lambda: Llava(cfg, dtype=jnp.float32, rngs=nnx.Rngs(0)))
  n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert 4 * n_params < 25 * 2**20  # the shipped float32 checkpoint fits the 25 MB limit


def test_generated_questions_are_among_the_candidates_and_tokenize(tokenizer, tiny):
  _, cfg, split = tiny
  for i in range(60):
    scene, _ = scenes.make_scene("train", i)
    assert (scene.question, scene.answer) in recipe_mod.candidate_questions(scene.objects)[scene.question_type]
  assert split.generated.sum() == 40 and len(split) == 160
  first = np.flatnonzero(split.generated)
  assert [split.questions[r] for r in first] == [scenes.make_item("train", i)["question"] for i in range(40)]
  for r in np.flatnonzero(~split.generated):  # drawn questions: the reference solver's answers
    objects = scenes.make_scene("train", int(split.image_index[r]))[0].objects
    assert (split.questions[r], split.answers[r]) in recipe_mod.candidate_questions(objects)[split.kinds[r]]
  recipe_mod.load_split("test", 200, tokenizer, cfg)  # raises if any test question has an unknown word


def test_the_question_mix_sets_the_drawn_types():
  rng = np.random.default_rng(0)
  mix = (("existence", 1.0), ("counting", 3.0), ("relation", 0.0))
  drawn = [q[0] for i in range(40) for q in recipe_mod.draw_questions(scenes.make_scene("train", i)[0].objects,
                                                                       15, rng, mix)]
  share = {t: drawn.count(t) / len(drawn) for t in set(drawn)}
  assert set(share) == {"existence", "counting"} and 0.68 < share["counting"] < 0.82, share  # 600 draws of 3:1
  objects = scenes.make_scene("train", 0)[0].objects
  with pytest.raises(ValueError, match="unknown question types \\['colour'\\]"):
    recipe_mod.draw_questions(objects, 2, rng, (("colour", 1.0),))
  lone = (scenes.SceneObject("circle", "red", 20, 20, 8), scenes.SceneObject("square", "blue", 70, 70, 8))  # diagonal
  assert not recipe_mod.candidate_questions(lone, ("relation",))["relation"]
  with pytest.raises(ValueError, match="this scene has no question of those types"):
    recipe_mod.draw_questions(lone, 2, rng, (("relation", 1.0),))


def test_cell_labels_follow_the_object_masks():
  for i in range(20):
    scene, _ = scenes.make_scene("test", i)
    labels = recipe_mod.cell_labels(scene.objects)  # [144, 5]
    anything = np.any([scenes.object_mask(o) for o in scene.objects], axis=0)
    np.testing.assert_array_equal(labels[:, 0] > 0, scenes.relevant_cells(anything, 12))
    for obj in scene.objects:  # the cell under an object's centre is that object's
      row, col = int(obj.y // 8), int(obj.x // 8)
      colour, shape, crow, ccol, is_centre = labels[row * 12 + col]
      assert (colour, shape) == (list(scenes.COLOURS).index(obj.colour) + 1, scenes.SHAPES.index(obj.shape) + 1)
      assert (crow, ccol, is_centre) == (row, col, 1)
    assert labels[:, 4].sum() == len(scene.objects)  # one centre flag per object, none on the background


def test_relevant_cells_are_the_referenced_objects_and_the_curriculum_adds_distractors(tiny, tokenizer):
  recipe, cfg, split = tiny
  first = np.flatnonzero(split.generated)
  for r in first[:20]:  # the generated question's cells are the item's relevance mask, on the 12x12 grid
    item = scenes.make_item("train", int(split.image_index[r]))
    np.testing.assert_array_equal(split.relevant[r], scenes.relevant_cells(item, 12))
  assert split.relevant[first].any(axis=1).all()  # a drawn "is there ...? no" may name no object at all
  # 5 curriculum steps, then random dropping (relabelling off: afterwards every question stays trained)
  recipe = dataclasses.replace(recipe, steps=10, focus_fraction=0.5, relabel_drops=False)
  batches = recipe_mod.Batches(split, recipe, tokenizer.pad_token_id, cfg.image_token_id)
  for step in range(7):
    arrays, rows = batches.next()
    keep = arrays["visual_keep"][:, batches.visual_slots]  # [Bi, 144]
    evidence = split.relevant[rows].reshape(len(keep), -1, 144)[:, 0]  # each image's first question's cells
    others = keep & ~evidence
    trained = arrays["target"].any(axis=1)  # [B] rows with a loss
    if step < 5:  # only the first question of each image is trained on
      np.testing.assert_array_equal(trained, np.arange(len(rows)) % recipe.questions_per_image == 0)
    if step < 5:  # k = 16 + step/5 of the other 128 tokens for every image: the count says nothing
      k = 16 + round(step / 5 * 128)
      assert (keep.sum(1) == k).all()
      np.testing.assert_array_equal((keep & evidence).sum(1), np.minimum(evidence.sum(1), k))  # evidence first
      if step:
        assert 0 < others.sum() < (~evidence).sum()
    else:  # after the curriculum: every question, whole images or a random >= 16 tokens
      assert trained.all() and (keep.sum(1) >= 16).all()
  assert (arrays["visual_keep"].sum(1) == len(arrays["prefix"])).any()


def test_evidence_first_drops_keep_one_questions_cells_first(tiny, tokenizer):
  """`evidence_drop_prob` images keep k visual tokens with one of their questions' referenced cells first; the
  rest keep all or a uniform random k; every question stays trained on."""
  recipe, cfg, split = tiny
  # relabelling off: here every question must stay trained (`test_dropped_images_are_answered_about_what_they_show`)
  recipe = dataclasses.replace(recipe, visual_drop_prob=0.0, evidence_drop_prob=1.0, relabel_drops=False)
  batches = recipe_mod.Batches(split, recipe, tokenizer.pad_token_id, cfg.image_token_id)
  for _ in range(4):
    arrays, rows = batches.next()
    keep = arrays["visual_keep"][:, batches.visual_slots]  # [Bi, 144]
    evidence = split.relevant[rows].reshape(len(keep), -1, 144)  # [Bi, Q, 144]
    k = keep.sum(1)
    assert (k >= 16).all() and arrays["target"].any(axis=1).all()
    first = (keep[:, None] & evidence).sum(2) == np.minimum(evidence.sum(2), k[:, None])  # [Bi, Q]
    assert first.any(axis=1).all()  # some question's cells all kept, or the first k of them
  arrays, _ = recipe_mod.Batches(split, dataclasses.replace(recipe, evidence_drop_prob=0.0), tokenizer.pad_token_id,
                                 cfg.image_token_id).next()
  assert arrays["visual_keep"].all()  # neither share: whole images


def _answer_on_kept_cells(objects, kept, question):
  """Naive: the answer to `question` about the objects with a pixel in a kept 8-px cell, worked out from the
  pixels and the generator's rules (a relation needs the only other object in the anchor's band to lie beyond
  it, clear of the band by `scenes.GAP`); None where the generator would not ask it."""
  grid = np.kron(kept.reshape(12, 12), np.ones((8, 8), bool))  # [96, 96] pixels of kept cells
  seen = [o for o in objects if (scenes.object_mask(o) & grid).any()]
  qtype, form, params = recipe_mod.question_spec(question)
  shape, colour = params.get("shape"), params.get("colour")
  if qtype == "existence":
    return "yes" if any((o.shape, o.colour) == (shape, colour) for o in seen) else "no"
  if qtype == "counting":
    n = sum((o.colour == colour) if form == "color" else (o.shape == shape) for o in seen)
    return str(n) if 1 <= n <= 4 else None
  if qtype == "attribute":
    hits = [o for o in seen if (o.shape == shape if form == "color" else o.colour == colour)]
    return None if len(hits) != 1 else (hits[0].colour if form == "color" else hits[0].shape)
  anchors = [o for o in seen if (o.shape, o.colour) == (shape, colour)]
  if len(anchors) != 1:
    return None
  band = [o for o in seen if o is not anchors[0] and scenes.in_relation(anchors[0], o, params["relation"], slack=scenes.GAP)]
  strict = [o for o in seen if o is not anchors[0] and scenes.in_relation(anchors[0], o, params["relation"])]
  if len(band) != 1 or len(strict) != 1:
    return None
  return strict[0].shape if form == "shape" else strict[0].colour


def test_dropped_images_are_answered_about_what_they_show(tiny, tokenizer):
  """`relabel_drops`: the questions of an image that lost tokens are answered about the objects a kept cell
  still shows (a naive pixel-level reference), or not trained on; whole images keep their answers."""
  recipe, cfg, split = tiny
  recipe = dataclasses.replace(recipe, visual_drop_prob=0.8, evidence_drop_prob=0.2, min_visual_keep=4)
  batches = recipe_mod.Batches(split, recipe, tokenizer.pad_token_id, cfg.image_token_id)
  plain = recipe_mod.Batches(split, dataclasses.replace(recipe, relabel_drops=False), tokenizer.pad_token_id,
                             cfg.image_token_id)
  decode = lambda ids, target: tokenizer.decode(ids[1:][target[:-1]], skip_special_tokens=True).strip()
  outcomes = {"same": 0, "changed": 0, "dropped": 0}
  for _ in range(30):
    arrays, rows = batches.next()
    keep = arrays["visual_keep"][:, batches.visual_slots]  # [Bi, 144]
    images = np.asarray(split.image_index[rows]).reshape(len(keep), -1)[:, 0]
    for slot, row in enumerate(rows):
      b = slot // recipe.questions_per_image
      objects = split.objects[images[b]]
      want = split.answers[row] if keep[b].all() else _answer_on_kept_cells(objects, keep[b], split.questions[row])
      trained = arrays["target"][slot].any()
      if want is None:
        assert not trained, split.questions[row]
        outcomes["dropped"] += 1
        continue
      assert trained and decode(arrays["ids"][slot], arrays["target"][slot]) == want, (split.questions[row], want)
      n = int(arrays["valid"][slot].sum())  # the suffix: question + answer + EOS, right-padded
      assert arrays["valid"][slot, :n].all() and not arrays["valid"][slot, n:].any()
      assert arrays["ids"][slot, n - 1] == tokenizer.eos_token_id
      outcomes["same" if want == split.answers[row] else "changed"] += 1
  assert min(outcomes.values()) > 20, outcomes  # every case occurs
  assert batches.relabelled["changed"] == outcomes["changed"] and batches.relabelled["dropped"] == outcomes["dropped"]
  whole, _ = plain.next()  # relabelling off: the same keep sets, every row at its whole-image answer
  assert whole["target"].any(axis=1).all()


def test_keep_counts_are_drawn_log_uniformly(tiny, tokenizer):
  recipe, cfg, split = tiny
  for log, below_40 in ((True, 0.42), (False, 0.19)):  # P(k < 40): log(40/16)/log(145/16) vs 24/129
    batches = recipe_mod.Batches(split, dataclasses.replace(recipe, log_keep=log), tokenizer.pad_token_id,
                                 cfg.image_token_id)
    k = np.array([batches.draw_keep(144) for _ in range(4000)])
    assert k.min() >= 16 and k.max() <= 144 and abs(np.mean(k < 40) - below_40) < 0.03, (log, np.mean(k < 40))


def test_question_specs_round_trip():
  for i in range(50):
    scene, _ = scenes.make_scene("train", i)
    assert recipe_mod.question_spec(scene.question) == (scene.question_type, scene.form, dict(scene.params))
    for question, answer in (q for qs in recipe_mod.candidate_questions(scene.objects).values() for q in qs):
      qtype, form, params = recipe_mod.question_spec(question)
      assert recipe_mod.question_text(qtype, form, params) == question
      assert recipe_mod.answer_on(qtype, form, params, scene.objects)[0] == answer
  with pytest.raises(ValueError, match="not a scenes question: 'what is love'"):
    recipe_mod.question_spec("what is love")


def _neighbour_reference(objects, cell):
  """Naive: the object with the most pixels in `cell`, then per direction the closest object whose box overlaps
  its row (left) / column (above) band and lies beyond it."""
  r, c = divmod(cell, 12)
  pixels = [scenes.object_mask(o)[8 * r:8 * r + 8, 8 * c:8 * c + 8].sum() for o in objects]
  if max(pixels) == 0:
    return [-1] * 4
  a = objects[int(np.argmax(pixels))]
  out = []
  for dx, dy in ((-1, 0), (0, -1)):  # left, above
    best = None
    for o in objects:
      ahead = dx * (o.x - a.x) + dy * (o.y - a.y)  # > 0: beyond, in that direction
      off = abs(o.y - a.y) if dy == 0 else abs(o.x - a.x)
      if o is not a and ahead > 0 and off < a.half + o.half and (best is None or ahead < best[0]):
        best = (ahead, o)
    out += [0, 0] if best is None else [list(scenes.COLOURS).index(best[1].colour) + 1,
                                        scenes.SHAPES.index(best[1].shape) + 1]
  return out


def test_neighbour_labels_match_a_naive_reference_and_answer_relations():
  asked = 0
  for i in range(12):
    scene, _ = scenes.make_scene("train", i)
    labels = recipe_mod.neighbour_labels(scene.objects)  # [144, 4]
    for cell in range(144):
      assert list(labels[cell]) == _neighbour_reference(scene.objects, cell), (i, cell)
    owner = recipe_mod.cell_owners(scene.objects)
    for question, _answer, (a, t) in recipe_mod.candidate_questions(scene.objects, ("relation",),
                                                                     with_referenced=True)["relation"]:
      anchor = next(j for j in (a, t) if f"the {scene.objects[j].colour} {scene.objects[j].shape}?" in question)
      target = t if anchor == a else a
      if " left of " in question or " above " in question:  # one lookup at the anchor's own cells
        col = 0 if " left of " in question else 2
        o = scene.objects[target]
        assert (labels[owner == anchor, col:col + 2] == [list(scenes.COLOURS).index(o.colour) + 1,
                                                        scenes.SHAPES.index(o.shape) + 1]).all(), question
        asked += 1
  assert asked >= 5


def test_the_neighbour_probe_trains_on_whole_images_only(tiny, tokenizer):
  """weight 0 == the answer loss; the probe and the decoder get its gradient; labels of an image with a dropped
  token change nothing."""
  import jax.numpy as jnp
  from flax import nnx

  from jaxprune.models.llava import Llava
  recipe, cfg, split = tiny
  recipe = dataclasses.replace(recipe, neighbour_weight=1.0, visual_drop_prob=0.5)
  model = Llava(cfg, dtype=jnp.float32, rngs=nnx.Rngs(0))
  probe = recipe_mod.neighbour_probe(cfg.text.hidden_size, 1)
  batches = recipe_mod.Batches(split, recipe, tokenizer.pad_token_id, cfg.image_token_id)
  arrays, _ = batches.next()
  while arrays["visual_keep"].all(axis=1).all() or not arrays["visual_keep"].all(axis=1).any():
    arrays, _ = batches.next()  # one batch with a whole image and a dropped one
  batch = {k: jnp.asarray(v) for k, v in arrays.items()}
  answer, _ = base.loss_fn(model, batch)
  with_probe, _ = recipe_mod.neighbour_objective(model, probe, batch, layer=1, weight=1.0)
  without, _ = recipe_mod.neighbour_objective(model, probe, batch, layer=1, weight=0.0)
  assert float(without) == pytest.approx(float(answer), rel=1e-6) and float(with_probe) > float(answer) + 0.1
  dropped = np.flatnonzero(~arrays["visual_keep"].all(axis=1))
  changed = np.array(arrays["neighbours"])
  changed[dropped] = (changed[dropped] + 1) % 5 * (changed[dropped] >= 0) - (changed[dropped] < 0)
  other, _ = recipe_mod.neighbour_objective(model, probe, {**batch, "neighbours": jnp.asarray(changed)}, layer=1,
                                            weight=1.0)
  assert float(other) == pytest.approx(float(with_probe), rel=1e-6)
  model_grads, probe_grads = nnx.grad(lambda m, p: recipe_mod.neighbour_objective(m, p, batch, layer=0, weight=1.0)[0],
                                      argnums=(0, 1))(model, probe)
  plain = nnx.grad(lambda m: base.loss_fn(m, batch)[0])(model)
  down = lambda g, i: np.asarray(g.language_model.layers[i].mlp.down_proj.kernel[...])
  assert np.abs(np.asarray(probe_grads.out.kernel[...])).max() > 1e-3
  assert np.abs(down(model_grads, 0) - down(plain, 0)).max() > 1e-4  # the probe reads layer 0's output ...
  np.testing.assert_allclose(down(model_grads, 1), down(plain, 1), atol=1e-7)  # ... and nothing after it


def test_pixels_are_the_image_processors(tiny):
  from jaxprune.data import common
  _, _, split = tiny
  images = [common.decode_image(scenes.make_item("train", i)["image"]) for i in range(3)]
  want = recipe_mod.build_image_processor()(images=images, return_tensors="np").pixel_values
  np.testing.assert_allclose(split.pixels[:3], want, atol=1e-5)


def test_visual_keep_equals_removing_the_tokens(tiny, tokenizer, runner):
  """Masked keys + renumbered positions (training) == the shorter sequence K = 0 pruning builds; on the
  trained tiny model (random weights would pass too, trained ones make the check less degenerate). Each side
  runs under one jit: eager dispatch of every op was what made this test slow."""
  import jax
  from flax import nnx

  from jaxprune.core.tokens import ModelInputs, make_tokens
  recipe, _, split = tiny
  model, cfg = runner.loaded.model, runner.config
  assert (cfg.text.num_layers, cfg.num_image_tokens) == (2, 144)
  graphdef, state = nnx.split(model)
  pad = tokenizer.pad_token_id
  batches = recipe_mod.Batches(split, dataclasses.replace(recipe, visual_drop_prob=1.0, focus_fraction=0.0), pad, cfg.image_token_id)
  arrays, rows = batches.next()
  keep = arrays["visual_keep"]  # [Bi, P]
  assert (keep.sum(1) < len(arrays["prefix"])).all() and (keep.sum(1) >= len(arrays["prefix"]) - 144 + 16).all()

  @jax.jit
  def training_loss(state, pixels, prefix, image_of, ids, valid, target, keep):
    m = nnx.merge(graphdef, state)
    return base.shared_prefix_loss(m, prefix, m.encode_images(pixels).features, image_of, ids, valid, target, keep)[0]

  @jax.jit
  def merged_hidden(state, ids, valid, pixels):  # -> [B, L, D] the full sequence's input embeddings
    return nnx.merge(graphdef, state).input_tokens(ModelInputs(ids=ids, valid=valid, pixels=pixels))[0].hidden

  @jax.jit
  def removed_loss(state, hidden, valid, image, ids, target):
    lm = nnx.merge(graphdef, state).language_model
    return base.answer_loss(lm, make_tokens(hidden, valid, image), ids, target)[0]

  got = training_loss(state, arrays["pixels"], arrays["prefix"], arrays["image_of"], arrays["ids"], arrays["valid"],
                      arrays["target"], keep)
  full = base.teacher_forcing([split.prompts[r] for r in rows], [split.answer_ids[r] for r in rows], pad)
  hidden = np.asarray(merged_hidden(state, full[0], full[1], arrays["pixels"][arrays["image_of"]]))
  ids, target = full[0], full[2]
  p = len(arrays["prefix"])
  n, length = len(rows), ids.shape[1]
  short = length - int((~keep).sum(1).min())
  h2, ids2, valid2, image2, target2 = (np.zeros((n, short, hidden.shape[-1]), np.float32),
                                       np.full((n, short), pad), np.zeros((n, short), bool), np.zeros((n, short), bool),
                                       np.zeros((n, short), bool))
  for b in range(n):
    start = int(np.argmax(full[1][b]))  # left padding: the prefix starts here
    kept = np.concatenate([np.arange(start), start + np.flatnonzero(keep[arrays["image_of"][b]]),
                           np.arange(start + p, length)])
    kept = kept[full[1][b, kept]]  # real tokens only
    h2[b, short - len(kept):], ids2[b, short - len(kept):] = hidden[b, kept], ids[b, kept]
    valid2[b, short - len(kept):], target2[b, short - len(kept):] = True, target[b, kept]
    image2[b, short - len(kept):] = ids[b, kept] == cfg.image_token_id
  want = removed_loss(state, h2, valid2, image2, ids2, target2)
  assert np.all(np.asarray(want) > 0)  # every row has answer tokens to score
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)


def test_a_few_steps_reduce_the_loss(trained):
  summary, _ = trained
  stage1 = summary["stage1_losses"]  # [(step, loss)] every 20 steps
  assert len(stage1) == 2 and stage1[-1][1] < stage1[0][1], stage1
  assert set(summary["stage1_test_cells"]) == {"colour", "shape", "centre row", "centre col", "centre"}
  losses = [loss for _, loss in summary["losses"]]  # stage 2, every 10 steps: the answers' + the probe's
  assert len(losses) == 4 and np.mean(losses[-2:]) < losses[0], losses
  answers = np.nanmean(list(summary["answer_losses"].values()), axis=0)  # [4] the answers' alone, mean per type
  assert np.mean(answers[-2:]) < 0.7 * answers[0], summary["answer_losses"]
  assert summary["steps"] == 40 and summary["steps_per_second"] > 0
  assert summary["grow_steps"] == 20 and len(summary["grow_losses"]) == 2  # the 1-layer decoder's 20 steps
  relabelled = summary["relabelled"]  # the deep stage's rows of images with dropped tokens (half the images)
  assert relabelled["rows"] > 0 and relabelled["changed"] + relabelled["dropped"] <= relabelled["rows"], relabelled


def test_cli_writes_a_checkpoint_the_eval_path_answers_with(trained, runner, tokenizer):
  import json
  summary, out = trained
  assert 0 <= summary["test_accuracy"] <= 1 and summary["checkpoint_mb"] < 25
  card = (out / "README.md").read_text()
  assert "python -m jaxprune.recipes.scenes --out" in card and "visual_drop_prob" in card
  assert json.loads((out / "config.json").read_text())["architectures"] == ["LlavaForConditionalGeneration"]

  assert runner.config.text.num_layers == 2 and runner.config.num_image_tokens == 144
  items = [scenes.make_item("test", i) for i in range(4)]
  pixels = np.concatenate([runner.item_pixels(it["image"], it["id"]) for it in items])
  batch = runner.batch([runner.prompt(it["question"], True) for it in items], pixels)
  answers = runner.decode(np.asarray(runner.generator(batch)["tokens"]))
  # the recipe's own eval of the loaded weights gives the same answers as the eval path
  split = recipe_mod.load_split("test", 4, tokenizer, runner.config)
  mine = base.evaluate(runner.loaded.model, tokenizer, split, blind=False, batch_size=4)["predictions"]
  assert answers == mine and sum(map(bool, answers)) >= 3, answers  # a 60-step model may stop at once on one


@pytest.mark.parametrize("flags, message", [
    (["--steps", "0"], "--steps must be >= 1"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--batch-size", "10"], "--batch-size 10 is not a multiple of --questions-per-image 16"),
    (["--grow-from-layers", "12"], "--grow-from-layers must lie in [1, --text-layers 12)"),
    (["--grow-from-layers", "3", "--grow-steps", "0"], "needs --grow-steps >= 1"),
    (["--visual-drop-prob", "1.5"], "--visual-drop-prob must lie in [0, 1]"),
    (["--visual-drop-prob", "0.9", "--evidence-drop-prob", "0.2"], "--evidence-drop-prob must lie in [0, 1 -"),
    (["--neighbour-weight", "-1"], "--neighbour-weight must be >= 0"),
    (["--grow-from-layers", "3", "--neighbour-layer", "3"], "--neighbour-layer must lie in [0, 3)"),
    (["--steps", "5", "--minutes", "3"], "not allowed with argument"),
    (["--text-layers", "many"], "invalid int value: 'many'"),
    (["--min-visual-keep", "200"], "exceeds the 144 visual tokens"),
    (["--keep-draw", "cubic"], "argument --keep-draw: invalid choice: 'cubic'"),
    (["--question-mix", "colour=1"], "argument --question-mix: unknown question type 'colour'"),
    (["--question-mix", "relation=-1"], "weight of relation must be >= 0"),
    (["--question-mix", "relation"], "'relation' is not TYPE=WEIGHT"),
])
def test_cli_refuses_bad_flags_with_one_line(tmp_path, flags, message):
  with pytest.raises(SystemExit) as e:
    recipe_mod.main(["--out", str(tmp_path / "x"), *flags])
  text = str(e.value.code)
  assert message in text and "\n" not in text and text.startswith(recipe_mod.PROG)
  assert not (tmp_path / "x").exists()


def test_cli_needs_out():
  with pytest.raises(SystemExit, match="the following arguments are required: --out"):
    recipe_mod.main([])


def test_growing_the_decoder_keeps_its_function(tokenizer):
  """A shallow decoder grown deeper (`grow_decoder`) gives the same logits: the copied layers sit at
  `grown_positions`, the new ones add nothing until trained; a wrong copy or a non-zero new output breaks it."""
  import jax.numpy as jnp
  from flax import nnx

  from jaxprune.core.tokens import ModelInputs
  from jaxprune.models.llava import Llava
  small_recipe = recipe_mod.Recipe(**{**TINY, "text_layers": 2})
  big_recipe = dataclasses.replace(small_recipe, text_layers=5)
  small = Llava(recipe_mod.model_config(small_recipe, tokenizer), dtype=jnp.float32, rngs=nnx.Rngs(1))
  big = Llava(recipe_mod.model_config(big_recipe, tokenizer), dtype=jnp.float32, rngs=nnx.Rngs(2))
  assert recipe_mod.grown_positions(2, 5) == [0, 2] and recipe_mod.grown_positions(3, 12) == [0, 4, 8]
  rng = np.random.default_rng(0)
  cfg = small.config
  ids = np.concatenate([[cfg.text.bos_token_id], np.full(cfg.num_image_tokens, cfg.image_token_id),
                        rng.integers(5, 30, 12)])[None].astype(np.int32)  # [1, L]
  pixels = rng.normal(size=(1, 3, 96, 96)).astype(np.float32)
  def logits(m):  # [1, L, V] through the eval path's merge + prefill
    tokens, _ = m.input_tokens(ModelInputs(ids=jnp.asarray(ids), valid=jnp.ones(ids.shape, bool),
                                           pixels=jnp.asarray(pixels)))
    h, _, _ = m.language_model.prefill(tokens, extra_slots=0)
    return np.asarray(m.language_model.logits(h))
  want = logits(small)
  assert np.abs(logits(big) - want).max() > 1e-2  # different before growing
  recipe_mod.grow_decoder(small, big)
  np.testing.assert_allclose(logits(big), want, atol=1e-5, rtol=1e-5)
  kernels = lambda layer: [layer.attn.o_proj.kernel.value, layer.mlp.down_proj.kernel.value]
  assert all(np.all(np.asarray(k) == 0) for i in (1, 3, 4) for k in kernels(big.language_model.layers[i]))
  assert not any(np.all(np.asarray(k) == 0) for i in (0, 2) for k in kernels(big.language_model.layers[i]))
