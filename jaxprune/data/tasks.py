"""The task registry: one line per task family. A task is a module under `jaxprune.data` that defines

- `open_task(sub, split, data_dir, datbench_dir) -> (tfds builder, common.Source of its files, split)`;
- optionally `decode_record(record) -> Item` (default `common.decode_record`);
- optionally `relevant_cells(item, grid_h, grid_w) -> [grid_h * grid_w] bool`: the token-grid cells that cover
  what the question is about (ground truth: the `oracle` bounds, relevance recall);
- optionally `check_items(items, name)`: refuse (ValueError, one line) an item its scorer cannot score;
- optionally `score_item(prediction, item) -> metrics.ItemScore` (default: `metrics.score_item`, the official
  harness's scorer for the item's source);
- optionally `judge_prompts(sub, datbench_dir) -> {item id: prompt}` for its `eval_mode == "judge"` items.

Nothing here imports a task module (they pull in tfds): the registry is read by `--help` and flag checks.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType

from jaxprune.data.common import DATBENCH_CAPABILITIES


@dataclasses.dataclass(frozen=True)
class Task:
  name: str  # "easyvqa", or the family of "datbench:<sub>" names
  module: str  # the module under jaxprune.data that implements it
  subtasks: tuple[str, ...] = ()  # "<name>:<sub>" names; () takes the bare name only
  relevance: bool = False  # its items say which pixels answer the question (module.relevant_cells)
  subtask_kind: str = "subtask"  # what an error calls the part after ':'
  harness: bool = False  # scored as an official harness scores it: rows also give `harness_accuracy`

  @property
  def names(self) -> list[str]:
    return [f"{self.name}:{sub}" for sub in self.subtasks] if self.subtasks else [self.name]

  def implementation(self) -> ModuleType:
    return importlib.import_module(f"jaxprune.data.{self.module}")


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("easyvqa", "easyvqa", relevance=True),
    Task("datbench", "datbench", subtasks=DATBENCH_CAPABILITIES, subtask_kind="DatBench capability", harness=True),
    Task("scenes", "scenes", relevance=True),
)}


def known_tasks() -> list[str]:
  return [name for task in TASKS.values() for name in task.names]


def spelled_tasks() -> list[str]:
  """The task names as help and errors spell them: `easyvqa`, `datbench:<chart|counting|...>`."""
  return [f"{t.name}:<{'|'.join(t.subtasks)}>" if t.subtasks else t.name for t in TASKS.values()]


def task_for(name: str) -> tuple[Task, str]:
  """`easyvqa` or `datbench:chart` -> (its Task, the part after ':'); one line naming the known tasks if unknown."""
  family, _, sub = name.partition(":")
  task = TASKS.get(family)
  if task is None or bool(sub) != bool(task.subtasks):
    raise ValueError(f"unknown task {name!r} (known: {', '.join(spelled_tasks())})")
  if task.subtasks and sub not in task.subtasks:
    raise ValueError(f"unknown {task.subtask_kind} {sub!r} (known: {', '.join(task.subtasks)})")
  return task, sub


def relevant_cells(name: str, item: dict, grid: tuple[int, int]):
  """[gh * gw] bool ground-truth cells of one item, for a task with `relevance`."""
  task, _ = task_for(name)
  if not task.relevance:
    raise ValueError(f"task {name!r} gives no relevance masks")
  return task.implementation().relevant_cells(item, *grid)


def has_harness(name: str) -> bool:
  """Whether rows of this task also give the official harness's own number (False for a name not registered)."""
  family = TASKS.get(name.partition(":")[0])
  return family is not None and family.harness


def check_items(name: str, items: list) -> None:
  """The task's own item check (`check_items` in its module), if it has one."""
  hook = getattr(task_for(name)[0].implementation(), "check_items", None)
  if hook is not None:
    hook(items, name)


def score_item(name: str, prediction: str, item: dict):
  """One answer scored as the task scores it (its module's `score_item`, else the harness's scorer)."""
  hook = getattr(task_for(name)[0].implementation(), "score_item", None)
  if hook is None:
    from jaxprune.metrics import score_item as hook  # lazy: this registry is read by --help and flag checks
  return hook(prediction, item)


def judge_prompts(name: str, datbench_dir=None) -> dict:
  """{item id: judge prompt} of a task whose items may be judged; {} for a task without judge items."""
  task, sub = task_for(name)
  hook = getattr(task.implementation(), "judge_prompts", None)
  return {} if hook is None else hook(sub, datbench_dir)
