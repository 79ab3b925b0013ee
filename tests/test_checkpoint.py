"""orbax round trip, the convert CLI, and one clear error line for each kind of bad checkpoint or image."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import tiny_pixels, tiny_prompt
from flax import nnx
from safetensors.numpy import load_file, save_file

from jaxprune.convert.hf import CheckpointError, load_model, save_orbax
from jaxprune.generate import pad_batch, prefill
from jaxprune.inputs import InputError, load_image

PROMPTS = [tiny_prompt(4, 6, seed=41), tiny_prompt(1, 2, seed=42)]


def _logits(model):
  batch = pad_batch(PROMPTS, pad_id=0, multiple=8, pixels=tiny_pixels(2, seed=9))
  _, _, _, h = prefill(model, (batch.ids, batch.valid, batch.pixels, None), extra_slots=0)
  return np.asarray(model.language_model.logits(h))


def test_orbax_round_trip_gives_identical_logits(tiny_llava_jax, tmp_path):
  out = save_orbax(tiny_llava_jax, tmp_path / "ckpt")
  restored = load_model(out, dtype=None)
  assert (out / "jaxprune.json").exists() and (out / "config.json").exists()
  np.testing.assert_array_equal(_logits(restored.model), _logits(tiny_llava_jax.model))


def test_convert_cli_writes_a_loadable_checkpoint(tiny_llava, tiny_llava_jax, tmp_path):
  _, path = tiny_llava
  done = subprocess.run([sys.executable, "-m", "jaxprune.convert", "--hf", str(path), "--out", str(tmp_path / "o"),
                         "--dtype", "float32"], capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  np.testing.assert_array_equal(_logits(load_model(tmp_path / "o").model), _logits(tiny_llava_jax.model))
  bf16 = load_model(tmp_path / "o", dtype="bfloat16")
  assert {v.dtype for v in nnx.to_flat_state(nnx.state(bf16.model)).leaves} == {np.dtype("bfloat16")}


def _copy(src, dst):
  shutil.copytree(src, dst)
  return dst


def _one_line(excinfo) -> str:
  message = str(excinfo.value)
  assert "\n" not in message
  return message


def test_missing_directory(tmp_path):
  with pytest.raises(CheckpointError) as e:
    load_model(tmp_path / "nope")
  assert "neither a known name" in _one_line(e) and "nope" in str(e.value)


def test_directory_without_weights(tiny_llava, tmp_path):
  d = _copy(tiny_llava[1], tmp_path / "c")
  (d / "model.safetensors").unlink()
  with pytest.raises(CheckpointError) as e:
    load_model(d)
  assert "no *.safetensors" in _one_line(e) and str(d) in str(e.value)


def test_directory_without_config(tiny_llava, tmp_path):
  d = _copy(tiny_llava[1], tmp_path / "c")
  (d / "config.json").unlink()
  with pytest.raises(CheckpointError) as e:
    load_model(d)
  assert "no config.json" in _one_line(e)


def test_partial_checkpoint_missing_a_weight(tiny_llava, tmp_path):
  d = _copy(tiny_llava[1], tmp_path / "c")
  tensors = load_file(str(d / "model.safetensors"))
  del tensors["language_model.model.layers.1.mlp.up_proj.weight"]
  save_file(tensors, str(d / "model.safetensors"))
  with pytest.raises(CheckpointError) as e:
    load_model(d)
  assert "missing 1 weight" in _one_line(e) and "language_model.layers.1.mlp.up_proj.kernel" in str(e.value)


def test_sharded_index_naming_a_missing_shard(tiny_llava, tmp_path):
  d = _copy(tiny_llava[1], tmp_path / "c")
  keys = load_file(str(d / "model.safetensors")).keys()
  index = {"weight_map": {k: ("model-00001-of-00002.safetensors" if i % 2 else "model.safetensors")
                          for i, k in enumerate(keys)}}
  (d / "model.safetensors.index.json").write_text(json.dumps(index))
  with pytest.raises(CheckpointError) as e:
    load_model(d)
  assert "model-00001-of-00002.safetensors" in _one_line(e) and "missing" in str(e.value)


def test_unknown_architecture(tiny_llava, tmp_path):
  d = _copy(tiny_llava[1], tmp_path / "c")
  config = json.loads((d / "config.json").read_text())
  config["architectures"], config["model_type"] = ["FooForBar"], "foo"
  (d / "config.json").write_text(json.dumps(config))
  with pytest.raises(ValueError) as e:
    load_model(d)
  assert "unknown architecture 'FooForBar'" in _one_line(e) and "config.json" in str(e.value)


def test_weight_shape_mismatch_names_key_and_both_shapes(tiny_llava, tmp_path):
  d = _copy(tiny_llava[1], tmp_path / "c")
  tensors = load_file(str(d / "model.safetensors"))
  key = "language_model.model.layers.0.self_attn.q_proj.weight"
  tensors[key] = np.zeros((48, 64), np.float32)  # config implies (64, 64)
  save_file(tensors, str(d / "model.safetensors"))
  with pytest.raises(CheckpointError) as e:
    load_model(d)
  message = _one_line(e)
  assert key in message and "(48, 64)" in message and "(64, 64)" in message


def test_corrupt_safetensors_file(tiny_llava, tmp_path):
  d = _copy(tiny_llava[1], tmp_path / "c")
  (d / "model.safetensors").write_bytes(b"\x00\x01 not a safetensors file")
  with pytest.raises(CheckpointError) as e:
    load_model(d)
  assert "model.safetensors" in _one_line(e)


def test_convert_cli_reports_one_line(tmp_path):
  done = subprocess.run([sys.executable, "-m", "jaxprune.convert", "--hf", str(tmp_path / "missing"), "--out",
                         str(tmp_path / "o")], capture_output=True, text=True)
  assert done.returncode == 2
  assert done.stderr.strip().count("\n") == 0 and "neither a known name" in done.stderr


def test_image_that_pil_cannot_open(tmp_path):
  bad = tmp_path / "broken.png"
  bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
  with pytest.raises(InputError) as e:
    load_image(bad)
  assert "broken.png" in _one_line(e) and "cannot be opened" in str(e.value)
  with pytest.raises(InputError) as e:
    load_image(tmp_path / "absent.jpg")
  assert "not found" in _one_line(e)
  with pytest.raises(InputError):
    load_image(b"not an image")
