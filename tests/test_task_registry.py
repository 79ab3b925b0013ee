"""Tasks live in one registry (`jaxprune.data.tasks`): the loader, the eval and the oracle bounds ask it, so a
new task is one module plus one registry line, with no edit in `jaxprune/eval/`."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from jaxprune.data import tasks

EVAL = Path(__file__).resolve().parents[1] / "jaxprune" / "eval"


def test_names_relevance_and_errors_come_from_the_registry():
  assert tasks.known_tasks()[:2] == ["easyvqa", "datbench:chart"] and "scenes" in tasks.known_tasks()
  assert {name for name, t in tasks.TASKS.items() if t.relevance} == {"easyvqa", "scenes"}
  assert tasks.has_harness("datbench:chart") and not tasks.has_harness("scenes") and not tasks.has_harness("x")
  for bad, message in (("coco", "unknown task 'coco' (known: easyvqa, datbench:<chart|"),
                       ("easyvqa:hard", "unknown task 'easyvqa:hard'"), ("datbench", "unknown task 'datbench'"),
                       ("datbench:poetry", "unknown DatBench capability 'poetry' (known: chart,")):
    with pytest.raises(ValueError, match=re.escape(message)):
      tasks.task_for(bad)
  with pytest.raises(ValueError, match="gives no relevance masks"):
    tasks.relevant_cells("datbench:chart", {}, (2, 2))


def test_easyvqa_cells_are_the_shape_pixels_per_grid_cell():
  import io

  from PIL import Image
  pixels = np.full((8, 8, 3), 200, np.uint8)
  pixels[5:7, 0:2] = (10, 20, 30)  # a shape in rows 5-6, columns 0-1
  png = io.BytesIO()
  Image.fromarray(pixels).save(png, format="PNG")
  cells = tasks.relevant_cells("easyvqa", {"image": png.getvalue()}, (4, 4))  # 2x2 pixels per cell
  assert np.flatnonzero(cells).tolist() == [8, 12]  # row 2 and row 3, column 0


def test_the_eval_names_no_task():
  """Task facts (names, capabilities, which tasks have relevance, a harness or judge prompts) stay out of eval/."""
  for path in EVAL.glob("*.py"):
    code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    code = re.sub(r'"""(.|\n)*?"""', "", code)  # docstrings may give examples
    names = re.findall(r'"(easyvqa|scenes|datbench[^"]*)"', code)
    assert set(names) <= {"easyvqa"}, (path.name, names)  # the demo's default task only (cli.DEMO_ARGS)


def test_each_task_scores_its_own_way():
  """easy-VQA and scenes hook their one-word exact match in; DatBench items go to the harness's scorer for their
  source; the metrics layer names no jaxprune task."""
  item = {"id": "1", "answer": "red", "all_answers": ["red"], "source": "easyvqa", "metadata": {}}
  for name in ("easyvqa", "scenes"):
    assert tasks.score_item(name, " Red.", {**item, "source": name}).score == 1.0
    assert tasks.score_item(name, "blue", {**item, "source": name}).metric == "exact"
  chart = {"id": "2", "answer": "3", "all_answers": ["3"], "source": "tallyqa", "metadata": {"is_simple": True}}
  assert tasks.score_item("datbench:counting", "3", chart).metric != "exact"
  score = (EVAL.parent / "metrics" / "score.py").read_text()
  assert '"easyvqa"' not in score and '"scenes"' not in score
