"""Train the scenes lab LLaVA (`checkpoints/llava-scenes`): a deep, narrow model for "where to prune" experiments.

  python -m jaxprune.recipes.scenes --out checkpoints/llava-scenes --minutes 60   # a 60-min budget, 2 cores

Growing the decoder. A randomly initialised 12-layer decoder needs thousands of steps to learn to find the
question's object among 144 tokens, and on 2 CPU cores it runs about 1 step/s: in pilots its loss stayed at
chance for a whole hour. A 3-layer decoder of the same width runs about 5 steps/s and learns the lookups in
~2000 steps. So stage 2 first trains the 3-layer decoder (`grow_from_layers`, `grow_fraction` of the time),
then grows it to 12 layers without changing what it computes (`grow_decoder`: its layers at 0, 4, 8, the new
ones inserted as identities with zero residual outputs, as Net2Net's deeper operator does) and trains all 12
for the rest of the budget.

LLaVA-1.5's architecture at lab size, so every pruning method and the HF converter apply unchanged: a CLIP-style
ViT on the 96x96 `scenes` images with 8-px patches (a 12x12 grid, 144 visual tokens), a 2-layer GELU projector
and a 12-layer Llama decoder of width 64. The machinery is the easy-VQA recipe's (`jaxprune.recipes.easyvqa`:
tokenizer, shared-prefix loss, optimizer, train loop, greedy eval, HF export); what differs is here.

Keeping information where it is. The lab's bounds `oracle` / `anti-oracle` prune at K = 0, before the LLM, so
what a kept visual token knows is decided by the tower alone (the projector is per token). A tower trained
end to end on the answers is free to copy a count or a colour into every background token (easy-VQA's tower
did: its model reads answers from background patches). So:
  stage 1  the tower alone learns a dense, per-patch task: for each 8-px cell, the colour and shape of the
           object covering it (or background) and the cell of that object's centre (which groups an object's
           cells and states its position, for relations, even after K = 0 renumbering) and a flag on the
           centre cell itself (one per object: what counting counts).
           Background cells are trained to say "background", so nothing asks them to carry anyone's evidence;
  stage 2  the tower is frozen (its states computed once per image) and the projector + decoder learn the
           questions. No answer gradient reaches the tower, so its tokens stay local.
Random visual-token dropping (`visual_drop_prob`): that share of the training images keeps a random k of the
144 tokens (k log-uniform in [min_visual_keep, 144]), dropped before the LLM and renumbered exactly as K = 0
pruning does. The decoder then has seen short visual prefixes (16 kept tokens is 11% of the sequence it
otherwise knows) and images whose evidence is gone, where the only right move is the language prior: what
`oracle` and `anti-oracle` at 16 tokens ask of it. Uniform drops alone leave a shortcut: the share of kept
cells that are blue, times 144, estimates "how many blue shapes" without bias, and a model that counts that
way over-counts whenever the kept set favours the evidence (oracle@0:16 counted at chance, one too many, in
session 12's model). So another `evidence_drop_prob` of the images keeps the same k with one random question's
referenced cells first (k drawn without looking at the evidence, so the sequence length says nothing).
Reporting what is seen (`relabel_drops`). Even so, an image's answers stayed the whole image's under any drop,
so a count was still best guessed from what is left of a colour, and an object with no kept cell was still there.
Now the questions of an image that lost tokens are answered about the objects that some kept cell still shows
(`Batches.relabel`; no answer there, e.g. the anchor gone: not trained), so a count counts the objects in view.
The study prunes to 4-32 tokens, so k is drawn log-uniformly (`log_keep`): 42% of dropped images keep < 40.
Relations in one lookup (`neighbour_weight`). A relation question takes two hops at the text
positions: find the anchor, then the object on its row or column beyond it, by comparing positions; in the CPU
budget the decoder never learnt the second hop (relation 53-60% whatever the run; with only the anchor and target
kept, 94%). The visual tokens can do the geometry themselves, question-blind: the objects left of and above a
token's object come earlier in the raster order, so causal attention reaches them. An auxiliary linear probe on
the visual tokens' states after one decoder layer (training only, whole images only) asks for the colour and shape
of those two neighbours (`neighbour_labels`); then "left of A" reads A's label and "right of A" finds the object
whose label is A. It lives in the decoder, after any K = 0 pruning, so it leaks nothing into the tower's tokens.
More questions per image: each training scene carries its generated question (answer-balanced, with
distractors) plus `questions_per_image - 1` more about the same scene, answered by the task's reference solver
(`scenes.solve`); the image prefix (148 of ~165 tokens) then runs once for several questions. The drawn
questions' types follow `question_mix`: most are relation and counting questions (two-hop and many-object
lookups), which a short budget otherwise leaves undertrained while attribute/existence saturate early.

Shapes: B batch, Bi images, P prefix, S suffix, Nv visual tokens, Dv tower width, C cells.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxprune.data import scenes
from jaxprune.recipes import easyvqa as base

IMAGE_SIZE = scenes.IMAGE_SIZE  # 96
PATCH_SIZE = 8  # a 12x12 grid: 144 visual tokens
GRID = IMAGE_SIZE // PATCH_SIZE
PROG = "python -m jaxprune.recipes.scenes"


@dataclasses.dataclass(frozen=True)
class Recipe(base.Recipe):
  """Every knob of a run (the easy-VQA recipe's, with the scenes defaults); written into the model card."""

  steps: int = 1200  # of the deep decoder, after growing (--minutes sets both stages' steps from the time)
  batch_size: int = 128  # image-question sequences per step
  questions_per_image: int = 16  # the scene's generated question + 15 more: 8 images per step
  blind_per_step: int = 8  # text-only sequences (generated questions only: their answers are balanced)
  family_shares: tuple[tuple[str, float], ...] | None = None  # all questions of an image are used
  lr: float = 3e-3
  warmup_steps: int = 150
  vision_pretrain_steps: int = 1500
  vision_pretrain_images: int = 32
  vision_pretrain_lr: float = 3e-3
  augment: bool = False  # a mirror image would swap "left of" and "right of"
  balance_yes_no: bool = False  # easy-VQA's reweighting; scenes answers are balanced by construction
  plain_yes_no_steps: int = 0
  freeze_vision: bool = True
  vision_hidden: int = 96
  vision_layers_used: int = 4
  vision_heads: int = 4
  text_hidden: int = 64
  text_layers: int = 12
  text_heads: int = 4
  text_kv_heads: int = 2
  mlp_ratio: int = 3
  tie_embeddings: bool = False
  eval_batch_size: int = 50
  # scenes
  train_images: int = 16000  # training scenes (items 0.. of the train split)
  visual_drop_prob: float = 0.3  # share of training images that keep only a random subset of visual tokens
  min_visual_keep: int = 16
  log_keep: bool = True  # k of a dropped image log-uniform in [min_visual_keep, 144] (False: uniform)
  # share of training images that keep a random k with one question's evidence first (see `visual_keep`): under
  # uniform drops alone the share of kept cells of a colour estimates a count, which over-counts any kept set that
  # favours the evidence (oracle's, or a good method's)
  evidence_drop_prob: float = 0.2
  # answer the questions of an image with dropped tokens about the objects still seen (any cell kept; `relabel`)
  # instead of the whole image: otherwise a count or "is there" is inferred from how much of a colour survives,
  # which over-counts any kept set that favours the evidence and credits a kept set that lost the object
  relabel_drops: bool = True
  focus_fraction: float = 0.0  # share of stage-2 steps under the distractor curriculum (0: none; see visual_keep)
  # weight of an auxiliary loss: a linear probe on the visual tokens' states after decoder layer `neighbour_layer`
  # (of the shallow decoder when growing; after growing, where that layer went) predicts `neighbour_labels`, on
  # whole images only (0: none). Training only; the probe is not exported. It took relation from 53-60% to 80%.
  neighbour_weight: float = 0.5
  neighbour_layer: int = 1
  grow_from_layers: int = 3  # stage 2 first trains a decoder this deep, then grows it to text_layers (0: no growing)
  grow_steps: int = 8000  # stage-2 steps of the shallow decoder (with --minutes: set from grow_fraction of the time)
  grow_fraction: float = 0.75  # share of stage 2's time spent on the shallow decoder under --minutes
  deep_lr: float | None = 1e-3  # peak lr after growing (None: lr); a full-lr restart undoes the shallow stage's end
  # type weights of the drawn training questions (each scene's own question keeps the 1-in-4 rotation): the
  # two-hop relation and counting questions get most of the steps, attribute/existence are learnt early
  question_mix: tuple[tuple[str, float], ...] = (("attribute", 0.15), ("existence", 0.15), ("counting", 0.3),
                                                 ("relation", 0.4))


def model_config(recipe: Recipe, tokenizer):
  vocab = -(-len(tokenizer) // 8) * 8
  return base.model_config(recipe, vocab, bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id,
                           pad=tokenizer.pad_token_id, image_token=tokenizer.convert_tokens_to_ids("<image>"),
                           image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)


def build_tokenizer():
  return base.build_tokenizer([*scenes.vocabulary(), "?"])


def build_image_processor():
  return base.build_image_processor(IMAGE_SIZE)


def clip_pixels(images: np.ndarray) -> np.ndarray:
  """uint8 [N, H, W, 3] at 96x96 -> [N, 3, H, W] float32, as `build_image_processor()` makes them (no resize
  at this size; rescale, CLIP mean/std) without PIL round trips."""
  x = images.astype(np.float32) * np.float32(1 / 255)
  x = (x - np.asarray(base.CLIP_MEAN, np.float32)) / np.asarray(base.CLIP_STD, np.float32)
  return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# ------------------------------------------------------------------------------------ questions, labels


def question_text(qtype: str, form: str, params: dict) -> str:
  """The question of a (type, form, params) spec, worded as the generator words it."""
  shape, colour, relation = params.get("shape"), params.get("colour"), params.get("relation")
  return {("attribute", "color"): f"what color is the {shape}?",
          ("attribute", "shape"): f"what shape is the {colour} object?",
          ("counting", "shape"): f"how many {shape}s are there?",
          ("counting", "color"): f"how many {colour} shapes are there?",
          ("existence", "exists"): f"is there a {colour} {shape}?",
          ("relation", "shape"): f"what shape is {relation} the {colour} {shape}?",
          ("relation", "color"): f"what color is the shape {relation} the {colour} {shape}?"}[qtype, form]


@functools.cache
def _question_specs() -> dict[str, tuple[str, str, tuple[tuple[str, str], ...]]]:
  specs = {}
  for shape in scenes.SHAPES:
    specs[question_text("attribute", "color", {"shape": shape})] = ("attribute", "color", (("shape", shape),))
    specs[question_text("counting", "shape", {"shape": shape})] = ("counting", "shape", (("shape", shape),))
  for colour in scenes.COLOURS:
    specs[question_text("attribute", "shape", {"colour": colour})] = ("attribute", "shape", (("colour", colour),))
    specs[question_text("counting", "color", {"colour": colour})] = ("counting", "color", (("colour", colour),))
    for shape in scenes.SHAPES:
      params = {"shape": shape, "colour": colour}
      specs[question_text("existence", "exists", params)] = ("existence", "exists", tuple(params.items()))
      for relation in scenes.RELATIONS:
        for form in ("shape", "color"):
          params = {"shape": shape, "colour": colour, "relation": relation}
          specs[question_text("relation", form, params)] = ("relation", form, tuple(params.items()))
  return specs


def question_spec(question: str) -> tuple[str, str, dict]:
  """(type, form, params) of a scenes question: the inverse of `question_text`."""
  try:
    qtype, form, params = _question_specs()[question]
  except KeyError:
    raise ValueError(f"not a scenes question: {question!r}") from None
  return qtype, form, dict(params)


def answer_on(qtype: str, form: str, params: dict, objects: Sequence[scenes.SceneObject]) -> tuple[str, tuple] | None:
  """(answer, referenced object indices) of a question about `objects`, or None where the generator would not ask
  it: ambiguous (`scenes.solve` refuses), a count outside 1-4, or a relation with another object inside the
  anchor's band (`slack=GAP`)."""
  try:
    answer, referenced = scenes.solve(qtype, form, params, objects)
  except ValueError:
    return None
  if qtype == "counting" and answer not in {str(k) for k in scenes.COUNTS}:
    return None
  if qtype == "relation":
    anchor = next(i for i in referenced if (objects[i].shape, objects[i].colour) == (params["shape"], params["colour"]))
    near = [o for i, o in enumerate(objects)
            if i != anchor and scenes.in_relation(objects[anchor], o, params["relation"], slack=scenes.GAP)]
    if len(near) != 1:
      return None
  return answer, tuple(referenced)


def candidate_questions(objects: Sequence[scenes.SceneObject], types: Sequence[str] = scenes.QUESTION_TYPES, *,
                        with_referenced: bool = False) -> dict[str, list[tuple]]:
  """Every question of the templates of `types` this scene answers unambiguously -> {type: [(question, answer)]}
  (with_referenced: [(question, answer, referenced object indices)]), answered by `answer_on`."""
  out: dict[str, list[tuple[str, str]]] = {t: [] for t in types}

  def ask(qtype: str, form: str, params: dict) -> None:
    if qtype not in out or (solved := answer_on(qtype, form, params, objects)) is None:
      return
    question, (answer, referenced) = question_text(qtype, form, params), solved
    out[qtype].append((question, answer, referenced) if with_referenced else (question, answer))

  for shape in scenes.SHAPES:
    ask("attribute", "color", {"shape": shape})
    ask("counting", "shape", {"shape": shape})
  for colour in scenes.COLOURS:
    ask("attribute", "shape", {"colour": colour})
    ask("counting", "color", {"colour": colour})
    for shape in scenes.SHAPES:
      ask("existence", "exists", {"shape": shape, "colour": colour})
  for obj in objects:
    for relation in scenes.RELATIONS:
      params = {"shape": obj.shape, "colour": obj.colour, "relation": relation}
      ask("relation", "shape", params)
      ask("relation", "color", params)
  return out


def draw_questions(objects: Sequence[scenes.SceneObject], n: int, rng: np.random.Generator,
                   mix: Sequence[tuple[str, float]] | None = None) -> list[tuple[str, str, str, tuple[int, ...]]]:
  """n (type, question, answer, referenced objects) about a scene: a type by the weights of `mix` (uniformly
  if None; redrawn if this scene has no such question), then an answer uniformly among that type's answers
  here (so "no" and small counts do not dominate), then a question with it. Candidates are enumerated per
  type, only for the types drawn."""
  types, weights = zip(*mix) if mix else (scenes.QUESTION_TYPES, (1.0,) * len(scenes.QUESTION_TYPES))
  if unknown := set(types) - set(scenes.QUESTION_TYPES):
    raise ValueError(f"question mix: unknown question types {sorted(unknown)} (known: {scenes.QUESTION_TYPES})")
  if min(weights) < 0 or sum(weights) <= 0:
    raise ValueError(f"question mix: weights must be >= 0 with a positive sum, got {dict(zip(types, weights))}")
  p = np.asarray(weights, float) / sum(weights)
  candidates: dict[str, list[tuple]] = {}
  out = []
  while len(out) < n:
    qtype = types[rng.choice(len(types), p=p)]
    if qtype not in candidates:
      candidates.update(candidate_questions(objects, (qtype,), with_referenced=True))
    if not candidates[qtype]:  # e.g. no unique anchor for a relation; attribute/existence always have some
      if all(not candidates.get(t, True) for t, w in zip(types, p) if w > 0):
        raise ValueError(f"question mix {dict(zip(types, weights))}: this scene has no question of those types "
                         "(attribute and existence always have one)")
      continue
    answers = sorted({a for _, a, _ in candidates[qtype]})
    answer = answers[rng.integers(len(answers))]
    questions = [(q, ref) for q, a, ref in candidates[qtype] if a == answer]
    question, referenced = questions[rng.integers(len(questions))]
    out.append((qtype, question, answer, referenced))
  return out


def cell_owners(objects: Sequence[scenes.SceneObject]) -> np.ndarray:
  """int [C]: the object covering each 8-px cell (row-major), -1 on background; a cell touched by two objects
  belongs to the one with more pixels in it."""
  counts = np.stack([scenes.object_mask(o).reshape(GRID, PATCH_SIZE, GRID, PATCH_SIZE).sum((1, 3)).ravel()
                     for o in objects])  # [objects, C]
  return np.where(counts.max(0) > 0, counts.argmax(0), -1)


NEIGHBOUR_RELATIONS = ("left of", "above")  # the two whose objects come earlier in the raster order


def neighbour_labels(objects: Sequence[scenes.SceneObject]) -> np.ndarray:
  """int32 [C, 4] per 8-px cell: the colour and shape (1..4; 0: none) of the nearest object left of the cell's
  object, then of the nearest one above it, in the task's sense (`scenes.in_relation`); -1 on background.

  Targets of the decoder's auxiliary probe (`neighbour_weight`), never of the tower: with them a visual token
  in the decoder says what lies left of / above its object, and every relation question becomes one lookup
  ("left of A": A's left label; "right of A": the object whose left label is A; `in_relation` is symmetric).
  Both neighbours precede the token in the raster order, so causal attention over the image can find them."""
  owner = cell_owners(objects)
  labels = np.full((GRID * GRID, 2 * len(NEIGHBOUR_RELATIONS)), -1, np.int32)
  for i, obj in enumerate(objects):
    row = []
    for relation in NEIGHBOUR_RELATIONS:
      beyond = [(scenes.relation_offsets(obj, o, relation)[0], o) for j, o in enumerate(objects)
                if j != i and scenes.in_relation(obj, o, relation)]
      nearest = min(beyond, key=lambda t: t[0])[1] if beyond else None
      row += [0, 0] if nearest is None else [list(scenes.COLOURS).index(nearest.colour) + 1,
                                             scenes.SHAPES.index(nearest.shape) + 1]
    labels[owner == i] = row
  return labels


# Tried and dropped: per-cell labels of the nearest object left/right/above/below (a relation question in one hop,
# read at its anchor). Relation rose only from 57% to 60% (88.5% overall), and the lab stopped discriminating: at
# layer 0 with 16 tokens `random` 76.9% >= `oracle` 75.9%, `anti-oracle` 67.5% vs the blind floor 31.4%, since a
# token that also describes its neighbours answers for them. A lab token must describe its own cell only: the
# tower's. In the decoder, after K = 0 pruning, neighbour labels leak nothing (`neighbour_labels`).
def cell_labels(objects: Sequence[scenes.SceneObject]) -> np.ndarray:
  """int32 [C, 5] per 8-px cell (row-major): colour (0 background, 1..4), shape (0, 1..4), the row and
  column of the centre cell of the object covering it (-1 on background), and 1 on the cell that is its
  object's centre (0 elsewhere: one flag per object, what counting counts). A cell touched by two objects
  belongs to the one with more pixels in it."""
  owner = cell_owners(objects)  # [C]
  colour = np.array([list(scenes.COLOURS).index(o.colour) + 1 for o in objects])
  shape = np.array([scenes.SHAPES.index(o.shape) + 1 for o in objects])
  centre = np.array([[min(int(o.y // PATCH_SIZE), GRID - 1), min(int(o.x // PATCH_SIZE), GRID - 1)] for o in objects])
  bg = owner < 0
  own = np.maximum(owner, 0)
  row, col = np.divmod(np.arange(GRID * GRID), GRID)
  is_centre = ~bg & (centre[own, 0] == row) & (centre[own, 1] == col)
  return np.stack([np.where(bg, 0, colour[own]), np.where(bg, 0, shape[own]),
                   np.where(bg, -1, centre[own, 0]), np.where(bg, -1, centre[own, 1]), is_centre],
                  axis=1).astype(np.int32)


# --------------------------------------------------------------------------------------------- data


@dataclasses.dataclass
class ScenesSplit(base.Split):
  """`base.Split` + per-image cell labels [I, C, 5] (stage 1), which questions are the generated ones, the
  cells of each question's referenced objects (the distractor curriculum, evidence-first drops) and per-image
  neighbour labels [I, C, 4] (the decoder's auxiliary probe)."""

  cells: np.ndarray | None = None
  neighbours: np.ndarray | None = None
  generated: np.ndarray | None = None  # [N] bool: the item's own question (vs one drawn by `draw_questions`)
  relevant: np.ndarray | None = None  # [N, C] bool: cells covered by the question's referenced objects
  # what relabelling a question under dropped tokens needs (`Batches.relabel`): per image its objects and the
  # cells each one touches, and the tokens of every answer the task has
  objects: list[tuple[scenes.SceneObject, ...]] | None = None
  object_cells: list[np.ndarray] | None = None  # per image [objects, C] bool
  answer_tokens: dict[str, list[int]] | None = None  # answer -> its tokens + EOS


def load_split(split: str, num_images: int, tokenizer, cfg, *, questions_per_image: int = 1,
               seed: int = 0, question_mix: Sequence[tuple[str, float]] | None = None) -> ScenesSplit:
  """Scenes 0..num_images-1 of a split (exactly the items `load_task("scenes")` holds), each with its own
  question first and then `questions_per_image - 1` drawn ones (types weighted by `question_mix`)."""
  from jaxprune.prompts import build_prompt
  if num_images < 1 or questions_per_image < 1:
    raise ValueError(f"scenes {split}: need >= 1 image and question per image, got {num_images}, {questions_per_image}")
  rng = np.random.default_rng([seed, 7, scenes._SPLIT_CODES[split]])
  images = np.empty((num_images, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  cells = np.empty((num_images, GRID * GRID, 5), np.int32)
  neighbours = np.empty((num_images, GRID * GRID, 2 * len(NEIGHBOUR_RELATIONS)), np.int32)
  kinds, questions, answers, index, generated, relevant = [], [], [], [], [], []
  objects_of, object_cells_of = [], []
  for i in range(num_images):
    scene, item_rng = scenes.make_scene(split, i)
    images[i], _ = scenes.render(scene, item_rng)  # same pixels as the item's PNG
    cells[i] = cell_labels(scene.objects)
    neighbours[i] = neighbour_labels(scene.objects)
    object_cells = [scenes.relevant_cells(scenes.object_mask(o), GRID) for o in scene.objects]  # [objects][C]
    objects_of.append(tuple(scene.objects)), object_cells_of.append(np.asarray(object_cells, bool))
    drawn = draw_questions(scene.objects, questions_per_image - 1, rng, question_mix) if questions_per_image > 1 else []
    own = (scene.question_type, scene.question, scene.answer, scene.referenced)
    for k, (qtype, question, answer, referenced) in enumerate([own, *drawn]):
      kinds.append(qtype), questions.append(question), answers.append(answer), index.append(i)
      generated.append(k == 0)
      relevant.append(np.any([object_cells[r] for r in referenced], axis=0) if referenced
                      else np.zeros(GRID * GRID, bool))
  prompt_of, blind_of = {}, {}  # a few hundred distinct strings: tokenize each once
  for q in questions:
    if q not in prompt_of:
      prompt_of[q] = build_prompt(tokenizer, q, image_token_id=cfg.image_token_id,
                                  num_image_tokens=cfg.num_image_tokens)
      blind_of[q] = build_prompt(tokenizer, q, image_token_id=None, num_image_tokens=0)
      if tokenizer.unk_token_id in prompt_of[q].ids:
        raise ValueError(f"scenes {split}: the tokenizer has no word for part of {q!r}")
  # every answer the task has, not only this split's: a relabelled question may need any of them
  every_answer = {*scenes.COLOURS, *scenes.SHAPES, "yes", "no", *(str(k) for k in scenes.COUNTS), *answers}
  answer_tokens = {a: tokenizer.encode(a, add_special_tokens=False) + [tokenizer.eos_token_id] for a in every_answer}
  return ScenesSplit(questions, answers, kinds, [prompt_of[q] for q in questions], [blind_of[q] for q in questions],
                     [answer_tokens[a] for a in answers], np.asarray(index, np.int32), clip_pixels(images),
                     cells=cells, neighbours=neighbours, generated=np.asarray(generated),
                     relevant=np.asarray(relevant, bool), objects=objects_of, object_cells=object_cells_of,
                     answer_tokens=answer_tokens)


class Batches(base.Batches):
  """Every question of `images_per_step` images (an epoch-wise permutation), blind questions drawn from the
  generated ones, and `visual_keep` [Bi, P]: which prefix tokens survive, under the distractor curriculum for
  the first `focus_fraction` of the steps, then random visual-token dropping."""

  def __init__(self, split: ScenesSplit, recipe: Recipe, pad_id: int, image_token_id: int,
               states: np.ndarray | None = None):
    super().__init__(split, recipe, pad_id, states)
    if any(len(q) != recipe.questions_per_image for q in self.questions_of):
      raise ValueError(f"every scene needs exactly {recipe.questions_per_image} questions")
    self.generated_rows = np.flatnonzero(split.generated)
    self.visual_slots = np.flatnonzero(self.prefix == image_token_id)  # [Nv] prefix positions of the image
    self.focus_steps = int(recipe.focus_fraction * recipe.steps)
    self.step = 0  # batches handed out so far
    self.relabelled = {"changed": 0, "dropped": 0, "rows": 0}  # question rows of images with dropped tokens
    if recipe.relabel_drops:
      if split.objects is None:
        raise ValueError("relabel_drops needs the split's objects (load it with `load_split`)")
      # every (question, answer) suffix a relabelled row may need must fit the suffix arrays
      self.question_tokens = {q: p.ids[len(self.prefix):] for q, p in zip(split.questions, split.prompts)}
      longest = max(map(len, self.question_tokens.values())) + max(map(len, split.answer_tokens.values()))
      if longest > self.ids.shape[1]:
        grow = ((0, 0), (0, longest - self.ids.shape[1]))
        self.ids = np.pad(self.ids, grow, constant_values=pad_id)
        self.valid, self.target = np.pad(self.valid, grow), np.pad(self.target, grow)
      self.pad_id = pad_id

  @property
  def focusing(self) -> bool:
    return self.step < self.focus_steps and self.split.relevant is not None

  def draw_keep(self, nv: int) -> int:
    """How many of the nv visual tokens a dropped image keeps: min_visual_keep..nv, uniformly or (log_keep)
    log-uniformly, so that the few-token budgets the study prunes to are not a rare draw."""
    lo = min(self.recipe.min_visual_keep, nv)
    if not self.recipe.log_keep:
      return int(self.rng.integers(lo, nv + 1))
    return int(np.floor(np.exp(self.rng.uniform(np.log(lo), np.log(nv + 1)))))

  def visual_keep(self, n_images: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (keep [Bi, P] bool, keyed [Bi]: the question slot whose evidence was kept first, -1 if none).
    Distractor curriculum (`focusing`): every image keeps exactly k visual tokens, k growing
    from min_visual_keep to all of them over the curriculum: its first question's referenced cells first (only
    that question is trained on, `next`), then random others. So training starts with the evidence among few
    distractors (reading it needs little search) and ends with the whole image. The count is the same for
    every image at a step: a count that depends on the evidence (e.g. evidence + a share of the rest) tells
    the decoder the answer through the positions of the text after the image ("is there ...? no" items name
    fewer cells), which it learns instead of reading the image. An option, not the default: it has not been
    shown to make the 12-layer decoder learn in the CPU budget. Then: `visual_drop_prob` of the images keep a
    random min_visual_keep..Nv of their visual tokens, and `evidence_drop_prob` of them keep as many (k drawn the
    same way) with one random question's referenced cells first (one kept set serves the image's questions, so
    a given question's cells come first in 1 in `questions_per_image` of them); every question is trained on.
    `rows`: the batch's question rows, image-major."""
    r, rng = self.recipe, self.rng
    keep = np.ones((n_images, len(self.prefix)), bool)
    keyed = np.full(n_images, -1)
    nv = len(self.visual_slots)
    relevant = self.split.relevant  # [N, Nv] or None (then neither the curriculum nor evidence drops can run)
    evidence_of = None if relevant is None else relevant[rows].reshape(n_images, -1, nv)  # [Bi, Q, Nv]
    if self.focusing:
      lo = min(r.min_visual_keep, nv)
      k = lo + int(round(self.step / self.focus_steps * (nv - lo)))
      priority = rng.random((n_images, nv)) + evidence_of[:, 0]  # the first question's cells first, random order
      kept = np.zeros((n_images, nv), bool)
      np.put_along_axis(kept, np.argsort(-priority, axis=1)[:, :k], True, axis=1)
      keep[:, self.visual_slots] = kept
      return keep, np.zeros(n_images, int)
    draw = rng.random(n_images)
    for row in np.flatnonzero(draw < r.visual_drop_prob + r.evidence_drop_prob):
      k = self.draw_keep(nv)  # never depends on the evidence (see above)
      if draw[row] < r.visual_drop_prob:  # uniform: a random k
        keep[row, self.visual_slots[rng.permutation(nv)[k:]]] = False
        continue
      # evidence first: one of the image's questions (at random) keeps its referenced cells, then random others
      keyed[row] = rng.integers(r.questions_per_image)
      priority = rng.random(nv) + evidence_of[row, keyed[row]]  # [Nv]
      keep[row, self.visual_slots[np.argsort(-priority)[k:]]] = False
    return keep, keyed

  def next(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
    r, rng = self.recipe, self.rng
    if self.cursor + r.images_per_step > len(self.order):
      self.order, self.cursor = rng.permutation(len(self.order)), 0
    images = self.order[self.cursor:self.cursor + r.images_per_step]
    self.cursor += r.images_per_step
    rows = np.concatenate([self.questions_of[i] for i in images])  # [B], image-major
    blind = rng.choice(self.generated_rows, r.blind_per_step)
    vision = ({"pixels": self.split.pixels[images]} if self.states is None
              else {"tower_states": self.states[0, images]})  # [Bi, Nv, Dv]
    keep, keyed = self.visual_keep(len(images), rows)
    ids, valid, target = self.ids[rows], self.valid[rows], self.target[rows].copy()
    if r.relabel_drops:
      self.relabel(images, rows, keep, ids, valid, target)
    arrays = {"prefix": self.prefix, **vision, "visual_keep": keep,
              "image_of": np.repeat(np.arange(len(images), dtype=np.int32), r.questions_per_image),
              "ids": ids, "valid": valid, "target": target,
              "blind_ids": self.blind[0][blind], "blind_valid": self.blind[1][blind],
              "blind_target": self.blind[2][blind]}
    if r.neighbour_weight > 0:
      arrays["neighbours"] = self.split.neighbours[images]  # [Bi, Nv, 4]
    if self.focusing:  # only each image's keyed (first) question: the others' evidence may be masked out
      slot = np.arange(len(rows)) % r.questions_per_image  # [B]
      arrays["target"][slot != np.repeat(keyed, r.questions_per_image)] = False
    self.step += 1
    return arrays, rows

  def relabel(self, images: np.ndarray, rows: np.ndarray, keep: np.ndarray, ids: np.ndarray, valid: np.ndarray,
              target: np.ndarray) -> None:
    """Answer the questions of each image that lost visual tokens about the objects it still shows, in place:
    an object is seen if any cell it touches is kept (`answer_on` on those objects). A question that has no
    answer there (its object gone, a count of 0, a relation no longer unique) is not trained on this step.
    ids/valid/target [B, S]: the rows' suffixes; images [Bi], rows [B] image-major, keep [Bi, P]."""
    kept = keep[:, self.visual_slots]  # [Bi, Nv]
    q = self.recipe.questions_per_image
    for b in np.flatnonzero(~kept.all(axis=1)):
      seen = (self.split.object_cells[images[b]] & kept[b]).any(axis=1)  # [objects]
      self.relabelled["rows"] += q
      if seen.all():  # every object still shows: every answer stands
        continue
      objects = [o for o, s in zip(self.split.objects[images[b]], seen) if s]
      for slot in range(b * q, (b + 1) * q):
        question, answer = self.split.questions[rows[slot]], self.split.answers[rows[slot]]
        solved = answer_on(*question_spec(question), objects)
        if solved is None:
          target[slot] = False
          self.relabelled["dropped"] += 1
        elif solved[0] != answer:
          answer_ids = self.split.answer_tokens[solved[0]]
          ids[slot], valid[slot], target[slot] = self.pad_id, False, False
          base.write_suffix(ids, valid, target, slot, self.question_tokens[question] + answer_ids, len(answer_ids))
          self.relabelled["changed"] += 1


def neighbour_probe(width: int, seed: int):
  """The training-only linear probe of `neighbour_labels`: [..., D] -> logits [..., 4, 5]."""
  from flax import nnx

  class NeighbourProbe(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
      self.out = nnx.Linear(width, 2 * len(NEIGHBOUR_RELATIONS) * 5, rngs=rngs)

    def __call__(self, hidden):
      return self.out(hidden).reshape(*hidden.shape[:-1], 2 * len(NEIGHBOUR_RELATIONS), 5)

  return NeighbourProbe(nnx.Rngs(seed))


def neighbour_objective(model, probe, batch: dict, *, layer: int, weight: float):
  """The answer loss (`base.loss_fn`) + `weight` x the probe's mean cross-entropy on the object cells of whole
  images (a dropped token may be a neighbour). -> (loss, per-question losses [B])."""
  import jax.numpy as jnp
  import optax
  loss, per_seq, tapped = base.loss_fn(model, batch, tap_layer=layer)  # tapped [Bi, P, D]
  labels = batch["neighbours"]  # [Bi, Nv, 4]
  slots = jnp.nonzero(batch["prefix"] == model.config.image_token_id, size=labels.shape[1])[0]  # [Nv]
  logits = probe(tapped[:, slots])  # [Bi, Nv, 4, 5]
  whole = batch["visual_keep"].all(axis=1) if "visual_keep" in batch else jnp.ones(labels.shape[0], bool)  # [Bi]
  mask = (labels >= 0) & whole[:, None, None]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
  return loss + weight * jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1), per_seq


# ---------------------------------------------------------------------------------- stage 1: tower


def pretrain_tower(model, recipe: Recipe, split: ScenesSplit, *, test: ScenesSplit | None = None,
                   log_every: int = 20) -> dict[str, Any]:
  """Stage 1: train `model.vision_tower` in place on per-cell labels (`cell_labels`) through four linear heads
  on the patch states LLaVA reads (layer -2, [CLS] dropped); the heads are thrown away afterwards.

  -> {"seconds", "losses": [(step, loss)], "test": {head: accuracy on the test images' object cells}} (the
  background is most cells and easy: counted in, it would hide a weak head).
  """
  import jax
  import jax.numpy as jnp
  import optax
  from flax import nnx
  from tqdm import tqdm
  heads_spec = (("colour", 1 + len(scenes.COLOURS)), ("shape", 1 + len(scenes.SHAPES)), ("centre row", GRID),
                ("centre col", GRID), ("centre", 2))

  class CellHeads(nnx.Module):
    def __init__(self, tower, width: int, rngs: nnx.Rngs):
      self.tower = tower  # the model's own tower: training this module trains it
      self.heads = nnx.List([nnx.Linear(width, n, rngs=rngs) for _, n in heads_spec])

    def __call__(self, pixels):  # -> [B, C, classes] per head
      states, _, _ = self.tower(pixels, model.config.feature_layers)  # [B, C + 1, Dv]
      return [head(states[:, 1:]) for head in self.heads]

  heads = CellHeads(model.vision_tower, model.config.vision.hidden_size, nnx.Rngs(recipe.seed + 1))
  graphdef, params = nnx.split(heads)
  steps = recipe.vision_pretrain_steps
  tx = base.make_optimizer(recipe, lr=recipe.vision_pretrain_lr, steps=steps, warmup_steps=min(50, steps // 2))
  opt_state = tx.init(params)

  def losses_of(p, pixels, labels):  # labels [B, C, 4]
    total = 0.0
    for k, logits in enumerate(nnx.merge(graphdef, p)(pixels)):
      known = labels[..., k] >= 0
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels[..., k], 0))
      total = total + jnp.sum(ce * known) / jnp.maximum(jnp.sum(known), 1)
    return total

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, pixels, labels):
    loss, grads = jax.value_and_grad(losses_of)(params, pixels, labels)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(recipe.seed + 1)
  order, cursor = rng.permutation(len(split.pixels)), 0
  losses, pending = [], []
  start = time.perf_counter()
  bar = tqdm(range(steps), desc="stage 1: tower (per-cell)", unit="step", dynamic_ncols=True, mininterval=2.0)
  for i in bar:
    n = recipe.vision_pretrain_images
    if cursor + n > len(order):
      order, cursor = rng.permutation(len(split.pixels)), 0
    rows = order[cursor:cursor + n]
    cursor += n
    params, opt_state, loss = step(params, opt_state, split.pixels[rows], split.cells[rows])
    pending.append(loss)
    if (i + 1) % log_every == 0 or i + 1 == steps:
      losses.append((i + 1, float(np.mean([float(x) for x in pending]))))
      pending = []
      bar.set_postfix(loss=f"{losses[-1][1]:.3f}", refresh=False)
  jax.block_until_ready(params)
  nnx.update(heads, params)  # writes the trained tower into `model`
  info: dict[str, Any] = {"seconds": time.perf_counter() - start, "losses": losses}
  if test is not None:
    predict = jax.jit(lambda p, x: [jnp.argmax(logits, -1) for logits in nnx.merge(graphdef, p)(x)])
    n = recipe.eval_batch_size
    got = [predict(params, test.pixels[lo:lo + n]) for lo in range(0, len(test.pixels), n)]
    info["test"] = {}
    for k, (name, _) in enumerate(heads_spec):
      pred, truth = np.concatenate([np.asarray(g[k]) for g in got]), test.cells[..., k]
      info["test"][name] = float((pred == truth)[(truth >= 0) & (test.cells[..., 0] > 0)].mean())
  return info


# --------------------------------------------------------------------------------------- model card


CARD = """# llava-scenes: a deep, narrow LLaVA trained on jaxprune's `scenes` lab task

**A lab model for pruning experiments, not a general VLM**: it knows the `scenes` question templates and
96x96 images of 3-6 flat shapes. LLaVA-1.5's architecture (CLIP ViT, layer -2 features without [CLS], 2-layer
GELU projector, Llama decoder, prompt `USER: <image>\\n{{question}} ASSISTANT:`), so every pruning method applies.

## Results ({n_test} items of the scenes test split, seed 0; greedy decoding, exact match)

| question type | with image | blind (text only) |
|---|---|---|
| **all** | **{test_accuracy}** | **{blind_accuracy}** |
{rows}

Blind = the image removed from the prompt (jaxprune's blind filter). The task's text-only floor (majority answer
per question string, `scenes.text_only_floor`) is about attr 26.8 / exist 47.0 / count 23.6 / relation 22.8 %.

## Model ({n_params} parameters, float32, {checkpoint_mb} MB)

Vision: {image_size}x{image_size} input, patch {patch_size} ({num_patches} visual tokens, a {grid}x{grid} grid),
width {vision_width}, {vision_layers_used} layers run (+1 inert exported layer for `vision_feature_layer=-2`).
Decoder: Llama, width {text_width}, {text_layers} layers, {text_heads} heads / {kv_heads} KV heads, SwiGLU {text_mlp}.
Tokenizer: word-level over `scenes.vocabulary()` and `?`, specials as llava-easyvqa's ({vocab_size} ids).

## Data and recipe

Training: scenes 0..{train_images_minus_1} of the train split (seed 0), each with its generated question and
{extra} more about the same scene answered by `scenes.solve`, their types drawn in proportion {mix} ({n_train}
questions). Stage 1
({pretrain_steps} steps, {stage1_minutes} min): the tower alone, with per-8-px-cell heads for colour, shape
(background included) and the object's centre cell; test-cell accuracy {stage1_acc}. Stage 2 ({steps} steps of
{batch_size} questions + {blind_per_step} blind, {train_minutes} min): tower frozen, projector + decoder with
teacher forcing{grow_text}; {drop_pct} of the images keep a random {min_keep}..{num_patches} ({keep_draw}) of their
visual tokens and {evidence_pct} keep as many with one of their questions' referenced cells first (dropped before
the LLM, renumbered as K = 0 pruning does).{relabel_text} Why: K = 0 pruning reads tokens whose content the
tower alone decides; a per-cell objective and a frozen tower keep each token about its own cell and object.
Uniform drops alone teach counting by density (the share of kept cells of a colour), which over-counts any kept
set that favours the evidence; the evidence-first share puts such sets in training.{neighbour_text}
Final stage-2 loss (mean of the last {n_last_losses} logs) {final_loss}.

| knob | value |
|---|---|
{hp}

Total wall time {total_minutes} min on {machine} (1-min load {load_text}). Command:

```
{command}
```
"""


def model_card(*, recipe: Recipe, cfg, command: str, n_params: int, info: dict, test: dict, blind: dict,
               n_train: int, n_test: int, seconds_total: float, checkpoint_mb: float) -> str:
  pct = lambda x: f"{100 * x:.2f}%"
  rows = "\n".join(f"| {k} | {pct(test['by_kind'][k])} | {pct(blind['by_kind'][k])} |" for k in sorted(test["by_kind"]))
  stage1 = info.get("stage1") or {"seconds": 0.0, "test": {}}
  grown = info.get("grown")
  grow_text = "" if not grown else (
      f", after {recipe.grow_steps} steps ({grown['seconds'] / 60:.1f} min) of a {recipe.grow_from_layers}-layer "
      f"decoder grown to {recipe.text_layers} layers (its layers at "
      f"{grown_positions(recipe.grow_from_layers, recipe.text_layers)}, the new ones added as identities: zero "
      "residual outputs), which trains many times faster per step than the deep one and learns the lookups it "
      "takes thousands of steps to find")
  t, v = cfg.text, cfg.vision
  return CARD.format(
      n_test=n_test, test_accuracy=pct(test["accuracy"]), blind_accuracy=pct(blind["accuracy"]), rows=rows,
      n_params=f"{n_params:,}", checkpoint_mb=f"{checkpoint_mb:.1f}", image_size=v.image_size,
      patch_size=v.patch_size, num_patches=v.num_patches, grid=GRID, vision_width=v.hidden_size,
      vision_layers_used=cfg.vision_layers_used, text_width=t.hidden_size, text_layers=t.num_layers,
      text_heads=t.num_heads, kv_heads=t.num_kv_heads, text_mlp=t.intermediate_size, vocab_size=t.vocab_size,
      mix=", ".join(f"{t} {w:g}" for t, w in recipe.question_mix) if recipe.question_mix else "equal",
      train_images_minus_1=recipe.train_images - 1, extra=recipe.questions_per_image - 1, n_train=n_train,
      pretrain_steps=recipe.vision_pretrain_steps, stage1_minutes=f"{stage1['seconds'] / 60:.1f}",
      stage1_acc=", ".join(f"{k} {pct(a)}" for k, a in stage1["test"].items()) or "n/a",
      steps=recipe.steps, batch_size=recipe.batch_size, grow_text=grow_text, blind_per_step=recipe.blind_per_step,
      train_minutes=f"{info['seconds'] / 60:.1f}", drop_pct=pct(recipe.visual_drop_prob),
      evidence_pct=pct(recipe.evidence_drop_prob), keep_draw="log-uniform" if recipe.log_keep else "uniform",
      relabel_text="" if not recipe.relabel_drops else (
          " The questions of such an image are answered about the objects its kept tokens still show (any cell "
          "kept), and not trained on where they have no answer there, so the model reports what it sees instead "
          "of inferring a count or an object from what is left of a colour."),
      neighbour_text="" if not recipe.neighbour_weight else (
          f" An auxiliary loss (weight {recipe.neighbour_weight:g}, training only) had a linear probe read, from "
          f"the visual tokens' states after decoder layer {recipe.neighbour_layer}"
          f"{' of the shallow decoder' if grown else ''}, the colour and shape of the nearest object left of and "
          "above each token's object (whole images only), so a relation question is one lookup."),
      min_keep=recipe.min_visual_keep, n_last_losses=min(10, len(info["losses"])),
      final_loss=f"{np.mean([loss for _, loss in info['losses'][-10:]]):.4f}" if info["losses"] else "n/a",
      hp="\n".join(f"| `{k}` | {v} |" for k, v in dataclasses.asdict(recipe).items()),
      total_minutes=f"{seconds_total / 60:.1f}", machine=base.machine_description(),
      load_text=" -> ".join(f"{x:.1f}" for x in info.get("load", ())), command=command)


# ------------------------------------------------------------------------------------- growing deeper


def grown_positions(n_small: int, n_big: int) -> list[int]:
  """Where the shallow decoder's layers go in the deep one: spread evenly, the first at 0 (3 -> 12: 0, 4, 8)."""
  return [j * n_big // n_small for j in range(n_small)]


def grow_decoder(small, big) -> None:
  """Make `big` (a deeper LLaVA of the same widths) compute exactly what the trained `small` computes, in
  place: tower, projector, embeddings, final norm and head are copied; shallow layer j becomes deep layer
  `grown_positions(...)[j]`; every other deep layer keeps its random init except its two residual outputs
  (attention o_proj, MLP down_proj), which are zeroed so it adds nothing until training moves them (the
  identity insertion of Net2Net's "deeper" operator). Training then goes on with every layer free to learn."""
  import jax.numpy as jnp
  from flax import nnx
  s, b = small.language_model, big.language_model
  if (s.config.hidden_size, s.config.intermediate_size) != (b.config.hidden_size, b.config.intermediate_size):
    raise ValueError("grow_decoder: the two decoders must have the same widths")
  for name in ("vision_tower", "projector"):
    nnx.update(getattr(big, name), nnx.state(getattr(small, name)))
  for name in ("embed_tokens", "norm", "lm_head"):
    if getattr(s, name) is not None:
      nnx.update(getattr(b, name), nnx.state(getattr(s, name)))
  positions = grown_positions(len(s.layers), len(b.layers))
  for i, layer in enumerate(b.layers):
    if i in positions:
      nnx.update(layer, nnx.state(s.layers[positions.index(i)]))
    else:
      for proj in (layer.attn.o_proj, layer.mlp.down_proj):
        proj.kernel.value = jnp.zeros_like(proj.kernel.value)


# ---------------------------------------------------------------------------------------------- main


def stage2_steps_for(minutes: float, model, recipe: Recipe, split: ScenesSplit, batches: Batches, pad_id: int,
                     elapsed: float, eval_seconds: float) -> int:
  """Steps that fit the rest of a `minutes` budget: a 30-step timing run on a copy of the model (compile
  excluded), then what remains after `elapsed` seconds and the expected eval time."""
  import jax
  import jax.numpy as jnp
  from flax import nnx
  probe = dataclasses.replace(recipe, steps=30, warmup_steps=5)
  graphdef, state = nnx.split(model)
  copy = nnx.merge(graphdef, jax.tree.map(jnp.copy, state))  # own buffers: the train step donates its inputs
  start = time.perf_counter()
  rate = base.train(copy, probe, split, pad_id, log_every=10, batches=batches)["steps_per_second"]
  left = minutes * 60 - elapsed - (time.perf_counter() - start) - eval_seconds
  steps = int(left * rate)
  print(f"budget: {rate:.2f} steps/s -> {steps} stage-2 steps in the {left / 60:.1f} min left", flush=True)
  if steps < 50:
    raise SystemExit(f"{PROG}: --minutes {minutes:g} leaves {max(left, 0) / 60:.1f} min for stage 2 ({steps} steps)")
  return steps


def prepare_data(recipe: Recipe, test_images: int, t0: float):
  """-> (tokenizer, image processor, model config, training questions, test items)."""
  tokenizer, processor = build_tokenizer(), build_image_processor()
  cfg = model_config(recipe, tokenizer)
  train_split = load_split("train", recipe.train_images, tokenizer, cfg, questions_per_image=recipe.questions_per_image,
                           seed=recipe.seed, question_mix=recipe.question_mix)
  test_split = load_split("test", test_images, tokenizer, cfg)
  print(f"data: {len(train_split)} train questions / {len(train_split.pixels)} scenes, {len(test_split)} test items "
        f"({time.perf_counter() - t0:.0f}s)", flush=True)
  return tokenizer, processor, cfg, train_split, test_split


def train_then_grow(model, recipe: Recipe, shallow: Recipe, cfg, train_split, make_batches, aux, t0: float, *,
                    minutes: float | None, pad_id: int):
  """Stage 2a: the shallow decoder learns the task (several times the steps/s of the deep one), then becomes the
  deep one, unchanged in function (`grow_decoder`) -> (deep model, recipe with the shallow steps run, its info)."""
  import jax.numpy as jnp
  from flax import nnx

  from jaxprune.models.llava import Llava
  steps = recipe.grow_steps
  if minutes is not None:
    elapsed = time.perf_counter() - t0
    share = elapsed / 60 + recipe.grow_fraction * (minutes - elapsed / 60)
    steps = stage2_steps_for(share, model, shallow, train_split, make_batches(shallow), pad_id, elapsed,
                             eval_seconds=0)
  shallow = dataclasses.replace(shallow, steps=steps, warmup_steps=min(recipe.warmup_steps, steps // 10))
  grown = base.train(model, shallow, train_split, pad_id, batches=make_batches(shallow),
                     **aux(recipe.neighbour_layer))
  deep = Llava(cfg, dtype=jnp.float32, rngs=nnx.Rngs(recipe.seed + 2))
  grow_decoder(model, deep)  # ... all of the deep one trains on
  recipe = dataclasses.replace(recipe, grow_steps=shallow.steps)
  print(f"grown: {recipe.grow_from_layers} -> {recipe.text_layers} layers, the trained ones at "
        f"{grown_positions(recipe.grow_from_layers, recipe.text_layers)}", flush=True)
  return deep, recipe, grown


def export_run(out: Path, model, cfg, tokenizer, processor, recipe: Recipe, info: dict, test: dict, blind: dict, *,
               command: str, n_params: int, n_train: int, n_test: int, seconds: float, relabelled: int) -> dict:
  """Save the checkpoint (HF format, with tokenizer and processor) and its model card -> the run's summary."""
  from jaxprune.models.llava.export import save_hf_llava
  save_hf_llava(model, cfg, out, tokenizer=tokenizer, image_processor=processor)
  size_mb = sum(f.stat().st_size for f in out.iterdir() if f.is_file() and f.name != "README.md") / 2**20
  (out / "README.md").write_text(model_card(
      recipe=recipe, cfg=cfg, command=command, n_params=n_params, info=info, test=test, blind=blind,
      n_train=n_train, n_test=n_test, seconds_total=seconds, checkpoint_mb=size_mb))
  stage1, grown = info["stage1"], info["grown"]
  return {"test_accuracy": test["accuracy"], "test_by_kind": test["by_kind"], "blind_accuracy": blind["accuracy"],
          "blind_by_kind": blind["by_kind"], "stage1_test_cells": stage1["test"] if stage1 else None,
          "stage1_losses": stage1["losses"] if stage1 else None,
          "grow_steps": recipe.grow_steps if grown else 0, "grow_losses": grown["losses"] if grown else None,
          "steps": recipe.steps, "steps_per_second": info["steps_per_second"], "train_seconds": info["seconds"],
          "total_seconds": seconds, "losses": info["losses"], "answer_losses": info["family_losses"],
          "relabelled": relabelled, "checkpoint_mb": size_mb, "params": n_params, "out": str(out)}


def run(out: str | os.PathLike, recipe: Recipe, *, test_images: int = scenes.SPLIT_SIZES["test"],
        minutes: float | None = None, command: str = "") -> dict[str, Any]:
  """Build, pretrain the tower, train, evaluate and export; -> summary dict (also printed by the CLI)."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from jaxprune.models.llava import Llava

  t0 = time.perf_counter()
  load_at_start = os.getloadavg()[0]
  tokenizer, processor, cfg, train_split, test_split = prepare_data(recipe, test_images, t0)
  grow = 0 < recipe.grow_from_layers < recipe.text_layers
  shallow = dataclasses.replace(recipe, text_layers=recipe.grow_from_layers) if grow else recipe
  model = Llava(model_config(shallow, tokenizer), dtype=jnp.float32, rngs=nnx.Rngs(recipe.seed))
  n_params = sum(x.size for x in jax.tree.leaves(nnx.state(
      nnx.eval_shape(lambda: Llava(cfg, dtype=jnp.float32, rngs=nnx.Rngs(0))), nnx.Param)))
  print(f"model: {n_params:,} parameters, {cfg.num_image_tokens} visual tokens, {cfg.text.num_layers} decoder "
        f"layers{f' (grown from {recipe.grow_from_layers})' if grow else ''}; {recipe}", flush=True)
  stage1 = pretrain_tower(model, recipe, train_split, test=test_split) if recipe.vision_pretrain_steps else None
  if stage1:
    print(f"stage 1: {stage1['seconds']:.0f}s, test cells {stage1['test']}", flush=True)
  start = time.perf_counter()
  states = base.tower_states(model, train_split.pixels, mirror=False) if recipe.freeze_vision else None
  make_batches = lambda r: Batches(train_split, r, tokenizer.pad_token_id, cfg.image_token_id, states=states)
  print(f"frozen tower states: {len(train_split.pixels)} scenes ({time.perf_counter() - start:.0f}s)", flush=True)
  eval_seconds = 90 * len(test_split) / 2000  # eval of 2000 items x 2 takes about a minute on 2 cores
  with_steps = lambda r, steps: dataclasses.replace(r, steps=steps, warmup_steps=min(recipe.warmup_steps, steps // 10))
  probe = neighbour_probe(recipe.text_hidden, recipe.seed + 3) if recipe.neighbour_weight > 0 else None
  aux = lambda layer: {} if probe is None else {  # the probe carries over the growing, as its layer does
      "probe": probe, "objective": functools.partial(neighbour_objective, layer=layer, weight=recipe.neighbour_weight)}
  grown = None
  if grow:  # stage 2a: the shallow decoder learns the task (several times the steps/s of the deep one) ...
    model, recipe, grown = train_then_grow(model, recipe, shallow, cfg, train_split, make_batches, aux, t0,
                                           minutes=minutes, pad_id=tokenizer.pad_token_id)
  if minutes is not None:
    recipe = with_steps(recipe, stage2_steps_for(minutes, model, recipe, train_split, make_batches(recipe),
                                                 tokenizer.pad_token_id, time.perf_counter() - t0,
                                                 eval_seconds=eval_seconds))
  # a fresh source (the same draws as a run given --steps); after growing, a new image order
  draws = dataclasses.replace(recipe, seed=recipe.seed + 1) if grow else recipe
  trained = dataclasses.replace(recipe, lr=recipe.deep_lr) if grow and recipe.deep_lr is not None else recipe
  layer = grown_positions(recipe.grow_from_layers, recipe.text_layers)[recipe.neighbour_layer] if grow else \
      recipe.neighbour_layer
  batches = make_batches(draws)
  info = base.train(model, trained, train_split, tokenizer.pad_token_id, batches=batches, **aux(layer))
  info["stage1"] = stage1
  info["grown"] = grown
  info["load"] = (load_at_start, os.getloadavg()[0])
  test = base.evaluate(model, tokenizer, test_split, blind=False, batch_size=recipe.eval_batch_size)
  blind = base.evaluate(model, tokenizer, test_split, blind=True, batch_size=recipe.eval_batch_size)
  print(f"test accuracy {test['accuracy']:.4f} {test['by_kind']}; blind {blind['accuracy']:.4f} {blind['by_kind']}",
        flush=True)

  summary = export_run(Path(out), model, cfg, tokenizer, processor, recipe, info, test, blind, command=command,
                       n_params=n_params, n_train=len(train_split), n_test=len(test_split),
                       seconds=time.perf_counter() - t0, relabelled=batches.relabelled)
  lists = ("losses", "answer_losses", "stage1_losses", "grow_losses")
  print(json.dumps({k: v for k, v in summary.items() if k not in lists}, indent=2), flush=True)
  return summary


def _question_mix(text: str) -> tuple[tuple[str, float], ...]:
  """--question-mix "relation=0.4,counting=0.3" -> (("relation", 0.4), ("counting", 0.3))."""
  mix = []
  for part in text.split(","):
    name, _, weight = part.partition("=")
    name = name.strip()
    if name not in scenes.QUESTION_TYPES:
      raise argparse.ArgumentTypeError(f"unknown question type {name!r} (known: {', '.join(scenes.QUESTION_TYPES)})")
    try:
      w = float(weight)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{part!r} is not TYPE=WEIGHT") from None
    if w < 0:
      raise argparse.ArgumentTypeError(f"weight of {name} must be >= 0, got {w:g}")
    mix.append((name, w))
  if sum(w for _, w in mix) <= 0:
    raise argparse.ArgumentTypeError(f"{text!r}: the weights sum to 0")
  return tuple(mix)


_Parser = base.OneLineParser  # errors: one line (SystemExit "prog: message"); `python -m` exits 2 with it


def _parser(d: Recipe) -> _Parser:
  p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
  p.add_argument("--out", required=True, help="checkpoint directory to write (HF LLaVA format + README.md)")
  budget = p.add_mutually_exclusive_group()
  budget.add_argument("--steps", type=int, default=d.steps, help="stage-2 steps")
  budget.add_argument("--minutes", type=float, default=None,
                      help="wall-time budget of the whole run: stage-2 steps are set from a timing probe")
  p.add_argument("--batch-size", type=int, default=d.batch_size)
  p.add_argument("--questions-per-image", type=int, default=d.questions_per_image)
  p.add_argument("--lr", type=float, default=d.lr)
  p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
  p.add_argument("--vision-pretrain-steps", type=int, default=d.vision_pretrain_steps)
  p.add_argument("--vision-pretrain-lr", type=float, default=d.vision_pretrain_lr, help="stage-1 peak learning rate")
  p.add_argument("--train-images", type=int, default=d.train_images)
  p.add_argument("--test-images", type=int, default=scenes.SPLIT_SIZES["test"], help="first N test items")
  p.add_argument("--visual-drop-prob", type=float, default=d.visual_drop_prob)
  p.add_argument("--min-visual-keep", type=int, default=d.min_visual_keep)
  p.add_argument("--keep-draw", choices=("log", "uniform"), default="log" if d.log_keep else "uniform",
                 help="how a dropped image's kept count is drawn in [--min-visual-keep, 144] (default: %(default)s)")
  p.add_argument("--no-relabel-drops", dest="relabel_drops", action="store_false",
                 help="answer an image's questions about the whole image even when tokens were dropped "
                      "(default: about the objects that any kept token shows)")
  p.add_argument("--evidence-drop-prob", type=float, default=d.evidence_drop_prob,
                 help="share of training images that keep a random k visual tokens, one question's evidence first")
  p.add_argument("--focus-fraction", type=float, default=d.focus_fraction,
                 help="share of stage-2 steps under the distractor curriculum (0: none)")
  p.add_argument("--neighbour-weight", type=float, default=d.neighbour_weight,
                 help="weight of the decoder's auxiliary neighbour probe (0: none)")
  p.add_argument("--neighbour-layer", type=int, default=d.neighbour_layer,
                 help="decoder layer the probe reads (of the shallow decoder when growing)")
  p.add_argument("--text-hidden", type=int, default=d.text_hidden)
  p.add_argument("--text-layers", type=int, default=d.text_layers)
  p.add_argument("--vision-hidden", type=int, default=d.vision_hidden)
  p.add_argument("--vision-layers", type=int, default=d.vision_layers_used, help="encoder layers that run")
  p.add_argument("--grow-from-layers", type=int, default=d.grow_from_layers,
                 help="train a decoder this deep first, then grow it to --text-layers (0: no growing)")
  p.add_argument("--grow-steps", type=int, default=d.grow_steps, help="stage-2 steps of the shallow decoder")
  p.add_argument("--grow-fraction", type=float, default=d.grow_fraction,
                 help="with --minutes: share of stage 2's time spent on the shallow decoder")
  p.add_argument("--deep-lr", type=float, default=d.deep_lr,
                 help="peak learning rate of the decoder after growing (default: %(default)s)")
  p.add_argument("--question-mix", type=_question_mix, default=d.question_mix, metavar="TYPE=W,...",
                 help="type weights of the drawn training questions, e.g. relation=0.4,counting=0.3,attribute=0.15,"
                      "existence=0.15 (types left out are never drawn)")
  p.add_argument("--seed", type=int, default=d.seed)
  return p


def _check_flags(p: _Parser, args: argparse.Namespace, d: Recipe) -> None:
  """Every flag, before any data or model loads (the run's first output is hours away on a real budget)."""
  positive = {"--steps": args.steps, "--batch-size": args.batch_size, "--questions-per-image": args.questions_per_image,
              "--train-images": args.train_images, "--test-images": args.test_images, "--text-hidden": args.text_hidden,
              "--text-layers": args.text_layers, "--vision-hidden": args.vision_hidden,
              "--vision-layers": args.vision_layers, "--min-visual-keep": args.min_visual_keep}
  for flag, value in positive.items():
    if value < 1:
      p.error(f"{flag} must be >= 1, got {value}")
  if args.minutes is not None and not 0 < args.minutes < float("inf"):  # NaN refused too
    p.error(f"--minutes must be > 0, got {args.minutes:g}")
  if args.batch_size % args.questions_per_image:
    p.error(f"--batch-size {args.batch_size} is not a multiple of --questions-per-image {args.questions_per_image}")
  if not 0 <= args.focus_fraction <= 1:
    p.error(f"--focus-fraction must lie in [0, 1], got {args.focus_fraction:g}")
  if not 0 <= args.visual_drop_prob <= 1:
    p.error(f"--visual-drop-prob must lie in [0, 1], got {args.visual_drop_prob:g}")
  if not (args.evidence_drop_prob >= 0 and args.visual_drop_prob + args.evidence_drop_prob <= 1 + 1e-9):
    p.error(f"--evidence-drop-prob must lie in [0, 1 - --visual-drop-prob], got {args.evidence_drop_prob:g}")
  if not args.neighbour_weight >= 0:
    p.error(f"--neighbour-weight must be >= 0, got {args.neighbour_weight:g}")
  probed = args.grow_from_layers or args.text_layers
  if not 0 <= args.neighbour_layer < probed:
    p.error(f"--neighbour-layer must lie in [0, {probed}) (the layers of the decoder it reads), "
            f"got {args.neighbour_layer}")
  if args.min_visual_keep > GRID * GRID:
    p.error(f"--min-visual-keep {args.min_visual_keep} exceeds the {GRID * GRID} visual tokens")
  if args.grow_from_layers:
    if not 0 < args.grow_from_layers < args.text_layers:
      p.error(f"--grow-from-layers must lie in [1, --text-layers {args.text_layers}), got {args.grow_from_layers}")
    if args.minutes is None and args.grow_steps < 1:
      p.error("--grow-from-layers needs --grow-steps >= 1 (or --minutes)")
    if not 0 < args.grow_fraction < 1:
      p.error(f"--grow-fraction must lie in (0, 1), got {args.grow_fraction:g}")
  if args.test_images > scenes.SPLIT_SIZES["test"]:
    p.error(f"--test-images {args.test_images} exceeds the test split's {scenes.SPLIT_SIZES['test']} items")
  if args.text_hidden % d.text_heads or args.vision_hidden % d.vision_heads:
    p.error(f"--text-hidden / --vision-hidden must be multiples of {d.text_heads} / {d.vision_heads} heads")
  base.check_at_least(p, {"--warmup-steps": (args.warmup_steps, 0), "--vision-pretrain-steps":
                          (args.vision_pretrain_steps, 0), "--grow-steps": (args.grow_steps, 0)})
  base.check_rates(p, {"--lr": args.lr, "--vision-pretrain-lr": args.vision_pretrain_lr, "--deep-lr": args.deep_lr})
  base.check_seed(p, args.seed)
  base.check_out(p, args.out, PROG)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  d = Recipe()
  p = _parser(d)
  args = p.parse_args(argv)
  _check_flags(p, args, d)
  recipe = dataclasses.replace(
      d, steps=args.steps, batch_size=args.batch_size, questions_per_image=args.questions_per_image, lr=args.lr,
      warmup_steps=min(args.warmup_steps, args.steps // 2), vision_pretrain_steps=args.vision_pretrain_steps,
      vision_pretrain_lr=args.vision_pretrain_lr,
      train_images=args.train_images, visual_drop_prob=args.visual_drop_prob, min_visual_keep=args.min_visual_keep,
      evidence_drop_prob=args.evidence_drop_prob, neighbour_weight=args.neighbour_weight,
      log_keep=args.keep_draw == "log", relabel_drops=args.relabel_drops,
      neighbour_layer=args.neighbour_layer,
      focus_fraction=args.focus_fraction, grow_from_layers=args.grow_from_layers, grow_steps=args.grow_steps,
      grow_fraction=args.grow_fraction, deep_lr=args.deep_lr, question_mix=args.question_mix,
      text_hidden=args.text_hidden, text_layers=args.text_layers, vision_hidden=args.vision_hidden,
      vision_layers_used=args.vision_layers, seed=args.seed)
  command = f"{PROG} " + " ".join(argv if argv is not None else sys.argv[1:])
  return run(args.out, recipe, test_images=args.test_images, minutes=args.minutes, command=command)


if __name__ == "__main__":
  base.run_cli(main)
