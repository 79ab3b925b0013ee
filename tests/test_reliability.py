"""Issue 14, "nothing silently wrong": every number in results.json came from the data, model and settings it
names. Each silent case first sets up the scenario that used to give a wrong result with exit 0."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_data import datbench_row, png_bytes, write_parquet

from jaxprune import eval as jeval


def _argv(model, data_dir, datbench, out, *extra, limit=4, tasks="datbench:counting"):
  return ["--model", str(model), "--limit", str(limit), "--batch-size", "4", "--data-dir", str(data_dir),
          "--datbench-dir", str(datbench), "--max-new-tokens", "2", "--time-batches", "0", "--no-plots",
          "--output-path", str(out), "--tasks", tasks, *extra]


def _rows(out) -> list[dict]:
  return json.loads((Path(out) / "results.json").read_text())["rows"]


def _counting(root: Path, questions: list[str], images=None) -> Path:
  """A local DatBench copy with one `counting.parquet` whose rows ask `questions`."""
  images = images or [png_bytes(i, (32, 32)) for i in range(len(questions))]
  write_parquet(root / "counting.parquet", [
      datbench_row("counting", i, source="countbench", eval_mode="direct", image=image, question=q,
                   prompt_format=None)
      for i, (q, image) in enumerate(zip(questions, images))])
  return root


def _last_error(capsys) -> str:
  err = capsys.readouterr().err.strip()
  assert "Traceback" not in err
  return err.splitlines()[-1]


# ---------------------------------------------------------------------- 1. the prepared copy follows its source


def test_prepared_copy_is_rebuilt_when_the_source_changes(tmp_path, capsys):
  from jaxprune.data import load_task
  tfds_dir = tmp_path / "tfds"
  a = _counting(tmp_path / "A", ["how many a?", "how many b?"])
  b = _counting(tmp_path / "B", ["what is c?", "what is d?", "what is e?"])
  first = load_task("datbench:counting", data_dir=tfds_dir, datbench_dir=a)
  assert [it["question"] for it in first] == ["how many a?", "how many b?"]
  # the scenario that used to evaluate A's items: same data dir, another source
  second = load_task("datbench:counting", data_dir=tfds_dir, datbench_dir=b)
  assert [it["question"] for it in second] == ["what is c?", "what is d?", "what is e?"]
  assert second.fingerprint != first.fingerprint
  assert "rebuilding it from" in capsys.readouterr().err
  again = load_task("datbench:counting", data_dir=tfds_dir, datbench_dir=b)  # unchanged: reused, no note
  assert again.fingerprint == second.fingerprint and "rebuilding" not in capsys.readouterr().err
  # a copy of B elsewhere has the same content identity (it is what resume and --drop-blind compare)
  copy = shutil.copytree(b, tmp_path / "B2")
  assert load_task("datbench:counting", data_dir=tmp_path / "tfds2", datbench_dir=copy).fingerprint == \
      second.fingerprint


def test_prepared_copy_outlives_its_removed_source(tmp_path):
  from jaxprune.data import load_task
  src = _counting(tmp_path / "A", ["how many a?"])
  first = load_task("datbench:counting", data_dir=tmp_path / "tfds", datbench_dir=src)
  shutil.rmtree(src)  # prepared once, the parquet may go; the copy is still that directory's data
  again = load_task("datbench:counting", data_dir=tmp_path / "tfds", datbench_dir=src)
  assert [it["question"] for it in again] == ["how many a?"] and again.fingerprint == first.fingerprint


def test_corrupt_source_is_refused_naming_the_file(tmp_path):
  from jaxprune.data import load_task
  tfds_dir = tmp_path / "tfds"
  src = _counting(tmp_path / "A", ["how many a?"])
  load_task("datbench:counting", data_dir=tfds_dir, datbench_dir=src)
  (src / "counting.parquet").write_bytes(b"PAR1 damaged in transit")  # the prepared copy must not stand in for it
  with pytest.raises(ValueError, match=r"counting\.parquet: not a readable parquet file") as e:
    load_task("datbench:counting", data_dir=tfds_dir, datbench_dir=src)
  assert "\n" not in str(e.value)


# ---------------------------------------------------------------------- 2. resume checks data and settings


@pytest.fixture
def two_sources(tmp_path):
  a = _counting(tmp_path / "A", ["how many a?", "how many b?", "how many c?", "how many d?"])
  b = _counting(tmp_path / "B", ["what is w?", "what is x?", "what is y?", "what is z?"])
  return tmp_path / "tfds", a, b


@pytest.mark.parametrize("change, differ", [
    (["--bucket", "32"], "bucket"),
    (["--batch-size", "2"], "batch_size"),
    (["--dtype", "float32"], "dtype"),
    (["--max-new-tokens", "3"], "max_new_tokens"),
])
def test_resume_refuses_changed_settings(tiny_eval_model, two_sources, tmp_path, capsys, change, differ):
  tfds_dir, a, _ = two_sources
  argv = _argv(tiny_eval_model, tfds_dir, a, tmp_path / "out")
  assert jeval.main(argv) == 0
  capsys.readouterr()
  assert jeval.main(argv + change) == 2
  line = _last_error(capsys)
  assert "holds samples of a different run" in line and f"{differ} differ" in line


def test_resume_refuses_other_data(tiny_eval_model, two_sources, tmp_path, capsys):
  tfds_dir, a, b = two_sources
  assert jeval.main(_argv(tiny_eval_model, tfds_dir, a, tmp_path / "out")) == 0
  capsys.readouterr()
  # same ids (counting_000..) in B: without the data identity these samples would be taken as B's answers
  assert jeval.main(_argv(tiny_eval_model, tfds_dir, b, tmp_path / "out")) == 2
  assert "data of datbench:counting differ" in _last_error(capsys)


def test_resume_accepts_what_does_not_change_answers(tiny_eval_model, two_sources, tmp_path):
  tfds_dir, a, _ = two_sources
  out = tmp_path / "out"
  assert jeval.main(_argv(tiny_eval_model, tfds_dir, a, out)) == 0
  first = _rows(out)
  same_model = shutil.copytree(tiny_eval_model, tmp_path / "elsewhere")  # the same weights named another way
  assert jeval.main(_argv(same_model, tfds_dir, a, out, "--dtype", "bfloat16")) == 0  # = the default dtype
  assert _rows(out) == first
  assert (out / "samples.jsonl").read_text().count("\n") == 4  # resumed: nothing answered twice
  header_only = tmp_path / "header_only"  # a run that stopped before its first batch
  header_only.mkdir()
  (header_only / "run.json").write_text(json.dumps({"weights": "something else", "bucket": 1}))
  assert jeval.main(_argv(tiny_eval_model, tfds_dir, a, header_only)) == 0


# ---------------------------------------------------------------------- 3. non-finite weights and logits


def _edited_model(src: Path, dst: Path, key: str, edit) -> Path:
  from safetensors.numpy import load_file, save_file
  shutil.copytree(src, dst)
  tensors = load_file(str(dst / "model.safetensors"))
  if edit is None:
    del tensors[key]
  else:
    tensors[key] = edit(tensors[key])
  save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
  return dst


def _hf_key(model: Path, suffix: str) -> str:
  from safetensors import safe_open
  with safe_open(str(model / "model.safetensors"), framework="np") as f:
    return next(k for k in f.keys() if k.endswith(suffix))


def test_nan_weight_is_refused_naming_the_hf_key(tiny_eval_model, two_sources, tmp_path, capsys):
  tfds_dir, a, _ = two_sources
  key = _hf_key(tiny_eval_model, "layers.1.mlp.down_proj.weight")

  def one_nan(w):
    w = w.copy()
    w[3, 5] = np.nan
    return w
  model = _edited_model(tiny_eval_model, tmp_path / "nan", key, one_nan)  # used to answer "" with accuracy 0.0
  assert jeval.main(_argv(model, tfds_dir, a, tmp_path / "out")) == 2
  line = _last_error(capsys)
  assert f"weight {key!r}: 1 non-finite value(s)" in line


def test_nan_in_an_orbax_checkpoint_is_refused_naming_the_array(tiny_eval_model, tmp_path):
  from flax import nnx

  from jaxprune.convert.hf import CheckpointError, load_model, save_orbax
  loaded = load_model(tiny_eval_model, dtype="float32")
  path, var = max(nnx.to_flat_state(nnx.state(loaded.model)), key=lambda pv: pv[1].value.size)
  var.value = var.value.at[(0,) * var.value.ndim].set(np.nan)  # one damaged value in the largest array
  nnx.update(loaded.model, nnx.from_flat_state([(path, var)]))
  saved = save_orbax(loaded, tmp_path / "orbax")
  with pytest.raises(CheckpointError, match="1 non-finite value") as e:
    load_model(saved)
  assert f"array {'.'.join(map(str, path))!r}" in str(e.value) and "\n" not in str(e.value)


def test_nonfinite_logits_are_counted_and_warned(tiny_eval_model, two_sources, tmp_path, capsys):
  tfds_dir, a, _ = two_sources
  key = _hf_key(tiny_eval_model, "lm_head.weight")
  # finite weights whose logits overflow float32: the weight check cannot catch it, the eval must
  model = _edited_model(tiny_eval_model, tmp_path / "huge", key, lambda w: np.sign(w) * np.float32(3e38))
  assert jeval.main(_argv(model, tfds_dir, a, tmp_path / "out", "--dtype", "float32")) == 0
  row = _rows(tmp_path / "out")[0]
  assert row["n"] == 4 and row["n_nonfinite"] == 4
  assert "4 item(s) got NaN/inf logits" in capsys.readouterr().err
  assert jeval.main(_argv(tiny_eval_model, tfds_dir, a, tmp_path / "fine", "--dtype", "float32")) == 0
  assert _rows(tmp_path / "fine")[0]["n_nonfinite"] == 0


# ---------------------------------------------------------------------- 4. --drop-blind checks what it is given


@pytest.fixture
def blind_run(tiny_eval_model, two_sources, tmp_path):
  tfds_dir, a, b = two_sources
  out = tmp_path / "blind"
  assert jeval.main(_argv(tiny_eval_model, tfds_dir, a, out, "--blind", limit=2)) == 0
  return out / "blind_correct.json"


def test_blind_file_records_what_it_tested(blind_run):
  blind = json.loads(blind_run.read_text())
  entry = blind["tasks"]["datbench:counting"]
  assert entry["tested"] == ["counting_000", "counting_001"] and set(entry["correct"]) <= set(entry["tested"])
  assert blind["weights"] and entry["data"]


def test_drop_blind_refuses_another_task_model_or_data(tiny_eval_model, always_yes_model, eval_data, two_sources,
                                                       blind_run, tmp_path, capsys):
  tfds_dir, a, b = two_sources
  drop = ["--drop-blind", str(blind_run)]
  assert jeval.main(_argv(tiny_eval_model, tfds_dir, a, tmp_path / "t", *drop, tasks="datbench:chart")) == 2
  assert "has no blind results for datbench:chart" in _last_error(capsys)
  assert jeval.main(_argv(always_yes_model, tfds_dir, a, tmp_path / "m", *drop)) == 2
  assert "other weights" in _last_error(capsys)
  assert jeval.main(_argv(tiny_eval_model, tfds_dir, b, tmp_path / "d", *drop)) == 2
  assert "blind-tested on other data" in _last_error(capsys)


def test_drop_blind_with_a_larger_limit_keeps_untested_items(tiny_eval_model, two_sources, blind_run, tmp_path,
                                                             capsys):
  tfds_dir, a, _ = two_sources
  correct = json.loads(blind_run.read_text())["tasks"]["datbench:counting"]["correct"]
  assert jeval.main(_argv(tiny_eval_model, tfds_dir, a, tmp_path / "out", "--drop-blind", str(blind_run))) == 0
  row = _rows(tmp_path / "out")[0]
  assert row["n_total"] == 4 and row["n_blind_untested"] == 2 and row["n"] == 4 - len(correct)
  assert "2 item(s) of datbench:counting were never blind-tested" in capsys.readouterr().err


@pytest.mark.parametrize("content, needle", [
    ("[1, 2]", "expected the JSON object that --blind writes, got a list"),
    ('{"model": "x", "correct": {}}', "no 'weights' key"),
    ('{"weights": "x", "tasks": {"easyvqa": {"correct": ["a"]}}}', "malformed entry for 'easyvqa'"),
    ('{"weights": "x", "tasks": {"easyvqa": {"tested": [], "correct": ["a"]}}}', "malformed entry for 'easyvqa'"),
    ("{broken", "cannot read (JSONDecodeError)"),
])
def test_malformed_blind_file(tiny_eval_model, two_sources, tmp_path, capsys, content, needle):
  tfds_dir, a, _ = two_sources
  bad = tmp_path / "blind.json"
  bad.write_text(content)
  assert jeval.main(_argv(tiny_eval_model, tfds_dir, a, tmp_path / "out", "--drop-blind", str(bad))) == 2
  line = _last_error(capsys)
  assert line.startswith(f"error: --drop-blind {bad}") and needle in line


# ---------------------------------------------------------------------- 6. one bad image fails one item


def test_undecodable_image_fails_its_item_not_the_run(tiny_eval_model, tmp_path, monkeypatch):
  from PIL import Image
  buf = io.BytesIO()
  Image.new("RGB", (400, 400), "white").save(buf, format="PNG")  # a "bomb" once the pixel limit is lowered
  images = [png_bytes(0, (32, 32)), buf.getvalue(), png_bytes(2, (32, 32))]
  src = _counting(tmp_path / "src", ["how many a?", "how many b?", "how many c?"], images)
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)  # 160k pixels > 2x the limit: DecompressionBombError
  assert jeval.main(_argv(tiny_eval_model, tmp_path / "tfds", src, tmp_path / "out", "--log-samples")) == 0
  row = _rows(tmp_path / "out")[0]
  assert row["n_total"] == 3 and row["n_failed"] == 1 and row["n"] == 2
  failed = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
  failed = [r for r in failed if r["failed"]]
  assert [r["id"] for r in failed] == ["counting_001"] and "decompression bomb" in failed[0]["failed"]


# ---------------------------------------------------------------------- 8. messages name the thing


def test_missing_weight_is_named_as_in_the_hf_checkpoint(tiny_eval_model, tmp_path):
  from jaxprune.convert.hf import CheckpointError, load_model
  key = _hf_key(tiny_eval_model, "layers.2.self_attn.k_proj.weight")
  model = _edited_model(tiny_eval_model, tmp_path / "partial", key, None)
  with pytest.raises(CheckpointError, match="missing 1 weight") as e:
    load_model(model)
  assert f"e.g. {key!r}" in str(e.value) and "language_model.layers.2.attn.k_proj.kernel" in str(e.value)


# ---------------------------------------------------------------------- 9 (CLI part): lists without repeats


def test_repeated_values_make_no_duplicate_rows(tiny_eval_model, two_sources, tmp_path):
  tfds_dir, a, _ = two_sources
  argv = _argv(tiny_eval_model, tfds_dir, a, tmp_path / "out", "--method", "none,random,none,random@1",
               "--layer", "1,1", "--keep", "4,4", tasks="datbench:counting,datbench:counting")
  assert jeval.main(argv) == 0
  rows = _rows(tmp_path / "out")
  assert [r["task"] for r in rows] == ["datbench:counting"] * 2
  assert rows[0]["plan"] == "none" and rows[1]["method"] == "random" and rows[1]["layer"] == 1


# ---------------------------------------------------------------------- 10. guards


def test_prompt_longer_than_the_model_is_refused_per_item(tiny_eval_model, tmp_path, capsys):
  model = shutil.copytree(tiny_eval_model, tmp_path / "short")
  config = json.loads((model / "config.json").read_text())
  config["text_config"]["max_position_embeddings"] = 30
  (model / "config.json").write_text(json.dumps(config))
  # 16 image tokens + a few chat-format tokens fit; the long question does not
  src = _counting(tmp_path / "src", ["yes ?", " ".join(["the shape"] * 10) + " ?"])
  assert jeval.main(_argv(model, tmp_path / "tfds", src, tmp_path / "out", "--log-samples")) == 0
  row = _rows(tmp_path / "out")[0]
  assert row["n_failed"] == 1 and row["n"] == 1
  records = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
  failed = next(r for r in records if r["failed"])
  assert failed["id"] == "counting_001" and "exceeds the model's max_position_embeddings 30" in failed["failed"]


def test_latesim_with_an_empty_question_says_what_it_falls_back_to(tiny_eval_model, tmp_path, capsys):
  src = _counting(tmp_path / "src", ["", "how many a?"])
  argv = _argv(tiny_eval_model, tmp_path / "tfds", src, tmp_path / "out", "--method", "latesim", "--layer", "1",
               "--keep", "4")
  assert jeval.main(argv) == 0
  assert _rows(tmp_path / "out")[0]["n_no_query"] == 1
  err = capsys.readouterr().err
  assert "1 item(s) have an empty question" in err and "keeps the first visual tokens" in err
