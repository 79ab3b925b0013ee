"""The model side of an eval: loaded weights, tokenizer, the family's host-side inputs, compiled generation."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import numpy as np
from flax import nnx
from transformers import AutoImageProcessor, AutoTokenizer

from jaxprune.convert.hf import load_model
from jaxprune.data.tasks import task_for
from jaxprune.eval.common import EvalError
from jaxprune.generate import FORK_ROWS, Generator, prefill, trim_at_eos
from jaxprune.inputs import InputError, load_image

TIME_ROUNDS = 5  # interleaved rounds per timed batch (eval `--time-batches`)


@dataclasses.dataclass
class Runner:
  """Everything needed to answer items: model, tokenizer, image preprocessing, compiled generation."""

  loaded: Any
  tokenizer: Any
  processor: Any
  generator: Any
  bucket: int
  batch_size: int
  host: Any  # the family's host side: prompts, image preprocessing, padded batches (models/base.py: Family.host)

  @classmethod
  def load(cls, model: str, *, dtype, max_new_tokens: int, bucket: int, batch_size: int, mesh,
           fork_rows: int = FORK_ROWS) -> Runner:
    loaded = load_model(model, dtype=dtype, mesh=mesh)
    if not loaded.family.is_vlm:
      raise EvalError(f"--model {model}: a {loaded.family.name} model has no vision tower; the eval needs a VLM")
    try:
      tokenizer = AutoTokenizer.from_pretrained(str(loaded.path))
    except Exception as e:
      raise EvalError(f"--model {model}: no usable tokenizer files in {loaded.path} ({type(e).__name__})") from None
    try:
      processor = AutoImageProcessor.from_pretrained(str(loaded.path))
    except Exception:
      processor = None  # the family's host side falls back to its own preprocessing
    eos = {tokenizer.eos_token_id, loaded.config.text.eos_token_id} - {None}
    eos = {e for x in eos for e in (x if isinstance(x, tuple) else (x,))}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    try:
      host = loaded.family.host(loaded.config, tokenizer, processor)
    except ValueError as e:  # e.g. a checkpoint without the chat template its family needs
      raise EvalError(f"--model {model}: {e}") from None
    generator = Generator(loaded.model, max_new_tokens=max_new_tokens, eos_ids=tuple(sorted(eos)), pad_id=pad,
                          mesh=mesh, fork_rows=fork_rows)
    return cls(loaded, tokenizer, processor, generator, bucket, batch_size, host)

  @property
  def config(self):
    return self.loaded.config

  def item_pixels(self, image_bytes: bytes, name: str):
    """One item's pixels, as the family's host makes them; InputError (one line) for an image PIL or the processor cannot handle."""
    image = load_image(image_bytes, name=name)
    try:
      return self.pixels([image])
    except Exception as e:  # e.g. a 1-pixel-wide image the processor cannot resize
      raise InputError(f"image {name}: preprocessing failed ({type(e).__name__}: "
                       f"{(str(e).splitlines() or [''])[0]})") from None

  def pixels(self, images: list):
    return self.host.pixels(images)

  def prompt(self, question: str, with_image: bool, name: str = "prompt"):
    """The family's prompt; InputError (one line, naming `name`) for a question the model cannot take as text:
    one that holds an image placeholder (`<image>` tokenizes to the image token, so the prompt would claim an
    image more than it has; transformers' processors refuse such a prompt too)."""
    try:
      prompt = self.host.prompt(question, with_image)
    except ValueError as e:
      raise InputError(f"{name}: the prompt cannot be built ({(str(e).splitlines() or [''])[0]})") from None
    start, end = prompt.question_span
    found = sorted(set(prompt.ids[start:end]) & self.placeholder_ids)
    if found:
      text = self.tokenizer.convert_ids_to_tokens(found[0])
      raise InputError(f"{name}: the question holds the image placeholder {text!r} (token id {found[0]}), which "
                       f"the model reads as another image; the item cannot be answered as written")
    return prompt

  @property
  def placeholder_ids(self) -> set[int]:
    """Token ids that stand for images in this model's prompts (never allowed inside a question)."""
    cfg = self.config
    names = ("image_token_id", "video_token_id", "boi_token_id", "vision_start_token_id", "vision_end_token_id")
    return {getattr(cfg, n) for n in names if isinstance(getattr(cfg, n, None), int)}

  def check_inputs(self, model: str, max_new_tokens: int, with_image: bool) -> None:
    """Refuses (one line, before anything compiles) what would fail every item: images this checkpoint cannot
    preprocess (e.g. no preprocessor_config.json), and --max-new-tokens beyond the model's positions even for the
    shortest prompt it takes."""
    if with_image:
      from PIL import Image
      try:
        self.pixels([Image.new("RGB", (224, 224), (127, 127, 127))])
      except Exception as e:
        raise EvalError(f"--model {model}: cannot preprocess images ({type(e).__name__}: "
                        f"{(str(e).splitlines() or [''])[0]})") from None
    try:
      shortest = len(self.host.prompt("", with_image).ids)
    except ValueError as e:
      raise EvalError(f"--model {model}: cannot build a prompt ({(str(e).splitlines() or [''])[0]})") from None
    positions = self.config.text.max_position_embeddings
    if shortest + max_new_tokens > positions:
      raise EvalError(f"--max-new-tokens {max_new_tokens}: with the shortest prompt this model takes ({shortest} "
                      f"tokens) it exceeds max_position_embeddings {positions}; use at most "
                      f"{max(positions - shortest, 0)}")

  def batch(self, prompts, pixels):
    return self.host.batch(prompts, pixels, batch_size=self.batch_size, bucket=self.bucket,
                           pad_id=self.generator.pad_id)

  def decode(self, tokens: np.ndarray) -> list[str]:
    return [self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            for ids in trim_at_eos(tokens, self.generator.eos_ids)]

  def time_prefills(self, batch, pruners: list, rounds: int = TIME_ROUNDS) -> list[dict]:
    """Each pruner's prefill of `batch` (compiled and warmed up first), timed in `rounds` interleaved rounds
    together with the unpruned prefill -> per pruner {"plan": [ms per round], "none": [the unpruned's ms in the
    same rounds]}: load on the machine hits a round's calls alike, so same-round ratios cancel it. A None pruner
    (the unpruned plan) is a call of its own next to the reference: its ratio is an A/A measure of the noise."""
    if not hasattr(self, "_prefill"):
      graphdef = self.generator.graphdef

      def run(state, inputs, pruner):
        return prefill(nnx.merge(graphdef, state), inputs, extra_slots=0, prune_points_fn=pruner)[0]
      self._prefill = jax.jit(run, static_argnums=2)
      self._unpruned = jax.jit(lambda state, inputs: run(state, inputs, None))  # kept across release_programs
    inputs = (self.generator.state, self.generator.device_arrays(batch))
    calls = [lambda: self._unpruned(*inputs)] + [
        (lambda p=p: self._prefill(*inputs, p)) if p is not None else (lambda: self._unpruned(*inputs))
        for p in pruners]
    times = interleaved_rounds(calls, rounds)
    return [{"plan": t, "none": times[0]} for t in times[1:]]

  def release_programs(self) -> None:
    """Drop the compiled programs of the plans run so far (the generator's and the timed prefills): a grid of many
    plans would otherwise hold one executable per plan until it ends (see `jaxprune.eval.loop.evaluate_task`)."""
    if hasattr(self, "_prefill"):
      self._prefill.clear_cache()
    self.generator.release_plan_programs()


def interleaved_rounds(calls: list, rounds: int, clock=time.perf_counter, sync=jax.block_until_ready) -> list:
  """Milliseconds of each call in each of `rounds` rounds -> [call][round]. Every call runs once first (compile,
  warm-up, untimed); then each round runs every call once, the order rotated by one per round so that no call
  always runs first. A plan and the unpruned prefill timed in one round see the same load, which plans timed
  one after the other, one batch each, do not (a load burst during one plan made it look slower)."""
  for call in calls:
    sync(call())
  times = [[0.0] * rounds for _ in calls]
  for r in range(rounds):
    for k in (list(range(len(calls)))[r % len(calls):] + list(range(len(calls)))[:r % len(calls)]):
      start = clock()
      sync(calls[k]())
      times[k][r] = (clock() - start) * 1e3
  return times


def task_relevance_signals(task: str, cfg) -> frozenset[str]:
  """{"relevance"} when the task has ground-truth masks (`jaxprune.data.tasks`) and the model one fixed grid per
  image to map them on."""
  grid = cfg.grid
  fixed = grid is not None and cfg.visual_tokens_per_image == grid[0] * grid[1]
  return frozenset({"relevance"}) if task_for(task)[0].relevance and fixed else frozenset()


def with_relevance_table(batch, cells: list[np.ndarray]):
  """The batch with its items' relevant cells ([Nv] each, in batch order) as `relevance` [B, Nv] float32, the
  padding rows zero: what the oracle bounds read."""
  table = np.zeros((batch.size, len(cells[0])), np.float32)
  table[:len(cells)] = np.stack(cells)
  return batch.replace(relevance=table)
