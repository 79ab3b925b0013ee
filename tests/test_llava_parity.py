"""LLaVA-1.5's own checks against transformers on its tiny random config (float32): the CLIP tower's selected
states and [CLS] attention, the projected features, and both checkpoint key layouts. Logits, batches, pruning and
the rest are in the family conformance suite (tests/families/test_conformance.py)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import torch
from conftest import TINY_NV, tiny_pixels

TOL = 1e-4


def test_vision_tower_and_cls_attention_match(tiny_llava, tiny_llava_jax):
  hf, _ = tiny_llava
  pixels = tiny_pixels(2, seed=3)
  with torch.no_grad():
    out = hf.model.vision_tower(torch.tensor(pixels), output_hidden_states=True, output_attentions=True)
  layer = hf.config.vision_feature_layer  # -2: HF hidden_states[-2] is the output of encoder layer n-2
  ref_states = out.hidden_states[layer].numpy()
  used = (len(out.hidden_states) + layer if layer < 0 else layer)  # encoder layers that ran
  ref_cls = out.attentions[used - 1].numpy()[:, :, 0, 1:]  # the [CLS] row of that same layer
  vision = tiny_llava_jax.model.encode_images(jnp.asarray(pixels))
  states, cls, _ = tiny_llava_jax.model.vision_tower(jnp.asarray(pixels))
  assert np.abs(np.asarray(states) - ref_states).max() <= TOL
  assert np.abs(np.asarray(cls) - ref_cls).max() <= TOL
  assert vision.features.shape == (2, TINY_NV, hf.config.text_config.hidden_size)
  with torch.no_grad():
    ref_features = hf.model.get_image_features(pixel_values=torch.tensor(pixels))
  ref_features = torch.cat(list(ref_features), 0) if isinstance(ref_features, (list, tuple)) else ref_features
  ref_features = getattr(ref_features, "pooler_output", ref_features)
  ref_features = np.asarray(ref_features).reshape(vision.features.shape)
  assert np.abs(np.asarray(vision.features) - ref_features).max() <= TOL


def test_new_style_hf_keys_load_identically(tiny_llava, tiny_llava_jax, tmp_path):
  """transformers >= 4.52 in-memory names (model.language_model.*) map to the same weights as hub names."""
  import shutil

  from flax import nnx
  from safetensors.numpy import load_file, save_file

  from jaxprune.convert.hf import load_model
  _, path = tiny_llava
  old = load_file(str(path / "model.safetensors"))
  renamed = {}
  for key, value in old.items():
    key = key.replace("language_model.model.", "model.language_model.").replace("language_model.lm_head.", "lm_head.")
    key = key.replace("vision_tower.vision_model.", "model.vision_tower.").replace("multi_modal_projector.",
                                                                                   "model.multi_modal_projector.")
    renamed[key] = value
  assert any(k.startswith("model.language_model.") for k in renamed)
  save_file(renamed, str(tmp_path / "model.safetensors"))
  shutil.copy(path / "config.json", tmp_path / "config.json")
  new = load_model(tmp_path, dtype="float32")
  for a, b in zip(nnx.to_flat_state(nnx.state(new.model)), nnx.to_flat_state(nnx.state(tiny_llava_jax.model))):
    assert a[0] == b[0]
    np.testing.assert_array_equal(np.asarray(a[1][...]), np.asarray(b[1][...]))
