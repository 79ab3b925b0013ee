"""The easy-VQA trainer: labels read off the answers, balanced sampling, stage 1, and an end-to-end smoke run."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from jaxprune.recipes import easyvqa as train

SMALL = dict(vision_hidden=32, vision_layers_used=2, text_hidden=32, text_layers=2, vision_pretrain_images=8)


@pytest.mark.parametrize("question, answer, present", [
    ("Is there a red shape?", "yes", True),
    ("Is there a red shape?", "no", False),
    ("Is there not a red shape?", "no", True),
    ("Does the image not contain a circle?", "yes", False),
    ("Is no blue shape present?", "yes", False),
    ("Is a triangle present?", "yes", True),
])
def test_names_present_attribute(question, answer, present):
  assert train.names_present_attribute(question, answer) is present


@pytest.mark.parametrize("question, negated", [
    ("Is there a red shape?", False), ("Is there not a red shape in the image?", True),
    ("Is no circle present?", True), ("Does the image not contain a blue shape?", True),
    ("Is a triangle present?", False), ("Does the image contain a circle?", False),
])
def test_is_negated(question, negated):
  assert train.is_negated(question) is negated


def test_image_attributes_read_off_answers():
  questions = ["What shape is in the image?", "What color is the shape?",  # image 0: circle, red
               "Is there a blue shape?", "Is there not a triangle?",  # image 1: blue, triangle
               "Is there a green shape?", "What is the yellow shape?"]  # image 2: nothing; image 3: rectangle, yellow
  answers = ["circle", "red", "yes", "no", "no", "rectangle"]
  split = train.Split(questions, answers, [train.question_kind(q, a) for q, a in zip(questions, answers)], [], [],
                      [], np.array([0, 0, 1, 1, 2, 3]), np.zeros((4, 3, 8, 8), np.float32))
  shape, color = train.image_attributes(split)
  np.testing.assert_array_equal(shape, [0, 2, -1, 1])
  np.testing.assert_array_equal(color, [5, 1, -1, 7])


@pytest.fixture(scope="module")
def small_split():
  recipe = train.Recipe(**SMALL)
  tokenizer, processor = train.build_tokenizer(), train.build_image_processor()
  cfg = train.model_config(recipe, -(-len(tokenizer) // 8) * 8, bos=tokenizer.bos_token_id,
                           eos=tokenizer.eos_token_id, pad=tokenizer.pad_token_id,
                           image_token=tokenizer.convert_tokens_to_ids("<image>"))
  return recipe, tokenizer, cfg, train.load_split("train", tokenizer, processor, cfg, limit=800)


@pytest.mark.parametrize("balance", [True, False])
def test_yes_no_questions_are_balanced(small_split, balance):
  recipe, tokenizer, _, split = small_split
  batches = train.Batches(split, dataclasses.replace(recipe, balance_yes_no=balance, plain_yes_no_steps=0),
                          tokenizer.pad_token_id)
  rows = np.concatenate([batches.next()[1] for _ in range(60)])
  colour = [r for r in rows if split.kinds[r] == "color yes/no"]
  present = np.mean([train.names_present_attribute(split.questions[r], split.answers[r]) for r in colour])
  kinds = np.asarray(split.kinds)[rows]
  for kind, share in recipe.family_shares:  # the recipe's family proportions hold in what is drawn
    assert abs(np.mean(kinds == kind) - share) < 0.05, kind
  natural = np.mean([train.names_present_attribute(q, a) for q, a, k in zip(split.questions, split.answers,
                                                                             split.kinds) if k == "color yes/no"])
  assert natural < 0.25  # easy-VQA mostly names a colour the image lacks
  if balance:
    assert abs(present - 0.5) < 0.1
  else:
    assert abs(present - natural) < 0.1


def test_stage1_trains_the_models_own_tower(small_split):
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from jaxprune.models.llava import Llava
  recipe, _, cfg, split = small_split
  model = Llava(cfg, dtype=jnp.float32, rngs=nnx.Rngs(0))
  before = jax.tree.map(np.array, nnx.state(model.vision_tower, nnx.Param))
  info = train.pretrain_vision(model, dataclasses.replace(recipe, vision_pretrain_steps=40), split, test=split,
                               log_every=5)
  losses = [loss for _, loss in info["losses"]]
  assert np.mean(losses[-2:]) < 0.8 * losses[0]
  assert 0 <= info["test_shape_acc"] <= 1 and 0 <= info["test_color_acc"] <= 1
  after = nnx.state(model.vision_tower, nnx.Param)
  assert any(not np.array_equal(a, np.asarray(b)) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))


def test_train_cli_writes_a_loadable_checkpoint_with_card(tmp_path):
  from jaxprune.convert.hf import load_model
  out = tmp_path / "ckpt"
  summary = train.main(["--out", str(out), "--steps", "3", "--warmup-steps", "1", "--vision-pretrain-steps", "2",
                        "--vision-pretrain-images", "8", "--train-limit", "300", "--test-limit", "32",
                        "--vision-hidden", "32", "--vision-layers", "2", "--text-hidden", "32", "--text-layers", "2"])
  assert 0 <= summary["test_accuracy"] <= 1 and summary["checkpoint_mb"] < 20
  loaded = load_model(out, dtype="float32")
  assert loaded.config.text.num_layers == 2 and loaded.config.num_image_tokens == 256
  card = (out / "README.md").read_text()
  assert "Stage 1" in card and "python -m jaxprune.train --out" in card and "balance_yes_no" in card
  assert json.loads((out / "config.json").read_text())["architectures"] == ["LlavaForConditionalGeneration"]


def test_negation_curriculum_holds_back_negated_yes_no_questions(small_split):
  recipe, tokenizer, _, split = small_split
  batches = train.Batches(split, dataclasses.replace(recipe, plain_yes_no_steps=30), tokenizer.pad_token_id)
  early = np.concatenate([batches.next()[1] for _ in range(30)])
  late = np.concatenate([batches.next()[1] for _ in range(30)])

  def yes_no(rows):
    return [r for r in rows if split.kinds[r].endswith("yes/no")]

  def negated(rows):
    return [r for r in yes_no(rows) if train.is_negated(split.questions[r])]

  assert len(yes_no(early)) > 0.5 * len(early) and not negated(early)
  assert 0.35 < len(negated(late)) / len(yes_no(late)) < 0.65  # about half of easy-VQA's yes/no are negated
  colour = [r for r in early if split.kinds[r] == "color yes/no"]  # still balanced while plain
  present = np.mean([train.names_present_attribute(split.questions[r], split.answers[r]) for r in colour])
  assert abs(present - 0.5) < 0.1


def test_frozen_tower_states_give_the_pixel_path_loss(small_split):
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from jaxprune.models.llava import Llava
  recipe, tokenizer, cfg, split = small_split
  model = Llava(cfg, dtype=jnp.float32, rngs=nnx.Rngs(0))
  states = train.tower_states(model, split.pixels[:5], batch_size=2)  # [2, I, Nv, Dv]: as is, mirrored
  assert states.shape == (2, 5, cfg.num_image_tokens, cfg.vision.hidden_size)
  for flip, pixels in ((0, split.pixels[:5]), (1, split.pixels[:5, ..., ::-1])):
    np.testing.assert_allclose(states[flip], model.encode_images(pixels).tower_states, atol=1e-5)

  arrays, _ = train.Batches(split, dataclasses.replace(recipe, augment=False), tokenizer.pad_token_id).next()
  frozen = {k: v for k, v in arrays.items() if k != "pixels"}
  frozen["tower_states"] = np.asarray(model.encode_images(arrays["pixels"]).tower_states)
  want, got = train.loss_fn(model, arrays), train.loss_fn(model, frozen)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)

  tower = jax.tree.map(np.array, nnx.state(model.vision_tower, nnx.Param))
  projector = jax.tree.map(np.array, nnx.state(model.projector, nnx.Param))
  train.train(model, dataclasses.replace(recipe, steps=3, warmup_steps=1, freeze_vision=True), split,
              tokenizer.pad_token_id, log_every=1)
  for a, b in zip(jax.tree.leaves(tower), jax.tree.leaves(nnx.state(model.vision_tower, nnx.Param))):
    np.testing.assert_array_equal(a, np.asarray(b))  # frozen: not even weight decay moved it
  assert any(not np.array_equal(a, np.asarray(b))
             for a, b in zip(jax.tree.leaves(projector), jax.tree.leaves(nnx.state(model.projector, nnx.Param))))
