"""What the conformance suite asks of a family's fixture (`Case`), and the programs its checks share (`Runs`).

A `Case` holds one tiny random checkpoint of the family, saved with `save_pretrained`: the transformers model
(eval mode, eager attention, so attention weights can be read), the jaxprune `Loaded` from the same directory, and
the directory. A family module subclasses it with a few hooks: how one image is drawn (`image`), the placeholder ids
a prompt holds for it (`placeholder`, `expand`), how prompts become one padded `ModelInputs` (`pack`) and what
transformers takes for a prompt's images (`hf_images`). Everything else is family-free.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import torch
from flax import nnx

from jaxprune.core.tokens import ModelInputs
from jaxprune.generate import Generator, prefill
from jaxprune.models.base import language_model
from jaxprune.prune.pipeline import Pruner
from jaxprune.prune.select import split_positions

TOL = 1e-4  # logits against transformers (fp32, max abs difference), never loosened
SCORE_TOL = 1e-5  # scores against transformers' attention and hidden states
QUESTION = 4  # the last QUESTION tokens of every prompt are its question
STEPS = 16  # new tokens per generation (past Gemma 3's sliding window of 6)
TASK_SIGNALS = frozenset({"relevance"})  # every image batch carries a relevance table, as a task with ground truth


class Sample:
  """One prompt as the model sees it: `ids` with every image's placeholders expanded (unpadded), its `images` (the
  family's payload per image, in prompt order) and its question span [start, end) within `ids`."""

  def __init__(self, ids: Sequence[int], images: Sequence[Any], question: tuple[int, int]):
    self.ids, self.images, self.question = [int(i) for i in ids], list(images), question

  def extended(self, extra: Sequence[int]) -> Sample:
    """The prompt followed by `extra` (generated) tokens; the question stays where it was."""
    return Sample(self.ids + [int(t) for t in extra], self.images, self.question)

  def image_runs(self, image_token: int) -> list[int]:
    """Lengths of the runs of consecutive image placeholders: one run per image, in prompt order."""
    runs, previous = [], False
    for token in self.ids:
      if token == image_token and previous:
        runs[-1] += 1
      elif token == image_token:
        runs.append(1)
      previous = token == image_token
    return runs


class Case:
  """A family's tiny checkpoint and how to drive it (see the module docstring for the hooks)."""

  image_token: int  # the placeholder id once expanded: one per visual token
  bos: int = 1
  text_ids: tuple[int, int] = (3, 140)  # ordinary text ids [low, high)
  norm_offset: float = 0.0  # transformers' decoder RMSNorm multiplies by (norm_offset + weight)
  image_id_counts_views: bool = False  # Tokens.image_id numbers an image's views (AnyRes), not the images
  one_image: tuple = (None, None, None)  # image variants of the batch samples, one image each
  alone: tuple[int, ...] = (0, 1, 2)  # batch samples also run alone (their inputs share one shape: one program)
  alone_buckets: dict = {}  # `pack` keywords for a prompt alone (a shorter length bucket: other left padding)
  two_images: tuple = (None, None)  # image variants of a prompt with several images
  compile_sets: tuple = ((None,) * 3,) * 3  # image variants of three new batches shaped as the batch samples'
  buckets: dict = {}  # `pack` keywords for every batch

  def __init__(self, hf, loaded, path: Path):
    self.hf, self.loaded, self.path = hf, loaded, Path(path)
    self._runs: Runs | None = None

  # ----------------------------------------------------------------------------------------- family hooks

  def image(self, variant: Any, seed: int) -> Any:
    """One random image of the given variant (a size or grid, where the family has several)."""
    raise NotImplementedError

  def placeholder(self, image: Any) -> list[int]:
    """The ids a prompt holds for one image before `expand`."""
    raise NotImplementedError

  def expand(self, ids: list[int], images: list) -> list[int]:
    """Placeholders -> one image token per visual token (what the processor does)."""
    return ids

  def pack(self, ids: list[list[int]], images: list[list], spans: list[tuple[int, int]], **buckets) -> ModelInputs:
    """Expanded prompts, their images and question spans -> one left-padded batch."""
    raise NotImplementedError

  def hf_images(self, sample: Sample, ids: torch.Tensor) -> dict:
    """The transformers keywords for the prompt's images (empty for a text-only prompt)."""
    raise NotImplementedError

  # ------------------------------------------------------------------------------------------- derived

  @property
  def name(self) -> str:
    return self.loaded.family.name

  @property
  def model(self):
    return self.loaded.model

  @property
  def config(self):
    return self.loaded.config

  @property
  def num_layers(self) -> int:
    return self.config.num_layers

  @property
  def fixed_grid(self) -> bool:
    """One fixed token grid per image (LLaVA-1.5, Gemma 3); otherwise visual slots are padded per batch."""
    return self.config.visual_tokens_per_image is not None

  def sample(self, seed: int, images: tuple = (None,), before: int = 3, after: int = 2) -> Sample:
    """bos, text, each image's placeholders (two text tokens between images), text, then the question."""
    rng = np.random.RandomState(seed)
    text = lambda n: rng.randint(*self.text_ids, n).tolist()
    payload = [self.image(variant, seed=1000 * seed + k) for k, variant in enumerate(images)]
    ids = [self.bos] + text(before)
    for k, image in enumerate(payload):
      ids += self.placeholder(image) + (text(2) if k + 1 < len(payload) else [])
    ids = self.expand(ids + text(after + QUESTION), payload)
    return Sample(ids, payload, (len(ids) - QUESTION, len(ids)))

  def batch_samples(self) -> list[Sample]:
    """One image each, of different lengths (and image sizes, where the family has several)."""
    return [self.sample(60 + i, (variant,), before=2 + 3 * i, after=1 + 2 * i)
            for i, variant in enumerate(self.one_image)]

  def several_images_samples(self) -> list[Sample]:
    return [self.sample(70, self.two_images, before=3, after=2), self.sample(71, self.two_images, before=1, after=5)]

  def text_only_samples(self) -> list[Sample]:
    return [self.sample(80, (), before=10, after=0), self.sample(81, (), before=3, after=4)]

  def inputs(self, samples: Sequence[Sample], **buckets) -> ModelInputs:
    """The padded batch, with a relevance table (cells on every third anti-diagonal of each image's grid)."""
    inputs = self.pack([s.ids for s in samples], [s.images for s in samples], [s.question for s in samples],
                       **{**self.buckets, **buckets})
    if not any(s.images for s in samples):
      return inputs
    return inputs.replace(relevance=self.relevance(inputs, len(samples[0].images)))

  def relevance(self, inputs: ModelInputs, images: int) -> np.ndarray:
    if inputs.layout is not None:
      layout = inputs.layout
      diagonal = (np.asarray(layout.row) + np.asarray(layout.col)) % 3 == 0
      return (np.asarray(layout.valid) & diagonal).astype(np.float32)
    per_image, (_, gw) = self.config.visual_tokens_per_image, self.config.grid
    cells = np.arange(images * per_image) % per_image
    diagonal = (cells // gw + cells % gw) % 3 == 0
    return np.tile(diagonal, (inputs.size, 1)).astype(np.float32)

  def slots(self, inputs: ModelInputs) -> int:
    """N: the visual slots per sample of this batch."""
    if inputs.layout is not None:
      return inputs.layout.max_visual
    return int((np.asarray(inputs.ids[0])[np.asarray(inputs.valid[0])] == self.image_token).sum())

  def real_slots(self, inputs: ModelInputs) -> np.ndarray:
    """[B, N] the slots that hold a real visual token (padded slots False)."""
    if inputs.layout is not None:
      return np.asarray(inputs.layout.valid)
    return np.ones((inputs.size, self.slots(inputs)), bool)

  def hf_forward(self, sample: Sample, **kwargs):
    ids = torch.tensor([sample.ids])
    with torch.no_grad():
      return self.hf(input_ids=ids, attention_mask=torch.ones_like(ids), **self.hf_images(sample, ids), **kwargs)

  def hf_logits(self, sample: Sample) -> np.ndarray:
    """transformers' logits at every position of the prompt [L, V]."""
    return self.hf_forward(sample).logits[0].numpy()

  def hf_decoder_layers(self):
    return self.hf.model.language_model.layers

  @property
  def runs(self) -> Runs:
    if self._runs is None:
      self._runs = Runs(self)
    return self._runs

  def release(self) -> None:
    """Drop this family's programs and results (the next family's checks start clean)."""
    self._runs = None
    jax.clear_caches()
    gc.collect()


# ----------------------------------------------------------------------------------------------- programs


@functools.partial(nnx.jit, static_argnames=("pruner",))
def prefill_logits(model, inputs: ModelInputs, pruner: Pruner | None = None):
  """Uncached prefill (pruned by `pruner`) -> (logits at every position [B, L', V], the final Tokens)."""
  _, _, tokens, h = prefill(model, inputs, extra_slots=0, prune_points_fn=pruner)
  return language_model(model).logits(h), tokens


@nnx.jit
def unpruned_logits(model, inputs: ModelInputs):
  """Uncached, unpruned prefill -> logits at every position [B, L, V] (one program per input shape)."""
  return prefill_logits(model, inputs)[0]


def image_prompt(n_before: int, n_after: int, n_images: int, seed: int, image: Sequence[int]) -> list[int]:
  """bos, random text, then per image its unexpanded placeholder ids (`image`, e.g. [<image>] or
  [<start>, <image>, <end>]) and more text; the family's host expands the placeholders."""
  rng = np.random.RandomState(seed)
  ids = [1] + rng.randint(3, 140, n_before).tolist()
  for _ in range(n_images):
    ids += list(image) + rng.randint(3, 140, n_after).tolist()
  return ids


@functools.partial(nnx.jit, static_argnames=("pruners",))
def captured_scores(model, inputs: ModelInputs, pruners: tuple[Pruner, ...]) -> list:
  """Each single-stage pruner's scores [B, n] of the visual tokens (sequence order; padded slots -inf), as the
  pipeline computes them at its layer: captured by pass-through prune points, all in one prefill."""
  captured: dict[int, jax.Array] = {}
  by_layer: dict[int, list[int]] = {}
  for i, pruner in enumerate(pruners):
    by_layer.setdefault(pruner.plan.stages[0].layer, []).append(i)

  def points(model, tokens, vision):
    decoder = language_model(model)

    def recorder(indices):
      def record(tokens, trace):
        image_idx, text_idx = split_positions(tokens.image, vision.layout.max_visual)
        for i in indices:
          stage = pruners[i].plan.stages[0]
          captured[i] = pruners[i].scores(stage, tokens, image_idx, text_idx, decoder, vision, trace)
        return tokens
      return record

    return {layer: recorder(indices) for layer, indices in by_layer.items()}

  prefill(model, inputs, extra_slots=0, prune_points_fn=points)
  return [captured[i] for i in range(len(pruners))]


class Runs:
  """One family's shared generation: one Generator (STEPS new tokens, so one compile per (bucket, plan)) and its
  outputs per (plan, batch), so the checks that read the same program and batch compile and run it once."""

  def __init__(self, case: Case):
    self.case = case
    self.generator = Generator(case.model, max_new_tokens=STEPS, eos_ids=(), pad_id=0)
    self._inputs: dict = {}
    self._outputs: dict = {}
    self._scores: dict = {}
    self._hf: list | None = None

  def pruner(self, plan: str | None) -> Pruner | None:
    return Pruner.build(plan, self.case.config, TASK_SIGNALS) if plan else None

  def inputs(self, key: Any) -> tuple[list[Sample], ModelInputs]:
    """The named batches: "batch" (the batch samples) and ("alone", i) (batch sample i alone)."""
    if key not in self._inputs:
      case = self.case
      if key == "batch":
        samples = case.batch_samples()
        self._inputs[key] = samples, case.inputs(samples)
      else:
        samples = [self.inputs("batch")[0][key[1]]]
        self._inputs[key] = samples, case.inputs(samples, **case.alone_buckets)
    return self._inputs[key]

  def generate(self, plan: str | None, key: Any = "batch") -> dict:
    """The Generator's output (tokens, logits of every new token, kept tokens) for a plan on a named batch."""
    if (plan, key) not in self._outputs:
      _, inputs = self.inputs(key)
      out = self.generator(inputs, prune_points_fn=self.pruner(plan), keep_logits=True)
      self._outputs[plan, key] = jax.tree.map(np.asarray, out)
    return self._outputs[plan, key]

  def scores(self, plans: Sequence[str]) -> dict[str, np.ndarray]:
    """Scores [B, N] of the batch for each single-stage plan; all of a family's plans in one program."""
    plans = tuple(plans)
    if plans not in self._scores:
      _, inputs = self.inputs("batch")
      got = captured_scores(self.case.model, inputs, tuple(Pruner.build(p, self.case.config) for p in plans))
      self._scores[plans] = {p: np.asarray(s) for p, s in zip(plans, got)}
    return self._scores[plans]

  def hf(self) -> list:
    """transformers' forward of each batch sample alone, with attention weights and hidden states."""
    if self._hf is None:
      samples, _ = self.inputs("batch")
      self._hf = [self.case.hf_forward(s, output_attentions=True, output_hidden_states=True) for s in samples]
    return self._hf


def unit_norms_randomized(hf, scale: float = 0.15, is_norm=lambda name: "norm" in name) -> None:
  """transformers' init (std 0.02, unit norms, zero biases) hides mapping mistakes under 1e-4: norm weights near 1
  (where `is_norm(name)`), every other tensor N(0, scale) (biases N(0, 0.1)), so every mapped tensor matters."""
  with torch.no_grad():
    for name, param in hf.named_parameters():
      if is_norm(name) and name.endswith("weight"):
        param.copy_(1 + 0.2 * torch.randn_like(param))
      else:
        param.normal_(0.0, scale if param.dim() > 1 else 0.1)


def save_and_reload(model_class, hf_config, path, seed: int, randomize, *, eager: bool = True):
  """A tiny random `model_class(hf_config)` (weights set by `randomize(hf)`), saved to `path` and reloaded as
  transformers runs a checkpoint directory -> the HF torch model in eval mode (eager attention: readable weights)."""
  torch.manual_seed(seed)
  hf = model_class(hf_config).eval()
  randomize(hf)
  hf.save_pretrained(path)
  hf = model_class.from_pretrained(path, dtype=torch.float32).eval()
  if eager:
    hf.set_attn_implementation("eager")
  return hf


def anyres_image(host, size, cfg, seed: int, side: int):
  """One AnyRes image of original `size` (h, w): random crops (side x side pixels) as the family's host lays them."""
  rng = np.random.RandomState(seed)
  return host.Image(crops=rng.randn(host.num_crops(size, cfg), 3, side, side).astype(np.float32), size=size)


def anyres_hf_inputs(images) -> dict:
  """transformers' keywords for one prompt's AnyRes images: crops padded to the most crops, and the sizes."""
  if not images:
    return {}
  most = max(len(im.crops) for im in images)
  crops = np.stack([np.pad(im.crops, ((0, most - len(im.crops)),) + ((0, 0),) * 3) for im in images])
  return dict(pixel_values=torch.tensor(crops), image_sizes=torch.tensor([im.size for im in images]))


class AnyResCase(Case):
  """The AnyRes families' shared hooks (LLaVA-OneVision, LLaVA-NeXT): one `<image>` placeholder that the host
  expands into the image's views, batches packed by the host with crop buckets. A subclass names its host module
  and its checkpoint helpers (`save_tiny(path, seed)`, `draw_image(size, cfg, seed)`, `hf_image_inputs(images)`,
  each a staticmethod)."""

  host: Any  # the family's host module (expand_image_tokens, pack_batch)

  @classmethod
  def build(cls, path):
    from jaxprune.convert.hf import load_model
    hf = cls.save_tiny(path, seed=0)
    return cls(hf, load_model(path, dtype="float32"), path)

  def image(self, variant, seed):
    return self.draw_image(variant, self.config, seed)

  def placeholder(self, image):
    return [self.image_token]

  def expand(self, ids, images):
    return self.host.expand_image_tokens(ids, images, self.config)

  def pack(self, ids, images, spans, **buckets):
    query = [(np.arange(len(x)) >= start) & (np.arange(len(x)) < end) for x, (start, end) in zip(ids, spans)]
    return self.host.pack_batch(ids, images, self.config, query=query, **buckets)

  def hf_images(self, sample, ids):
    return self.hf_image_inputs(sample.images)
