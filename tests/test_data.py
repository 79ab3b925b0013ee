"""Dataset layer: easy-VQA from the installed package, DatBench from a tiny local parquet fixture.

Nothing here touches the network: the DatBench fixture is written in the test in
the HF parquet schema, and every load passes a local DatBench dir.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from jaxprune.data import ITEM_KEYS, decode_image, load_task, resolve_data_dir, shape_mask

# --- DatBench fixture ---------------------------------------------------------


def png_bytes(seed: int, size: tuple[int, int] = (12, 10)) -> bytes:
  from PIL import Image
  pixels = np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="PNG")
  return buf.getvalue()


def datbench_row(capability: str, i: int, *, source: str, eval_mode: str, image: bytes | None, **extra) -> dict:
  """One row in the HF DatBench schema (incl. fields the loader must drop)."""
  row = {
      "id": f"{capability}_{i:03d}",
      "image": None if image is None else {"bytes": image, "path": f"{capability}_{i}.png"},
      "question": f"{capability} question {i}?",
      "prompt_format": {"prefix": "", "suffix": "Answer briefly."},
      "answer": f"ans{i}",
      "eval_mode": eval_mode,
      "judge_prompt": "" if eval_mode == "direct" else "Judge this.",
      "is_circular": False,
      "source_info": {"dataset": source, "original_idx": str(100 + i)},
      "eval_metrics": {"discrimination": 0.5, "is_frontier": i % 2 == 0},
      "all_answers": [f"ans{i}", f"answer {i}"],
      "metadata": "{}",
  }
  row.update(extra)
  return row


def write_parquet(path: Path, rows: list[dict]) -> None:
  import pyarrow as pa
  import pyarrow.parquet as pq
  path.parent.mkdir(parents=True, exist_ok=True)
  pq.write_table(pa.Table.from_pylist(rows), path)


def make_datbench_fixture(root: Path) -> dict[str, list[dict]]:
  """chart: two shards in `chart/` (one corrupt image, kept for the eval to report); counting: one parquet.

  Returns the rows that should come back, per capability, in order.
  """
  chart = [
      datbench_row("chart", 0, source="chartqa", eval_mode="direct", image=png_bytes(0)),
      datbench_row("chart", 1, source="charxiv", eval_mode="judge", image=png_bytes(1)),
      datbench_row("chart", 2, source="chartqa", eval_mode="direct", image=b"\x89PNG not really an image"),
      datbench_row("chart", 3, source="infovqa", eval_mode="judge", image=png_bytes(3, (40, 30)),
                   metadata=json.dumps({"choices": ["red", "blue", "green"]})),
      datbench_row("chart", 4, source="mmbench", eval_mode="direct", image=png_bytes(4), all_answers=None,
                   metadata=json.dumps({"index2ans": {"B": "two", "A": "one"}, "all_choices": ["A", "B"]}),
                   prompt_format={"prefix": "Look. ", "suffix": " Answer with the letter."}),
  ]
  counting = [
      datbench_row("counting", i, source=["vqa-v2", "pixmo_count", "countbench"][i % 3],
                   eval_mode=["direct", "judge"][i % 2], image=png_bytes(10 + i))
      for i in range(4)
  ]
  counting.append(datbench_row("counting", 4, source="vqa-v2", eval_mode="direct", image=None))
  write_parquet(root / "chart" / "test-00000-of-00002.parquet", chart[:3])
  write_parquet(root / "chart" / "test-00001-of-00002.parquet", chart[3:])
  write_parquet(root / "counting.parquet", counting)
  return {"chart": chart, "counting": counting}


@pytest.fixture(scope="module")
def datbench_env(tmp_path_factory):
  """(local DatBench dir, tfds data dir, expected rows per capability)."""
  src = tmp_path_factory.mktemp("datbench_src")
  expected = make_datbench_fixture(src)
  return src, tmp_path_factory.mktemp("tfds_datbench"), expected


def check_item_types(item: dict) -> None:
  assert tuple(item) == ITEM_KEYS
  assert isinstance(item["image"], bytes)
  for k in ("id", "question", "answer", "eval_mode", "source", "prompt"):
    assert isinstance(item[k], str), k
  for k in ("all_answers", "choices"):
    assert isinstance(item[k], list) and all(isinstance(x, str) for x in item[k]), k
  assert isinstance(item["metadata"], dict)


def test_datbench_round_trip(datbench_env):
  src, data_dir, expected = datbench_env
  data = load_task("datbench:chart", data_dir=data_dir, datbench_dir=src)
  rows = expected["chart"]
  assert data.name == "datbench:chart" and data.split == "test"
  assert len(data) == len(rows)  # the corrupt-image row stays: the eval reports it as failed
  for item, row in zip(data, rows):
    check_item_types(item)
    assert item["id"] == row["id"]
    assert item["image"] == row["image"]["bytes"]
    assert item["question"] == row["question"] and item["answer"] == row["answer"]
    assert item["eval_mode"] == row["eval_mode"]
    assert item["source"] == row["source_info"]["dataset"]
    assert item["all_answers"] == (row["all_answers"] or [row["answer"]])
    fmt = row["prompt_format"]
    assert item["prompt"] == fmt["prefix"] + row["question"] + fmt["suffix"]
    assert item["metadata"] == json.loads(row["metadata"])
  assert [it["eval_mode"] for it in data] == ["direct", "judge", "direct", "judge", "direct"]
  assert {it["source"] for it in data} == {"chartqa", "charxiv", "infovqa", "mmbench"}
  assert data[3]["choices"] == ["red", "blue", "green"] and data[0]["choices"] == []
  assert data[2]["id"] == "chart_002" and data[2]["image"] == b"\x89PNG not really an image"  # kept, unreadable
  assert data[4]["choices"] == ["one", "two"]  # From metadata index2ans, in letter order.
  assert data[4]["prompt"] == "Look. chart question 4? Answer with the letter."
  assert decode_image(data[3]["image"]).shape == (30, 40, 3)
  # Random access, negative index and slices agree with iteration.
  assert data[-1] == data[len(data) - 1] and data[1:3] == [data[1], data[2]]


def test_datbench_limit_env_and_stable_ids(datbench_env, monkeypatch):
  src, data_dir, expected = datbench_env
  monkeypatch.setenv("JAXPRUNE_DATBENCH_DIR", str(src))  # The local copy via the env var this time.
  data = load_task("datbench:counting", data_dir=data_dir)
  assert [it["id"] for it in data] == [r["id"] for r in expected["counting"]]
  assert data[4]["image"] == b""  # A row without an image is kept.
  assert sorted({it["eval_mode"] for it in data}) == ["direct", "judge"]
  limited = load_task("datbench:counting", data_dir=data_dir, limit=2)
  assert [it["id"] for it in limited] == ["counting_000", "counting_001"]
  sampled = load_task("datbench:counting", data_dir=data_dir, limit=3, seed=0)
  again = load_task("datbench:counting", data_dir=data_dir, limit=3, seed=0)
  assert len(sampled) == 3 and [it["id"] for it in sampled] == [it["id"] for it in again]
  # The prepared copy answers only for its own source: another (here missing) directory is never served from it
  # (test_reliability.py: a removed source directory still is).
  monkeypatch.delenv("JAXPRUNE_DATBENCH_DIR")
  with pytest.raises(FileNotFoundError, match="gone"):
    load_task("datbench:counting", data_dir=data_dir, datbench_dir=src / "gone")


def test_datbench_missing_sources(datbench_env, tmp_path):
  src, _, _ = datbench_env
  missing = tmp_path / "no_such_dir"
  with pytest.raises(FileNotFoundError, match="no_such_dir") as err:
    load_task("datbench:chart", data_dir=tmp_path / "tfds", datbench_dir=missing)
  assert "\n" not in str(err.value)
  with pytest.raises(FileNotFoundError, match="math") as err:  # Dir exists, capability absent.
    load_task("datbench:math", data_dir=tmp_path / "tfds", datbench_dir=src)
  assert str(src) in str(err.value) and "\n" not in str(err.value)


def test_datbench_missing_column(tmp_path):
  row = datbench_row("table", 0, source="tabfact", eval_mode="direct", image=png_bytes(0))
  del row["question"]
  write_parquet(tmp_path / "src" / "table" / "test.parquet", [row])
  with pytest.raises(ValueError, match="required column.*question"):
    load_task("datbench:table", data_dir=tmp_path / "tfds", datbench_dir=tmp_path / "src")


def test_unknown_names():
  with pytest.raises(ValueError, match=r"unknown task 'foo' \(known: easyvqa, datbench:<chart\|") as err:
    load_task("foo")
  assert "\n" not in str(err.value)
  with pytest.raises(ValueError, match="unknown task"):
    load_task("easyvqa:chart")
  with pytest.raises(ValueError, match=r"unknown DatBench capability 'x' \(known: chart, counting,"):
    load_task("datbench:x")
  with pytest.raises(ValueError, match="unknown DatBench split"):
    load_task("datbench:chart", split="train")
  with pytest.raises(ValueError, match="unknown easy-VQA split"):
    load_task("easyvqa", split="val")


def test_datbench_hub_path_is_lazy_and_offline(datbench_env, tmp_path, monkeypatch):
  """Without a local copy the hub is used, via a stand-in `huggingface_hub` serving the fixture."""
  import sys
  import types
  src, _, expected = datbench_env
  calls = []
  fake = types.ModuleType("huggingface_hub")
  fake.list_repo_files = lambda repo_id, repo_type=None: (
      calls.append(repo_id) or ["README.md", "chart/test-00001-of-00002.parquet", "chart/test-00000-of-00002.parquet",
                                "counting.parquet"])
  fake.hf_hub_download = lambda repo_id, filename, repo_type=None: str(src / filename)
  monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
  monkeypatch.delenv("JAXPRUNE_DATBENCH_DIR", raising=False)
  data = load_task("datbench:chart", data_dir=tmp_path / "tfds")
  assert calls == ["DatologyAI/DatBench"]
  assert [it["id"] for it in data] == [r["id"] for r in expected["chart"]]


def test_hub_file_matching():
  from jaxprune.data.datbench import _is_capability_file
  assert _is_capability_file("chart/test-00000-of-00008.parquet", "chart")
  assert _is_capability_file("data/chart/test.parquet", "chart")
  assert _is_capability_file("chart.parquet", "chart")
  assert not _is_capability_file("chart/README.md", "chart")
  assert not _is_capability_file("counting/test-00000.parquet", "chart")


# --- easy-VQA -------------------------------------------------------------------


@pytest.fixture(scope="module")
def easyvqa_test(tmp_path_factory):
  """The easy-VQA test split, prepared into a temporary data dir (only that split)."""
  data_dir = tmp_path_factory.mktemp("tfds_easyvqa")
  return load_task("easyvqa", split="test", data_dir=data_dir), data_dir


def test_easyvqa_counts_and_fields(easyvqa_test):
  from jaxprune.data.easyvqa import easyvqa_answers, easyvqa_root
  data, data_dir = easyvqa_test
  questions = json.loads((easyvqa_root() / "test" / "questions.json").read_text())
  assert len(data) == len(questions) == 9673
  assert data.name == "easyvqa" and data.split == "test"
  assert not (Path(data_dir) / "easyvqa" / "train").exists()  # Train is never prepared here.
  answers = set(easyvqa_answers())
  assert len(answers) == 13
  for i in (0, 17, len(data) - 1):
    item = data[i]
    check_item_types(item)
    question, answer, image_id = questions[i]
    assert item["id"] == f"test-{i:05d}"
    assert (item["question"], item["answer"]) == (question, answer)
    assert item["all_answers"] == [answer] and answer in answers
    assert (item["source"], item["eval_mode"], item["choices"]) == ("easyvqa", "direct", [])
    assert item["prompt"] == question and item["metadata"] == {"image_id": image_id}
    image_file = easyvqa_root() / "test" / "images" / f"{image_id}.png"
    assert item["image"] == image_file.read_bytes()
    assert decode_image(item["image"]).shape == (64, 64, 3)


def test_easyvqa_limit_and_env(easyvqa_test, monkeypatch):
  data, data_dir = easyvqa_test
  monkeypatch.setenv("JAXPRUNE_DATA_DIR", str(data_dir))
  assert resolve_data_dir() == str(data_dir)
  first = load_task("easyvqa", limit=5)  # Split defaults to test; data dir from the env (already prepared).
  assert len(first) == 5 and [it["id"] for it in first] == [f"test-{i:05d}" for i in range(5)]
  assert first[:] == data[:5]
  with pytest.raises(IndexError):
    first[5]


def test_shape_mask(easyvqa_test):
  data, _ = easyvqa_test
  for i in range(0, 200, 20):
    image = data[i]["image"]
    mask = shape_mask(image)
    assert mask.shape == (64, 64) and mask.dtype == bool
    assert 0.005 < mask.mean() < 0.7, (i, mask.mean())
    # Everything outside the mask is (nearly) the background colour.
    pixels = decode_image(image).astype(int)
    outside = pixels[~mask]
    assert np.abs(outside - np.median(outside, axis=0)).max() <= 8
  # Same answer from an already-decoded array.
  assert np.array_equal(shape_mask(decode_image(data[0]["image"])), shape_mask(data[0]["image"]))
