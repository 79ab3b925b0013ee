"""Qwen2.5-VL through the family-agnostic loaders: the registry picks the family from config.json, the converter CLI
writes orbax, and every path gives the same logits as transformers."""

from __future__ import annotations

import numpy as np
import pytest
from test_qwen2_5_vl import GRIDS, TOL, batch, forward, hf_logits, patches_for, prompt, save_tiny_qwen

from jaxprune.convert.__main__ import main as convert_main
from jaxprune.convert.hf import load_model


@pytest.fixture(scope="module")
def saved_qwen(tmp_path_factory):
  path = tmp_path_factory.mktemp("qwen_convert") / "hf"
  return save_tiny_qwen(path, seed=1), path


def test_load_model_detects_the_family_and_the_orbax_round_trip_matches_transformers(saved_qwen, tmp_path):
  hf, path = saved_qwen
  loaded = load_model(path, dtype="float32")
  assert loaded.family.name == "qwen2_5_vl" and loaded.config.rope_axes == 3
  assert convert_main(["--hf", str(path), "--out", str(tmp_path / "orbax"), "--dtype", "float32"]) == 0
  restored = load_model(tmp_path / "orbax")
  assert restored.family.name == "qwen2_5_vl"
  ids, grids, patches = prompt(3, 5, 1, seed=4), [GRIDS[1]], [patches_for(GRIDS[1], 6)]
  inputs, expanded = batch(loaded.config, [(ids, grids, patches)])
  ref = hf_logits(hf, expanded[0], grids, patches)
  for model in (loaded.model, restored.model):
    ours = np.asarray(forward(model, inputs))[0, -len(expanded[0]):]
    assert np.abs(ours - ref).max() <= TOL
