"""Train the small easy-VQA LLaVA shipped in `checkpoints/llava-easyvqa` (a test bed for pruning, on CPU).

  python -m jaxprune.train --out checkpoints/llava-easyvqa     # the shipped recipe: ~16 min on 2 CPU cores

The model is LLaVA-1.5 in miniature: a CLIP-style ViT on 64x64 images with 4x4 patches (256 visual tokens, as
many as the pruning experiments need to have something to prune), features from layer -2, a 2-layer GELU
projector and a small GQA Llama decoder. Stage 1 trains the vision tower alone to name each image's shape and
colour (the stand-in for LLaVA's pretrained CLIP); stage 2 freezes the tower (its states are computed once per
image) and trains the projector and decoder with teacher forcing on exactly the prompts the eval builds
(`jaxprune.prompts.build_prompt`); the loss covers only the answer tokens and EOS, and a curriculum holds negated
yes/no questions back for the first steps (`Recipe.plain_yes_no_steps`). After
training it answers the full test split greedily through `jaxprune.generate.Generator`, with and without the
image, and writes an HF LLaVA directory (`save_hf_llava`) with a model card.

Shapes: B batch, L fixed sequence length, C channels, V vocab.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SIZE = 64
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<image>")  # ids 0..4, in this order
NEWLINE = "\n"  # a token of its own, so prompts keep LLaVA's `<image>\n{question}` layout
PROMPT_WORDS = ("user", "assistant", ":")  # from build_prompt's "USER:" / " ASSISTANT:" after lowercasing
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# -------------------------------------------------------------------------------- tokenizer, processor


def _word_pipeline():
  """The normaliser + pre-tokenizer shared by vocabulary building and the tokenizer itself."""
  from tokenizers import normalizers, pre_tokenizers
  return normalizers.Lowercase(), pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])


def easyvqa_words() -> list[str]:
  """Every word of easy-VQA's train+test questions and answers (as the tokenizer splits them), sorted."""
  from jaxprune.data.easyvqa import read_questions
  normalizer, pre = _word_pipeline()
  words: set[str] = set()
  for split in ("train", "test"):
    for question, answer, _ in read_questions(split):
      for text in (question, answer):
        words.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
  return sorted(words)


def build_tokenizer(task_words: Sequence[str] | None = None):
  """Word-level `PreTrainedTokenizerFast`: <pad>=0, <s>=1, </s>=2, <unk>=3, <image>=4, "\\n"=5, then words
  (`task_words`, default: easy-VQA's)."""
  from tokenizers import AddedToken, Tokenizer, models
  from transformers import PreTrainedTokenizerFast
  task_words = easyvqa_words() if task_words is None else task_words
  words = [w for w in (*PROMPT_WORDS, *task_words) if w not in SPECIAL_TOKENS]
  names = list(SPECIAL_TOKENS) + [NEWLINE] + list(dict.fromkeys(words))
  tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(names)}, unk_token="<unk>"))
  tok.normalizer, tok.pre_tokenizer = _word_pipeline()
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                 unk_token="<unk>", additional_special_tokens=["<image>"])
  # Whitespace pre-tokenization would drop "\n"; as an added token it is matched before that step.
  fast.add_tokens([AddedToken(NEWLINE, normalized=False, special=False)])
  assert [fast.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
  assert fast.encode(NEWLINE, add_special_tokens=False) == [5]
  return fast


def build_image_processor(size: int = IMAGE_SIZE):
  """CLIP preprocessing at size x size (64: easy-VQA images pass through unresized), then CLIP mean/std."""
  from transformers.utils import logging
  level = logging.get_verbosity()
  logging.set_verbosity_error()  # "torchvision not installed, falling back to the PIL backend": that is fine
  try:
    from transformers import CLIPImageProcessor
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                              image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
  finally:
    logging.set_verbosity(level)


# ------------------------------------------------------------------------------------------- recipe


@dataclasses.dataclass(frozen=True)
class Recipe:
  """Every knob of a run; written verbatim into the model card."""

  steps: int = 3000
  batch_size: int = 128  # image-question sequences per step
  questions_per_image: int = 8  # a step holds batch_size / questions_per_image images
  blind_per_step: int = 4  # text-only sequences per step: the blind prompt learns the language prior
  # Share of each question family among the image sequences (None: easy-VQA's own proportions).
  family_shares: tuple[tuple[str, float], ...] | None = (
      ("what shape", 0.15), ("shape yes/no", 0.25), ("what color", 0.1), ("color yes/no", 0.5))
  lr: float = 2e-3
  warmup_steps: int = 100
  # Stage 1 (0 steps: skip): the vision tower alone learns shape and colour, as LLaVA starts from a pretrained
  # CLIP; see `pretrain_vision`.
  vision_pretrain_steps: int = 600
  vision_pretrain_images: int = 32  # images per stage-1 step
  vision_pretrain_lr: float = 2e-3
  end_lr_ratio: float = 0.02  # cosine decays to lr * this
  weight_decay: float = 0.05  # on matrices only (not norms, biases, embeddings' 1-D params)
  grad_clip: float = 1.0
  seed: int = 0
  augment: bool = True  # random left-right mirroring of training images
  balance_yes_no: bool = True  # yes/no questions drawn so the named attribute is present half the time
  # Curriculum: for the first N stage-2 steps draw no negated yes/no question ("is there not a ...?"), so the
  # decoder learns "does the image have the named attribute" before the answer also flips with the negation.
  plain_yes_no_steps: int = 1200
  # Stage 2 trains only the projector and decoder: the tower's layer -2 states are computed once per training
  # image (and its mirror image), which takes the tower's forward and backward pass out of every step.
  freeze_vision: bool = True
  # model
  vision_hidden: int = 96
  vision_layers_used: int = 3  # the exported tower has one more (LLaVA reads layer -2)
  vision_heads: int = 4
  text_hidden: int = 64
  text_layers: int = 2
  text_heads: int = 4
  text_kv_heads: int = 2
  mlp_ratio: int = 3
  tie_embeddings: bool = False  # LM head = input embedding: an answer word and the same word in a question share a vector
  # eval
  eval_batch_size: int = 64

  @property
  def images_per_step(self) -> int:
    if self.batch_size % self.questions_per_image:
      raise ValueError(f"batch size {self.batch_size} is not a multiple of {self.questions_per_image} questions/image")
    return self.batch_size // self.questions_per_image


def model_config(recipe: Recipe, vocab_size: int, *, bos: int, eos: int, pad: int, image_token: int,
                 image_size: int = IMAGE_SIZE, patch_size: int = 4):
  from jaxprune.models.config import TextConfig
  from jaxprune.models.llava import LlavaConfig, VisionConfig
  r = recipe
  text = TextConfig(vocab_size=vocab_size, hidden_size=r.text_hidden, intermediate_size=r.mlp_ratio * r.text_hidden,
                    num_layers=r.text_layers, num_heads=r.text_heads, num_kv_heads=r.text_kv_heads,
                    head_dim=r.text_hidden // r.text_heads, rms_norm_eps=1e-5, rope_theta=10000.0,
                    max_position_embeddings=512, tie_word_embeddings=r.tie_embeddings, bos_token_id=bos, eos_token_id=eos,
                    pad_token_id=pad)
  vision = VisionConfig(hidden_size=r.vision_hidden, intermediate_size=4 * r.vision_hidden,
                        num_layers=r.vision_layers_used + 1, num_heads=r.vision_heads, image_size=image_size,
                        patch_size=patch_size, layer_norm_eps=1e-5, hidden_act="quick_gelu")
  return LlavaConfig(text=text, vision=vision, image_token_id=image_token, vision_feature_layer=-2,
                     vision_feature_select_strategy="default", projector_hidden_act="gelu")


# --------------------------------------------------------------------------------------------- data


@dataclasses.dataclass
class Split:
  """One split, tokenized and preprocessed once. Pixels are stored per image (~10 questions share one)."""

  questions: list[str]
  answers: list[str]
  kinds: list[str]  # question family (see `question_kind`): balanced sampling and the per-kind breakdown
  prompts: list[Any]  # jaxprune.prompts.Prompt with the image placeholders
  blind_prompts: list[Any]  # the same without image
  answer_ids: list[list[int]]  # answer tokens + EOS
  image_index: np.ndarray  # [N] row of `pixels` for each question
  pixels: np.ndarray  # [num_images, C, H, W] float32, the processor's output

  def __len__(self) -> int:
    return len(self.questions)


SHAPES = ("circle", "rectangle", "triangle")
COLORS = ("black", "blue", "brown", "gray", "green", "red", "teal", "yellow")


def question_kind(question: str, answer: str) -> str:
  """One of easy-VQA's four question families: "what shape", "what color", "shape yes/no", "color yes/no"."""
  if answer in SHAPES:
    return "what shape"
  if answer in COLORS:
    return "what color"
  words = set(re.findall(r"\w+", question.lower()))
  return "color yes/no" if words & set(COLORS) else "shape yes/no"


def is_negated(question: str) -> bool:
  """"is there not a red shape?", "is no circle present?", "does the image not contain ...?"."""
  return bool({"not", "no"} & set(re.findall(r"\w+", question.lower())))


def names_present_attribute(question: str, answer: str) -> bool:
  """For a yes/no question: does the image have the shape/colour the question names? ("is there not a red
  shape?" answered "no" -> True)."""
  return (answer == "yes") != is_negated(question)


def load_split(split: str, tokenizer, processor, cfg, *, limit: int | None = None) -> Split:
  from jaxprune.data import load_task
  from jaxprune.inputs import load_image
  from jaxprune.prompts import build_prompt
  data = load_task("easyvqa", split=split, limit=limit)
  rows: dict[int, int] = {}  # image_id -> row
  images, index, questions, answers = [], [], [], []
  for item in data:
    image_id = int(item["metadata"]["image_id"])
    if image_id not in rows:
      rows[image_id] = len(images)
      images.append(load_image(item["image"], name=f"easyvqa {split} image {image_id}"))
    index.append(rows[image_id])
    questions.append(item["question"])
    answers.append(item["answer"])
  pixels = np.concatenate([np.asarray(processor(images=images[i:i + 512], return_tensors="np").pixel_values,
                                      np.float32) for i in range(0, len(images), 512)])
  prompts = [build_prompt(tokenizer, q, image_token_id=cfg.image_token_id, num_image_tokens=cfg.num_image_tokens)
             for q in questions]
  blind = [build_prompt(tokenizer, q, image_token_id=None, num_image_tokens=0) for q in questions]
  unk = tokenizer.unk_token_id
  for p, q in zip(prompts + blind, questions + questions):
    if unk in p.ids:
      raise ValueError(f"easy-VQA {split}: the tokenizer has no word for part of {q!r}")
  answer_ids = [tokenizer.encode(a, add_special_tokens=False) + [tokenizer.eos_token_id] for a in answers]
  return Split(questions, answers, [question_kind(q, a) for q, a in zip(questions, answers)], prompts, blind, answer_ids,
               np.asarray(index, np.int32), pixels)


def teacher_forcing(prompts: Sequence[Any], answer_ids: Sequence[list[int]], pad_id: int):
  """Left-padded prompt + answer + EOS sequences, all of one length so the train step compiles once.

  -> ids [N, L] int32, valid [N, L] bool, target [N, L] bool (True where the *next* token is answer/EOS).
  Left padding with positions counted from the first real token is exactly what generation sees.
  """
  seqs = [p.ids + a for p, a in zip(prompts, answer_ids)]
  length = max(len(s) for s in seqs)
  ids = np.full((len(seqs), length), pad_id, np.int32)
  valid = np.zeros((len(seqs), length), bool)
  target = np.zeros((len(seqs), length), bool)
  for i, (s, a) in enumerate(zip(seqs, answer_ids)):
    ids[i, length - len(s):] = s
    valid[i, length - len(s):] = True
    target[i, length - len(a) - 1:length - 1] = True  # positions predicting the answer tokens and EOS
  return ids, valid, target


def hflip(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """[B, C, H, W], each image mirrored left-right with probability 1/2.

  Only this symmetry: easy-VQA's triangles always point up, so turns or vertical flips would leave the
  data distribution; a mirror image keeps every shape and colour answer.
  """
  flip = rng.random(len(pixels)) < 0.5
  return np.where(flip[:, None, None, None], pixels[..., ::-1], pixels)


def tower_states(model, pixels: np.ndarray, *, batch_size: int = 64, mirror: bool = True) -> np.ndarray:
  """[I, C, H, W] -> [2, I, Nv, Dv] the layer -2 patch states LLaVA reads, of each image and of its mirror
  image (index 0: as is, 1: mirrored), for stage 2 with a frozen tower; mirror=False: [1, I, Nv, Dv]."""
  import jax
  from flax import nnx
  graphdef, state = nnx.split(model)

  @jax.jit
  def encode(state, x):  # only the tower runs: XLA drops the unused projector
    return nnx.merge(graphdef, state).encode_images(x).tower_states  # [B, Nv, Dv]
  out = [[np.asarray(encode(state, x[lo:lo + batch_size])) for lo in range(0, len(x), batch_size)]
         for x in ((pixels, np.ascontiguousarray(pixels[..., ::-1])) if mirror else (pixels,))]
  return np.stack([np.concatenate(o) for o in out])


def split_prompts(split: Split, pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Image prompts as one shared prefix + per-question suffixes, for `shared_prefix_loss`.

  Every image prompt starts `<s> user : <image>*Nv \n`, so this prefix is the same token list for all
  questions (only its pixels differ). -> prefix [P] int32, suffix ids/valid/target [N, S] right-padded; the
  suffix is question + `assistant :` + answer + EOS and target marks positions whose next token is answer/EOS.
  """
  starts = {p.question_span[0] for p in split.prompts}
  prefixes = {tuple(p.ids[:p.question_span[0]]) for p in split.prompts}
  if len(starts) != 1 or len(prefixes) != 1:
    raise ValueError("image prompts do not share one prefix; cannot train with shared-prefix batching")
  prefix = np.asarray(prefixes.pop(), np.int32)
  suffixes = [p.ids[len(prefix):] + a for p, a in zip(split.prompts, split.answer_ids)]
  length = max(len(x) for x in suffixes)
  ids = np.full((len(suffixes), length), pad_id, np.int32)
  valid = np.zeros((len(suffixes), length), bool)
  target = np.zeros((len(suffixes), length), bool)
  for i, (x, a) in enumerate(zip(suffixes, split.answer_ids)):
    write_suffix(ids, valid, target, i, x, len(a))
  return prefix, ids, valid, target


def write_suffix(ids: np.ndarray, valid: np.ndarray, target: np.ndarray, row: int, suffix: list[int],
                 answer_len: int) -> None:
  """Row `row` of right-padded suffix arrays [N, S] (cleared beforehand) := `suffix` (question + `assistant :` +
  answer + EOS, the last `answer_len` tokens being answer + EOS); target marks the positions predicting them."""
  ids[row, :len(suffix)], valid[row, :len(suffix)] = suffix, True
  target[row, len(suffix) - answer_len - 1:len(suffix) - 1] = True


class Batches:
  """Seeded batches: `images_per_step` images (a fresh permutation of all images per epoch), each with
  `questions_per_image` of its questions, plus `blind_per_step` random blind (text-only) questions.

  Questions are grouped by image so that the vision tower and the decoder's pass over the shared
  image prefix run once per image (`shared_prefix_loss`).
  """

  def __init__(self, split: Split, recipe: Recipe, pad_id: int, states: np.ndarray | None = None):
    self.split, self.recipe, self.states = split, recipe, states  # states: `tower_states` of a frozen tower
    self.rng = np.random.default_rng(recipe.seed)
    self.prefix, self.ids, self.valid, self.target = split_prompts(split, pad_id)
    self.blind = teacher_forcing(split.blind_prompts, split.answer_ids, pad_id)
    by_image: list[list[int]] = [[] for _ in range(len(split.pixels))]
    for q, image in enumerate(split.image_index):
      by_image[image].append(q)
    self.questions_of = [np.asarray(q) for q in by_image]
    # Question families are drawn in the recipe's proportions, not easy-VQA's: colour yes/no questions are
    # over half of the data and mostly answerable from the text prior, while shape needs every label it can get.
    # A question's weight is its family's share / the family's frequency (per image, renormalised).
    kinds = np.asarray(split.kinds)
    names, counts = np.unique(kinds, return_counts=True)
    freq = dict(zip(names, counts))
    share = dict(recipe.family_shares) if recipe.family_shares else {k: freq[k] for k in names}
    weight = np.array([share.get(k, 0.0) / freq[k] for k in kinds])
    if recipe.balance_yes_no:
      # In easy-VQA a yes/no question mostly names an attribute the image lacks (1 colour in 8), so the text alone
      # answers 87% of colour yes/no questions and that family's loss sits on the prior's plateau. Reweighting
      # so the named attribute is present half the time makes the question text uninformative about the answer.
      for kind in ("shape yes/no", "color yes/no"):
        rows = np.flatnonzero(kinds == kind)
        present = np.array([names_present_attribute(split.questions[q], split.answers[q]) for q in rows])
        for flag in (True, False):
          if (present == flag).any():
            weight[rows[present == flag]] *= 0.5 * len(rows) / (present == flag).sum()
    weight = weight + 1e-9
    self.weights_of = [weight[q] / weight[q].sum() for q in self.questions_of]
    negated = np.array([k.endswith("yes/no") and is_negated(q) for k, q in zip(split.kinds, split.questions)])
    plain = np.where(negated, 1e-12, weight)
    self.plain_weights_of = [plain[q] / plain[q].sum() for q in self.questions_of]
    self.steps_drawn = 0
    self.order, self.cursor = self.rng.permutation(len(split.pixels)), 0

  @property
  def seq_len(self) -> int:
    return len(self.prefix) + self.ids.shape[1]

  def next(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """-> (the step's arrays, the question index of each image sequence [B])."""
    r, rng = self.recipe, self.rng
    if self.cursor + r.images_per_step > len(self.order):  # new epoch of images, ragged tail dropped
      self.order, self.cursor = rng.permutation(len(self.order)), 0
    images = self.order[self.cursor:self.cursor + r.images_per_step]
    self.cursor += r.images_per_step
    weights = self.plain_weights_of if self.steps_drawn < r.plain_yes_no_steps else self.weights_of
    self.steps_drawn += 1
    # With replacement: drawing 8 of an image's ~10 questions without it would ignore the weights.
    rows = np.concatenate([rng.choice(self.questions_of[i], r.questions_per_image, p=weights[i])
                           for i in images])
    blind = rng.integers(0, len(self.split), r.blind_per_step)
    if self.states is None:
      pixels = self.split.pixels[images]  # [Bi, C, H, W]
      vision = {"pixels": hflip(pixels, rng) if r.augment else pixels}
    else:
      flip = (rng.random(len(images)) < 0.5) if r.augment else np.zeros(len(images), bool)
      vision = {"tower_states": self.states[flip.astype(np.int32), images]}  # [Bi, Nv, Dv]
    arrays = {"prefix": self.prefix, **vision,
              "image_of": np.repeat(np.arange(len(images), dtype=np.int32), r.questions_per_image),
              "ids": self.ids[rows], "valid": self.valid[rows], "target": self.target[rows],
              "blind_ids": self.blind[0][blind], "blind_valid": self.blind[1][blind],
              "blind_target": self.blind[2][blind]}
    return arrays, rows


# -------------------------------------------------------------------------------------------- train


def token_losses(lm, hidden, ids, target):
  """Final-normed hidden [B, L, D] -> per-sequence summed cross-entropy of the answer + EOS predictions [B]
  and their counts [B]; position t predicts ids[:, t+1]."""
  import jax.numpy as jnp
  import optax
  logits = lm.logits(hidden[:, :-1])  # [B, L-1, V]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:])  # [B, L-1]
  mask = target[:, :-1]
  return jnp.sum(ce * mask, axis=1), jnp.sum(mask, axis=1)


def answer_loss(lm, tokens, ids, target):
  """The plain path: full teacher-forced sequences (left-padded) through `LlamaModel.prefill`."""
  h, _, _ = lm.prefill(tokens, extra_slots=0)  # [B, L, D]; the unused KV cache is dropped by XLA
  return token_losses(lm, h, ids, target)


def shared_prefix_loss(model, prefix, features, image_of, ids, valid, target, visual_keep=None, tap_layer=None):
  """Per-question losses, computing each image's prefix once: identical to running every full sequence.

  prefix [P] token ids shared by all questions, features [Bi, Nv, D] each image's visual tokens (projector
  outputs), image_of [B] (image of each question),
  ids/valid/target [B, S] right-padded suffixes. Attention is causal, so the prefix's states and K/V do not
  depend on the question: the prefix runs once per image, and each question's suffix attends to its image's
  cached prefix K/V (the decoder's own cached-attention path, `DecoderLayer` with `cache_kv`). Positions are
  0..P-1 for the prefix and P.. for the suffix, as in generation.

  visual_keep [Bi, P] bool (optional; True on every text token): train on visual tokens dropped before the LLM,
  as K = 0 pruning runs them. Dropped tokens are masked out as keys and the rest renumbered contiguously,
  which equals removing them from the sequence.

  tap_layer (optional): also return the prefix's hidden states [Bi, P, D] after that decoder layer (for an
  auxiliary loss on the visual tokens): -> (per_seq, count, tapped) instead of (per_seq, count).
  """
  import jax.numpy as jnp

  from jaxprune.models.llama import rope_inverse_frequencies, rope_tables
  lm = model.language_model
  n_img, p = features.shape[0], prefix.shape[0]
  b, s = ids.shape
  prefix_ids = jnp.broadcast_to(prefix, (n_img, p))  # [Bi, P]
  image = prefix_ids == model.config.image_token_id
  hidden = lm.embed(jnp.where(image, 0, prefix_ids))  # [Bi, P, D]
  slot = jnp.clip(jnp.cumsum(image, axis=1) - 1, 0, features.shape[1] - 1)  # same merge as Llava.input_tokens
  xp = jnp.where(image[..., None], jnp.take_along_axis(features, slot[..., None], axis=1), hidden)
  xs = lm.embed(ids)  # [B, S, D]
  inv_freq = rope_inverse_frequencies(lm.config)
  causal_s = jnp.tril(jnp.ones((s, s), bool))[None, None] & valid[:, None, None, :]  # [B, 1, S, S]
  if visual_keep is None:
    cos_p, sin_p = rope_tables(jnp.broadcast_to(jnp.arange(p), (n_img, p)), inv_freq)
    cos_s, sin_s = rope_tables(jnp.broadcast_to(p + jnp.arange(s), (b, s)), inv_freq)
    mask_p = jnp.tril(jnp.ones((p, p), bool))[None, None]  # [1, 1, P, P]
    mask_s = jnp.concatenate([jnp.ones((b, 1, s, p), bool), causal_s], axis=-1)
  else:
    kept = jnp.cumsum(visual_keep, axis=1)  # [Bi, P]; a dropped token's position is never read
    cos_p, sin_p = rope_tables(kept - 1, inv_freq)
    cos_s, sin_s = rope_tables(kept[image_of, -1:] + jnp.arange(s), inv_freq)  # [B, S]
    mask_p = jnp.tril(jnp.ones((p, p), bool))[None, None] & visual_keep[:, None, None, :]  # [Bi, 1, P, P]
    mask_s = jnp.concatenate([jnp.broadcast_to(visual_keep[image_of][:, None, None, :], (b, 1, s, p)), causal_s],
                             axis=-1)
  pad = ((0, 0), (0, s), (0, 0), (0, 0))
  tapped = None
  for i, layer in enumerate(lm.layers):
    xp_next, (kp, vp), _ = layer(xp, cos_p, sin_p, mask_p)  # kp/vp [Bi, P, G, Dh], post-RoPE
    cache = (jnp.pad(kp[image_of], pad), jnp.pad(vp[image_of], pad))  # [B, P+S, G, Dh]
    xs, _, _ = layer(xs, cos_s, sin_s, mask_s, cache, p)  # writes the suffix K/V at slots P.., attends to all
    xp = xp_next
    if i == tap_layer:
      tapped = xp  # [Bi, P, D]
  losses = token_losses(lm, lm.norm(xs), ids, target)
  return losses if tap_layer is None else (*losses, tapped)


def loss_fn(model, batch: dict, *, tap_layer: int | None = None):
  """Mean cross-entropy over every answer + EOS token of the image and the blind sequences.

  Aux: per image-question mean cross-entropy [B], for the per-family progress display.
  tap_layer: also return the image prefix's hidden states [Bi, P, D] after that decoder layer (a third output).
  """
  import jax.numpy as jnp

  from jaxprune.core.tokens import ModelInputs
  if "tower_states" in batch:  # frozen tower: its states were computed once
    features = model.projector(batch["tower_states"])  # [Bi, Nv, D]
  else:
    features = model.encode_images(batch["pixels"]).features
  per_seq, count, *tapped = shared_prefix_loss(model, batch["prefix"], features, batch["image_of"], batch["ids"],
                                               batch["valid"], batch["target"], batch.get("visual_keep"), tap_layer)
  total, n = jnp.sum(per_seq), jnp.sum(count)
  if batch["blind_ids"].shape[0]:
    blind, _ = model.input_tokens(ModelInputs(ids=batch["blind_ids"], valid=batch["blind_valid"]))
    t, c = answer_loss(model.language_model, blind, batch["blind_ids"], batch["blind_target"])
    total, n = total + jnp.sum(t), n + jnp.sum(c)
  return (total / jnp.maximum(n, 1), per_seq / jnp.maximum(count, 1), *tapped)


def check_shared_prefix(model, split: Split, pad_id: int, n: int = 6, tol: float = 1e-4) -> float:
  """Self-check: `shared_prefix_loss` equals the plain path (`Llava.input_tokens` + `prefill` on the full
  left-padded sequences, as generation runs them) on a few questions. -> max abs difference."""
  from jaxprune.core.tokens import ModelInputs
  rows = np.arange(n)
  prefix, ids, valid, target = split_prompts(split, pad_id)
  images, image_of = np.unique(split.image_index[rows], return_inverse=True)
  features = model.encode_images(split.pixels[images]).features
  shared, _ = shared_prefix_loss(model, prefix, features, image_of.astype(np.int32), ids[rows],
                                 valid[rows], target[rows])
  full = teacher_forcing([split.prompts[r] for r in rows], [split.answer_ids[r] for r in rows], pad_id)
  tokens, _ = model.input_tokens(ModelInputs(ids=full[0], valid=full[1], pixels=split.pixels[split.image_index[rows]]))
  plain, _ = answer_loss(model.language_model, tokens, full[0], full[2])
  diff = float(np.max(np.abs(np.asarray(shared) - np.asarray(plain))))
  if not diff <= tol:
    raise AssertionError(f"shared-prefix loss differs from the plain path by {diff:g}")
  return diff


def image_attributes(split: Split) -> tuple[np.ndarray, np.ndarray]:
  """Shape [I] and colour [I] class ids of each image, read off its training questions (-1: unknown).

  "what shape" / "what color" answers name one attribute and the question often the other ("what is the red
  shape?"); a yes/no question whose effective answer is yes ("is there a red shape?" yes, "is there not a
  circle?" no) names attributes the image has.
  """
  shape = np.full(len(split.pixels), -1, np.int32)
  color = np.full(len(split.pixels), -1, np.int32)
  for question, answer, image in zip(split.questions, split.answers, split.image_index):
    words = re.findall(r"\w+", question.lower())
    named_shape = next((w for w in words if w in SHAPES), None)
    named_color = next((w for w in words if w in COLORS), None)
    if answer in SHAPES:
      named_shape = answer
    elif answer in COLORS:
      named_color = answer
    elif not names_present_attribute(question, answer):  # a yes/no question naming an absent attribute
      continue
    if named_shape:
      shape[image] = SHAPES.index(named_shape)
    if named_color:
      color[image] = COLORS.index(named_color)
  return shape, color


def pretrain_vision(model, recipe: Recipe, split: Split, *, test: Split | None = None,
                    log_every: int = 10) -> dict[str, Any]:
  """Stage 1: train `model.vision_tower` in place to classify each image's shape and colour.

  LLaVA-1.5 starts from a pretrained CLIP tower; this is the from-scratch stand-in. Two linear heads on the
  mean of the patch states LLaVA reads (layer -2, [CLS] dropped) are trained with the tower and then thrown
  away. Labels come from the training answers only (`image_attributes`). Without this stage, the tower learns
  shape slowly through the decoder: colour questions are solved early by attending to the shape's interior,
  where shape is not visible locally. -> {"seconds", "losses": [(step, loss)], "shape_acc", "color_acc"} and,
  given `test`, "test_shape_acc" / "test_color_acc" of the heads on the test images.
  """
  import jax
  import jax.numpy as jnp
  import optax
  from flax import nnx
  from tqdm import tqdm

  class AttributeHeads(nnx.Module):
    def __init__(self, tower, width: int, rngs: nnx.Rngs):
      self.tower = tower  # the model's own tower object: training this module trains it
      self.shape = nnx.Linear(width, len(SHAPES), rngs=rngs)
      self.color = nnx.Linear(width, len(COLORS), rngs=rngs)

    def __call__(self, pixels):
      states, _, _ = self.tower(pixels)  # [B, N, Dv]
      pooled = jnp.mean(states[:, 1:], axis=1)  # [B, Dv] over the patch tokens
      return self.shape(pooled), self.color(pooled)

  shape, color = image_attributes(split)
  images = np.flatnonzero((shape >= 0) | (color >= 0))
  heads = AttributeHeads(model.vision_tower, model.config.vision.hidden_size, nnx.Rngs(recipe.seed + 1))
  graphdef, params = nnx.split(heads)
  steps = recipe.vision_pretrain_steps
  tx = make_optimizer(recipe, lr=recipe.vision_pretrain_lr, steps=steps, warmup_steps=min(50, steps // 2))
  opt_state = tx.init(params)

  def masked_ce(logits, labels):
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
    known = labels >= 0
    return jnp.sum(ce * known) / jnp.maximum(jnp.sum(known), 1), jnp.sum((jnp.argmax(logits, -1) == labels) * known)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, pixels, shape_ids, color_ids):
    def loss_fn(p):
      shape_logits, color_logits = nnx.merge(graphdef, p)(pixels)
      (ls, hs), (lc, hc) = masked_ce(shape_logits, shape_ids), masked_ce(color_logits, color_ids)
      return ls + lc, (hs, hc)
    (loss, hits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, hits

  rng = np.random.default_rng(recipe.seed + 1)
  order, cursor = rng.permutation(images), 0
  losses: list[tuple[int, float]] = []
  pending: list[tuple[Any, Any, np.ndarray]] = []
  hits_shape = hits_color = known_shape = known_color = 0
  start = time.perf_counter()
  bar = tqdm(range(steps), desc="stage 1: vision", unit="step", dynamic_ncols=True, mininterval=2.0)
  for i in bar:
    n = recipe.vision_pretrain_images
    if cursor + n > len(order):
      order, cursor = rng.permutation(images), 0
    rows = order[cursor:cursor + n]
    cursor += n
    pixels = split.pixels[rows]  # [Bi, C, H, W]
    if recipe.augment:
      pixels = hflip(pixels, rng)
    params, opt_state, loss, hits = step(params, opt_state, pixels, shape[rows], color[rows])
    pending.append((loss, hits, rows))
    if (i + 1) % log_every == 0 or i + 1 == steps:
      losses.append((i + 1, float(np.mean([float(loss) for loss, _, _ in pending]))))
      if i + 1 > steps // 2:  # training accuracy over the second half, for the model card
        for _, (hs, hc), r in pending:
          hits_shape, hits_color = hits_shape + int(hs), hits_color + int(hc)
          known_shape, known_color = known_shape + int((shape[r] >= 0).sum()), known_color + int((color[r] >= 0).sum())
      pending = []
      bar.set_postfix(loss=f"{losses[-1][1]:.3f}", refresh=False)
  jax.block_until_ready(params)
  nnx.update(heads, params)  # writes the trained tower into `model`
  info = {"seconds": time.perf_counter() - start, "losses": losses, "images": len(images),
          "shape_acc": hits_shape / max(known_shape, 1), "color_acc": hits_color / max(known_color, 1)}
  if test is not None:
    test_shape, test_color = image_attributes(test)
    predict = jax.jit(lambda p, x: tuple(jnp.argmax(logits, -1) for logits in nnx.merge(graphdef, p)(x)))
    n = recipe.eval_batch_size
    got = [predict(params, test.pixels[lo:lo + n]) for lo in range(0, len(test.pixels), n)]
    pred_shape, pred_color = (np.concatenate([np.asarray(g[k]) for g in got]) for k in (0, 1))
    for name, pred, truth in (("shape", pred_shape, test_shape), ("color", pred_color, test_color)):
      known = truth >= 0
      info[f"test_{name}_acc"] = float((pred[known] == truth[known]).mean())
  return info


def make_optimizer(recipe: Recipe, *, lr: float | None = None, steps: int | None = None,
                   warmup_steps: int | None = None):
  """AdamW with warmup + cosine decay and global-norm clipping; stage 2's schedule unless overridden (stage 1)."""
  import jax
  import optax
  lr = recipe.lr if lr is None else lr
  steps = recipe.steps if steps is None else steps
  warmup_steps = recipe.warmup_steps if warmup_steps is None else warmup_steps
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, steps, end_value=lr * recipe.end_lr_ratio)
  decay_mask = lambda params: jax.tree.map(lambda x: x.ndim >= 2, params)
  return optax.chain(optax.clip_by_global_norm(recipe.grad_clip),
                     optax.adamw(schedule, b1=0.9, b2=0.98, weight_decay=recipe.weight_decay, mask=decay_mask))


def default_batches(model, recipe: Recipe, split: Split, pad_id: int) -> Batches:
  """The training batch source: with the frozen tower's states of every image (`recipe.freeze_vision`)."""
  if not recipe.freeze_vision:
    return Batches(split, recipe, pad_id)
  start = time.perf_counter()
  batches = Batches(split, recipe, pad_id, states=tower_states(model, split.pixels))
  print(f"frozen tower: states of {len(split.pixels)} images x 2 orientations "
        f"({batches.states.nbytes / 2**20:.0f} MB, {time.perf_counter() - start:.0f}s)", flush=True)
  return batches


def log_losses(step: int, pending: list, kinds: np.ndarray, losses: list, family_losses: dict) -> None:
  """One host sync for the steps since the last log: their mean loss, and per question kind the mean loss of the
  rows that trained (`pending`: (loss, per-row loss, rows, trained) per step)."""
  losses.append((step, float(np.mean([float(loss) for loss, _, _, _ in pending]))))
  used = np.concatenate([t for _, _, _, t in pending])
  seq = np.concatenate([np.asarray(p) for _, p, _, _ in pending])[used]
  fam = kinds[np.concatenate([r for _, _, r, _ in pending])][used]
  for k in family_losses:
    family_losses[k].append(float(seq[fam == k].mean()) if (fam == k).any() else float("nan"))


def train(model, recipe: Recipe, split: Split, pad_id: int, *, log_every: int = 10,
          batches: Batches | None = None, probe=None, objective=None) -> dict[str, Any]:
  """Train `model` in place on `split`; -> {"losses": [(step, loss)], "seconds": float, "seq_len": L,
  "steps_per_second" (after the first log, so without compiling)}.

  batches: another task's batch source (with its frozen tower's states when `recipe.freeze_vision`).
  probe, objective: a training-only module trained with the model (never exported), and the loss
  `objective(model, probe, batch) -> (loss, per_seq)` that uses it; without them, `loss_fn`.
  """
  import jax
  import optax
  from flax import nnx
  from tqdm import tqdm

  print(f"shared-prefix loss == plain loss (max diff {check_shared_prefix(model, split, pad_id):.1e})", flush=True)
  batches = batches if batches is not None else default_batches(model, recipe, split, pad_id)
  trained = model if probe is None else (model, probe)
  objective = objective or (lambda m, _, batch: loss_fn(m, batch))
  frozen_filter = nnx.PathContains("vision_tower") if recipe.freeze_vision else nnx.Nothing()
  graphdef, frozen, params = nnx.split(trained, frozen_filter, ...)
  tx = make_optimizer(recipe)
  opt_state = tx.init(params)

  def objective_of(p, frozen, batch):
    merged = nnx.merge(graphdef, frozen, p)
    return objective(merged, None, batch) if probe is None else objective(*merged, batch)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, frozen, batch):
    grad_fn = jax.value_and_grad(lambda p: objective_of(p, frozen, batch), has_aux=True)
    (loss, per_seq), grads = grad_fn(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, per_seq

  kinds = np.asarray(split.kinds)
  short = {"what shape": "shape?", "shape yes/no": "shape y/n", "what color": "color?", "color yes/no": "color y/n"}
  losses: list[tuple[int, float]] = []
  family_losses: dict[str, list[float]] = {k: [] for k in sorted(set(split.kinds))}
  pending: list[tuple[Any, Any, np.ndarray]] = []
  start = time.perf_counter()
  first_log: tuple[int, float] | None = None  # (step, time) of the first log, after compiling
  bar = tqdm(range(recipe.steps), desc="train", unit="step", dynamic_ncols=True, mininterval=2.0)
  for i in bar:
    arrays, rows = batches.next()
    params, opt_state, loss, per_seq = step(params, opt_state, frozen, arrays)
    trained = np.asarray(arrays["target"]).any(axis=1)  # [B] rows with a loss (a recipe may mask some)
    pending.append((loss, per_seq, rows, trained))
    if (i + 1) % log_every == 0 or i + 1 == recipe.steps:  # one host sync per log_every steps
      log_losses(i + 1, pending, kinds, losses, family_losses)
      pending = []
      first_log = first_log or (i + 1, time.perf_counter())
      recent = {short.get(k, k): np.nanmean(v[-5:]) for k, v in family_losses.items()}
      bar.set_postfix(loss=f"{losses[-1][1]:.3f}", **{k: f"{v:.3f}" for k, v in recent.items()}, refresh=False)
  jax.block_until_ready(params)
  end = time.perf_counter()
  if probe is None:
    nnx.update(model, params)
  else:  # nnx.update cannot walk the tuple itself
    nnx.update(model, params[0]), nnx.update(probe, params[1])
  rate = (recipe.steps - first_log[0]) / (end - first_log[1]) if first_log and recipe.steps > first_log[0] else None
  return {"losses": losses, "family_losses": family_losses, "seconds": end - start, "seq_len": batches.seq_len,
          "steps_per_second": rate}


# --------------------------------------------------------------------------------------------- eval


def evaluate(model, tokenizer, split: Split, *, blind: bool, batch_size: int) -> dict[str, Any]:
  """Greedy answers through `Generator`; exact match of the decoded text with the answer.

  -> {"accuracy", "by_kind": {kind: accuracy}, "predictions": [str], "seconds"}.
  """
  from tqdm import tqdm

  from jaxprune.generate import Generator, pad_batch, trim_at_eos
  eos = tokenizer.eos_token_id
  gen = Generator(model, max_new_tokens=4, eos_ids=(eos,), pad_id=tokenizer.pad_token_id)
  prompts = split.blind_prompts if blind else split.prompts
  length = max(len(p.ids) for p in prompts)  # one bucket: every batch compiles to the same program
  predictions: list[str] = []
  start = time.perf_counter()
  for lo in tqdm(range(0, len(split), batch_size), desc="eval (blind)" if blind else "eval", unit="batch",
                 dynamic_ncols=True):
    rows = list(range(lo, min(lo + batch_size, len(split))))
    padded = rows + [rows[0]] * (batch_size - len(rows))  # full batches keep shapes static
    pixels = None if blind else split.pixels[split.image_index[padded]]
    batch = pad_batch([prompts[r].ids for r in padded], pad_id=tokenizer.pad_token_id, multiple=length,
                      query_spans=[prompts[r].question_span for r in padded], pixels=pixels)
    tokens = np.asarray(gen(batch)["tokens"])[:len(rows)]
    predictions += [tokenizer.decode(t, skip_special_tokens=True).strip() for t in trim_at_eos(tokens, (eos,))]
  correct = np.array([p == a for p, a in zip(predictions, split.answers)])
  kinds = np.array(split.kinds)
  by_kind = {k: float(correct[kinds == k].mean()) for k in sorted(set(split.kinds))}
  return {"accuracy": float(correct.mean()), "by_kind": by_kind, "predictions": predictions,
          "seconds": time.perf_counter() - start, "compiles": gen.compiles}


# --------------------------------------------------------------------------------------- model card


def machine_description() -> str:
  import jax
  cpu = platform.processor() or platform.machine()
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return f"{cpu}, {cores} CPU cores, {platform.system()} {platform.release()}, jax {jax.__version__} ({jax.default_backend()})"


CARD_DIR = Path(__file__).resolve().parent / "easyvqa_card"  # the model card's text, filled in by `model_card`


def _card_part(name: str) -> str:
  return (CARD_DIR / name).read_text()


def model_card(*, recipe: Recipe, cfg, command: str, n_params: int, train_info: dict, test: dict, blind: dict,
               n_train: int, n_test: int, n_train_images: int, seconds_total: float, checkpoint_mb: float) -> str:
  pct = lambda x: f"{100 * x:.2f}%"
  kinds = sorted(test["by_kind"])
  rows = "\n".join(f"| {k} | {pct(test['by_kind'][k])} | {pct(blind['by_kind'][k])} |" for k in kinds)
  hp = "\n".join(f"| `{k}` | {v} |" for k, v in dataclasses.asdict(recipe).items())
  t, v = cfg.text, cfg.vision
  losses = train_info["losses"]
  stage1 = train_info.get("stage1")
  stage2_part = ("the projector and decoder, with the tower frozen (its states computed once per image and mirror "
                 "image, so a step costs about 40% of one that trains the tower)"
                 if recipe.freeze_vision else "the whole model (tower included)")
  stage1_text = "" if not stage1 else _card_part("stage1.md").format(
      pretrain_steps=recipe.vision_pretrain_steps,
      pretrain_images=recipe.vision_pretrain_images,
      stage1_minutes=f"{stage1['seconds'] / 60:.1f}",
      shape_acc=pct(stage1['test_shape_acc']),
      color_acc=pct(stage1['test_color_acc']),
      stage2_part=stage2_part)
  curriculum_text = "" if not recipe.plain_yes_no_steps else _card_part("curriculum.md").format(
      plain_steps=recipe.plain_yes_no_steps)
  load_text = " -> ".join(f"{x:.1f}" for x in train_info.get("load", ()))
  return _card_part("card.md").format(
      stage1_text=stage1_text, curriculum_text=curriculum_text,
      num_visual=cfg.num_image_tokens,
      n_test=n_test,
      test_accuracy=pct(test['accuracy']),
      blind_accuracy=pct(blind['accuracy']),
      rows=rows,
      n_train=n_train,
      n_train_images=n_train_images,
      vocab_size=t.vocab_size,
      n_params=f"{n_params:,}",
      checkpoint_mb=f"{checkpoint_mb:.1f}",
      image_size=v.image_size,
      patch_size=v.patch_size,
      num_patches=v.num_patches,
      vision_width=v.hidden_size,
      vision_mlp=v.intermediate_size,
      vision_heads=v.num_heads,
      vision_layers=v.num_layers,
      vision_layers_used=cfg.vision_layers_used,
      feature_layer=cfg.vision_feature_layer,
      text_width=t.hidden_size,
      text_layers=t.num_layers,
      text_heads=t.num_heads,
      kv_heads=t.num_kv_heads,
      head_dim=t.head_dim,
      text_mlp=t.intermediate_size,
      rope_theta=f"{t.rope_theta:g}",
      lm_head='LM head tied to the input embedding' if t.tie_word_embeddings else 'untied LM head',
      seq_len=train_info['seq_len'],
      hp=hp,
      samples_seen=f"{recipe.steps * recipe.batch_size:,}",
      epochs=f"{recipe.steps * recipe.batch_size / n_train:.2f}",
      n_last_losses=min(10, len(losses)),
      final_loss=f"{np.mean([loss for _, loss in losses[-10:]]):.4f}",
      train_minutes=f"{train_info['seconds'] / 60:.1f}",
      eval_minutes=f"{(test['seconds'] + blind['seconds']) / 60:.1f}",
      total_minutes=f"{seconds_total / 60:.1f}",
      machine=machine_description(),
      load_text=load_text,
      command=command)


# ---------------------------------------------------------------------------------------------- main


def run(task: str, out: str | os.PathLike, recipe: Recipe, *, train_limit: int | None = None,
        test_limit: int | None = None, command: str = "") -> dict[str, Any]:
  """Build, train, evaluate and export; -> summary dict (also printed by the CLI)."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from jaxprune.models.llava import Llava
  from jaxprune.models.llava.export import save_hf_llava

  if task != "easyvqa":
    raise SystemExit(f"--task {task!r}: only 'easyvqa' is supported")
  t0 = time.perf_counter()
  load_at_start = os.getloadavg()[0]  # the model card reports how busy the machine was
  tokenizer = build_tokenizer()
  processor = build_image_processor()
  vocab = -(-len(tokenizer) // 8) * 8
  cfg = model_config(recipe, vocab, bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id,
                     pad=tokenizer.pad_token_id, image_token=tokenizer.convert_tokens_to_ids("<image>"))
  train_split = load_split("train", tokenizer, processor, cfg, limit=train_limit)
  test_split = load_split("test", tokenizer, processor, cfg, limit=test_limit)
  print(f"data: {len(train_split)} train questions / {len(train_split.pixels)} images, "
        f"{len(test_split)} test questions ({time.perf_counter() - t0:.0f}s)", flush=True)

  model = Llava(cfg, dtype=jnp.float32, rngs=nnx.Rngs(recipe.seed))
  n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  print(f"model: {n_params:,} parameters; {recipe}", flush=True)
  stage1 = pretrain_vision(model, recipe, train_split, test=test_split) if recipe.vision_pretrain_steps else None
  if stage1:
    print(f"stage 1: shape {stage1['shape_acc']:.3f} colour {stage1['color_acc']:.3f} (train, 2nd half); "
          f"test shape {stage1['test_shape_acc']:.3f} colour {stage1['test_color_acc']:.3f}, "
          f"{stage1['seconds']:.0f}s", flush=True)
  info = train(model, recipe, train_split, tokenizer.pad_token_id)
  info["stage1"] = stage1
  info["load"] = (load_at_start, os.getloadavg()[0])
  test = evaluate(model, tokenizer, test_split, blind=False, batch_size=recipe.eval_batch_size)
  blind = evaluate(model, tokenizer, test_split, blind=True, batch_size=recipe.eval_batch_size)
  print(f"test accuracy {test['accuracy']:.4f} {test['by_kind']}; blind {blind['accuracy']:.4f} {blind['by_kind']}",
        flush=True)

  out = Path(out)
  save_hf_llava(model, cfg, out, tokenizer=tokenizer, image_processor=processor)
  size_mb = sum(f.stat().st_size for f in out.iterdir() if f.is_file() and f.name != "README.md") / 2**20
  seconds = time.perf_counter() - t0
  (out / "README.md").write_text(model_card(
      recipe=recipe, cfg=cfg, command=command, n_params=n_params, train_info=info, test=test, blind=blind,
      n_train=len(train_split), n_test=len(test_split), n_train_images=len(train_split.pixels),
      seconds_total=seconds, checkpoint_mb=size_mb))
  summary = {"test_accuracy": test["accuracy"], "test_by_kind": test["by_kind"], "blind_accuracy": blind["accuracy"],
             "blind_by_kind": blind["by_kind"], "train_seconds": info["seconds"], "total_seconds": seconds,
             "final_loss": info["losses"][-1][1] if info["losses"] else None, "checkpoint_mb": size_mb,
             "params": n_params, "out": str(out)}
  print(json.dumps(summary, indent=2), flush=True)
  return summary


# ---------------------------------------------------------------------------------------------- CLI

SEED_MAX = 2**32 - 1  # numpy's generators and jax keys both take it


class OneLineParser(argparse.ArgumentParser):
  """argparse whose errors are one line: SystemExit carrying "prog: message" (`run_cli` prints it, exit 2)."""

  def error(self, message: str):
    raise SystemExit(f"{self.prog}: {message}")


def run_cli(main: Callable[[], Any]) -> None:
  """`python -m` entry of a recipe: a refused flag (SystemExit with its one-line text) -> that line, exit 2."""
  try:
    main()
  except SystemExit as e:
    if isinstance(e.code, str):
      print(e.code, file=sys.stderr)
      raise SystemExit(2) from None
    raise


def check_at_least(p: argparse.ArgumentParser, flags: Mapping[str, tuple[Any, int]]) -> None:
  """{flag: (value, lowest allowed)}; a None value (flag not given) passes."""
  for flag, (value, low) in flags.items():
    if value is not None and value < low:
      p.error(f"{flag} must be >= {low}, got {value}")


def check_rates(p: argparse.ArgumentParser, flags: Mapping[str, float | None]) -> None:
  """Learning rates: finite and > 0 (NaN and inf refused too); a None value passes."""
  for flag, value in flags.items():
    if value is not None and not (math.isfinite(value) and value > 0):
      p.error(f"{flag} must be a finite number > 0, got {value:g}")


def check_seed(p: argparse.ArgumentParser, seed: int) -> None:
  if not 0 <= seed <= SEED_MAX:
    p.error(f"--seed must lie in [0, {SEED_MAX}], got {seed}")


def check_out(p: argparse.ArgumentParser, out: str, prog: str) -> None:
  """--out: a directory to create, or an earlier output of this recipe (its model card names `prog`); never a
  file or a directory holding anything else, and checked before any training."""
  path = Path(out).expanduser()
  if not out.strip():
    p.error("--out is empty: give the checkpoint directory to write")
  if path.exists() and not path.is_dir():
    p.error(f"--out {out}: is a file, not a directory")
  if path.is_dir() and any(path.iterdir()):
    card = path / "README.md"
    if not (card.is_file() and prog in card.read_text(errors="replace")):
      p.error(f"--out {out}: not empty and not an earlier output of {prog}; refusing to overwrite it: give a new or "
              f"empty directory")
  parent = path.absolute()
  while not parent.exists():
    parent = parent.parent
  if not parent.is_dir():
    p.error(f"--out {out}: {parent} is a file, so the directory cannot be made")
  if not os.access(parent, os.W_OK | os.X_OK):
    p.error(f"--out {out}: {parent} is not writable")


TRAIN_PROG = "python -m jaxprune.train"


def _parser(defaults: Recipe) -> OneLineParser:
  p = OneLineParser(prog=TRAIN_PROG, description=__doc__.split("\n\n")[0])
  p.add_argument("--task", default="easyvqa", choices=["easyvqa"])
  p.add_argument("--out", required=True, help="checkpoint directory to write (HF LLaVA format + README.md)")
  p.add_argument("--steps", type=int, default=defaults.steps)
  p.add_argument("--batch-size", type=int, default=defaults.batch_size,
                 help="image-question sequences per step, a multiple of --questions-per-image")
  p.add_argument("--seed", type=int, default=defaults.seed)
  p.add_argument("--lr", type=float, default=defaults.lr)
  p.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
  p.add_argument("--no-augment", action="store_true", help="train on the images as they are")
  p.add_argument("--no-balance", action="store_true",
                 help="draw yes/no questions in easy-VQA's proportions (mostly naming an absent attribute)")
  p.add_argument("--vision-pretrain-steps", type=int, default=defaults.vision_pretrain_steps,
                 help="stage-1 steps training the vision tower alone on shape/colour (0: skip)")
  p.add_argument("--vision-pretrain-images", type=int, default=defaults.vision_pretrain_images,
                 help="images per stage-1 step")
  p.add_argument("--vision-pretrain-lr", type=float, default=defaults.vision_pretrain_lr)
  p.add_argument("--plain-yes-no-steps", type=int, default=defaults.plain_yes_no_steps,
                 help="curriculum: the first N stage-2 steps draw no negated yes/no question (0: none)")
  p.add_argument("--freeze-vision", action=argparse.BooleanOptionalAction, default=defaults.freeze_vision,
                 help="stage 2 trains the projector and decoder only, on tower states computed once")
  p.add_argument("--questions-per-image", type=int, default=defaults.questions_per_image)
  p.add_argument("--blind-per-step", type=int, default=defaults.blind_per_step)
  p.add_argument("--text-hidden", type=int, default=defaults.text_hidden)
  p.add_argument("--text-layers", type=int, default=defaults.text_layers)
  p.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, default=defaults.tie_embeddings)
  p.add_argument("--vision-hidden", type=int, default=defaults.vision_hidden)
  p.add_argument("--vision-layers", type=int, default=defaults.vision_layers_used, help="encoder layers that run")
  p.add_argument("--train-limit", type=int, default=None, help="first N training questions only (smoke runs)")
  p.add_argument("--test-limit", type=int, default=None, help="first N test questions only (smoke runs)")
  return p


def _check_flags(p: OneLineParser, args: argparse.Namespace, defaults: Recipe) -> None:
  """Every flag, before anything heavy loads: a bad one is one line, never a late optax or shape error."""
  check_at_least(p, {"--steps": (args.steps, 1), "--batch-size": (args.batch_size, 1),
                     "--questions-per-image": (args.questions_per_image, 1),
                     "--blind-per-step": (args.blind_per_step, 0), "--warmup-steps": (args.warmup_steps, 0),
                     "--vision-pretrain-steps": (args.vision_pretrain_steps, 0),
                     "--vision-pretrain-images": (args.vision_pretrain_images, 1),
                     "--plain-yes-no-steps": (args.plain_yes_no_steps, 0), "--text-hidden": (args.text_hidden, 1),
                     "--text-layers": (args.text_layers, 1), "--vision-hidden": (args.vision_hidden, 1),
                     "--vision-layers": (args.vision_layers, 1), "--train-limit": (args.train_limit, 1),
                     "--test-limit": (args.test_limit, 1)})
  check_rates(p, {"--lr": args.lr, "--vision-pretrain-lr": args.vision_pretrain_lr})
  check_seed(p, args.seed)
  if args.batch_size % args.questions_per_image:
    p.error(f"--batch-size {args.batch_size} is not a multiple of --questions-per-image {args.questions_per_image}")
  if args.text_hidden % defaults.text_heads or args.vision_hidden % defaults.vision_heads:
    p.error(f"--text-hidden / --vision-hidden must be multiples of {defaults.text_heads} / {defaults.vision_heads} "
            f"heads, got {args.text_hidden} / {args.vision_hidden}")
  check_out(p, args.out, TRAIN_PROG)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  defaults = Recipe()
  p = _parser(defaults)
  args = p.parse_args(argv)
  _check_flags(p, args, defaults)
  recipe = dataclasses.replace(defaults, steps=args.steps, batch_size=args.batch_size, seed=args.seed, lr=args.lr,
                               warmup_steps=min(args.warmup_steps, args.steps // 2), augment=not args.no_augment,
                               balance_yes_no=not args.no_balance, plain_yes_no_steps=args.plain_yes_no_steps,
                               freeze_vision=args.freeze_vision,
                               questions_per_image=args.questions_per_image, blind_per_step=args.blind_per_step,
                               vision_pretrain_steps=args.vision_pretrain_steps,
                               vision_pretrain_images=args.vision_pretrain_images,
                               vision_pretrain_lr=args.vision_pretrain_lr,
                               text_hidden=args.text_hidden, text_layers=args.text_layers,
                               tie_embeddings=args.tie_embeddings,
                               vision_hidden=args.vision_hidden, vision_layers_used=args.vision_layers)
  command = f"{TRAIN_PROG} " + " ".join(argv if argv is not None else sys.argv[1:])
  return run(args.task, args.out, recipe, train_limit=args.train_limit, test_limit=args.test_limit, command=command)


if __name__ == "__main__":
  run_cli(main)
