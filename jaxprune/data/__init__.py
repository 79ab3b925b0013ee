"""Evaluation tasks as random-access sequences of common item records.

  data = load_task("easyvqa", split="test", limit=100)
  data = load_task("datbench:chart", datbench_dir="/data/DatBench")
  item = data[0]  # {"id", "image" (bytes), "question", "answer", "all_answers",
                  #  "eval_mode", "source", "choices"}

Prepared tfds files live in `data_dir` (default `~/.cache/jaxprune/tfds`, or
$JAXPRUNE_DATA_DIR) and are built on first use.
"""

from __future__ import annotations

import os

import numpy as np

from jaxprune.data.common import (
    DATA_DIR_ENV,
    DATBENCH_CAPABILITIES,
    DATBENCH_DIR_ENV,
    DEFAULT_DATA_DIR,
    ITEM_KEYS,
    Item,
    TaskData,
    decode_image,
    resolve_data_dir,
)
from jaxprune.data.tasks import TASKS, known_tasks, task_for

__all__ = [
    "DATA_DIR_ENV",
    "DATBENCH_CAPABILITIES",
    "DATBENCH_DIR_ENV",
    "DEFAULT_DATA_DIR",
    "ITEM_KEYS",
    "Item",
    "TASKS",
    "TaskData",
    "decode_image",
    "known_tasks",
    "load_task",
    "resolve_data_dir",
    "shape_mask",
]


def load_task(
    name: str,
    *,
    split: str | None = None,
    limit: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    datbench_dir: str | os.PathLike[str] | None = None,
    seed: int | None = None,
) -> TaskData:
  """Prepares (first time only) and opens a task: `easyvqa`, `scenes` or `datbench:<capability>`.

  split: easy-VQA and scenes `train`/`test` (default `test`); DatBench has only `test`.
  limit: keep the first `limit` items (or, with `seed`, a seeded random subset in source order).
  data_dir: where prepared data lives (default $JAXPRUNE_DATA_DIR or ~/.cache/jaxprune/tfds).
  datbench_dir: local DatBench parquet copy (default $JAXPRUNE_DATBENCH_DIR, else the HF hub).
  """
  from jaxprune.data import common  # Lazy: pulls in tfds.

  task, sub = task_for(name)  # a bad name fails here, before tfds is imported
  implementation = task.implementation()
  builder, files, split = implementation.open_task(sub, split, data_dir, datbench_dir)
  fingerprint = common.prepare(builder, files)  # rebuilt if the source files changed since it was prepared
  source = builder.as_data_source(split=split)
  indices = common.select_indices(len(source), limit, seed)
  decode = getattr(implementation, "decode_record", common.decode_record)  # scenes adds relevance_mask
  return TaskData(name, split, source, indices, decode=decode, fingerprint=fingerprint)


def shape_mask(image: bytes | np.ndarray, tol: int = 8) -> np.ndarray:
  """easy-VQA relevant-region mask; see `jaxprune.data.easyvqa.shape_mask`."""
  from jaxprune.data import easyvqa

  return easyvqa.shape_mask(image, tol=tol)
