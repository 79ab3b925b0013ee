"""easy-VQA (PyPI `easy-vqa`) as a tfds builder, prepared offline from the installed package.

Layout of the package data: `easy_vqa/data/{train,test}/images/<image_id>.png`
(64x64 RGB, one shape on a plain background), `.../questions.json` = list of
`[question, answer, image_id]`, and `easy_vqa/data/answers.txt` (13 answers).
One builder config per split, so a test-only user never pays for train.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxprune.data import common
from jaxprune.metrics.score import one_word_item

SPLITS = ("train", "test")
SOURCE = "easyvqa"
score_item = one_word_item  # the task's scorer (`jaxprune.data.tasks.score_item`): one-word exact match


def easyvqa_root() -> pathlib.Path:
  """The installed package's `data/` dir (checked, so a broken install fails with one line)."""
  try:
    root = pathlib.Path(str(importlib.resources.files("easy_vqa").joinpath("data")))
  except ModuleNotFoundError:
    raise ModuleNotFoundError("easy-VQA needs the `easy-vqa` package: pip install easy-vqa") from None
  for rel in ("answers.txt", *(f"{s}/questions.json" for s in SPLITS), *(f"{s}/images" for s in SPLITS)):
    if not (root / rel).exists():
      raise FileNotFoundError(f"easy-VQA data incomplete: missing {root / rel}")
  return root


def easyvqa_answers() -> list[str]:
  """The 13 possible answers, in the package's order."""
  text = (easyvqa_root() / "answers.txt").read_text()
  return [line.strip() for line in text.splitlines() if line.strip()]


def read_questions(split: str) -> list[tuple[str, str, int]]:
  """(question, answer, image_id) triples of a split, in file order (which fixes the ids)."""
  _check_split(split)
  raw = json.loads((easyvqa_root() / split / "questions.json").read_text())
  return [(str(q), str(a), int(i)) for q, a, i in raw]


def item_id(split: str, index: int) -> str:
  return f"{split}-{index:05d}"


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"unknown easy-VQA split {split!r} (known: {', '.join(SPLITS)})")


class EasyVqa(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """easy-VQA; config name == split name (`easyvqa/test/1.0.0/...`)."""

  # Not registered globally (we build it directly): avoids name clashes and re-import errors.
  name = "easyvqa"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Common jaxprune item record; images as PNG bytes."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=s, description=f"easy-VQA {s} split") for s in SPLITS]

  def __init__(self, **kwargs: Any):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="easy-VQA: simple shapes/colours VQA (github.com/vzhou842/easy-VQA).",
        features=common.item_features(),
        homepage="https://github.com/vzhou842/easy-VQA",
        # Keep question order so ids and `limit` follow questions.json.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[int, dict[str, Any]]]]:
    del dl_manager  # Everything is local.
    return {self.builder_config.name: self._generate_examples(self.builder_config.name)}

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
    image_dir = easyvqa_root() / split / "images"
    cache: dict[int, bytes] = {}  # ~10 questions per image: read each PNG once.
    for index, (question, answer, image_id) in enumerate(read_questions(split)):
      if image_id not in cache:
        cache[image_id] = (image_dir / f"{image_id}.png").read_bytes()
      item = common.make_item(
          id=item_id(split, index),
          image=cache[image_id],
          question=question,
          answer=answer,
          all_answers=[answer],
          eval_mode="direct",
          source=SOURCE,
          metadata={"image_id": image_id},  # Lets callers cache per-image work (~10 questions each).
      )
      yield index, common.encode_item(item)


def builder(split: str = "test", data_dir: str | os.PathLike[str] | None = None) -> EasyVqa:
  """The (possibly unprepared) builder for one split."""
  _check_split(split)
  return EasyVqa(config=split, data_dir=common.resolve_data_dir(data_dir))


def open_task(sub: str, split: str | None, data_dir, datbench_dir) -> tuple[EasyVqa, common.Source, str]:
  """The task registry's entry point (`jaxprune.data.tasks`): the builder of one split and the files it reads."""
  split = split or "test"
  root = easyvqa_root()
  files = common.Source(str(root / split), lambda: [root / "answers.txt", root / split / "questions.json",
                                                    *sorted((root / split / "images").glob("*.png"))])
  return builder(split, data_dir), files, split


def relevant_cells(item: dict, grid_h: int, grid_w: int) -> np.ndarray:
  """[gh * gw] bool: grid cells that hold any pixel of the easy-VQA shape (differs from the background)."""
  mask = np.asarray(shape_mask(item["image"]))
  h, w = mask.shape
  rows = [mask[r * h // grid_h:(r + 1) * h // grid_h] for r in range(grid_h)]
  return np.array([[row[:, c * w // grid_w:(c + 1) * w // grid_w].any() for c in range(grid_w)]
                   for row in rows]).ravel()


def shape_mask(image: bytes | np.ndarray, tol: int = 8) -> np.ndarray:
  """bool (H, W): pixels that differ from the background colour, i.e. the shape.

  The background is the most common colour on the image border (plain in
  easy-VQA); `tol` (max abs difference over channels) ignores the faint
  anti-aliasing fringe around the shape.
  """
  pixels = common.decode_image(image) if isinstance(image, (bytes, bytearray)) else np.asarray(image)
  if pixels.ndim == 2:
    pixels = pixels[..., None]
  pixels = pixels.astype(np.int16)
  border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
  colours, counts = np.unique(border, axis=0, return_counts=True)
  background = colours[np.argmax(counts)]
  return np.abs(pixels - background).max(axis=-1) > tol
