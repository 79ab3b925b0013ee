"""Flax LLaVA-1.5 against transformers on a tiny random config (float32)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import torch
from conftest import TINY_NV, tiny_pixels, tiny_prompt

from jaxprune.generate import Generator, pad_batch, prefill

TOL = 1e-4


def _hf_logits(hf, ids, pixels):
  with torch.no_grad():
    return hf(input_ids=torch.tensor(np.asarray(ids)[None]), pixel_values=torch.tensor(pixels[None])).logits[0].numpy()


def test_logits_match_transformers(tiny_llava, tiny_llava_jax):
  hf, _ = tiny_llava
  ids = tiny_prompt(5, 9, seed=1)
  pixels = tiny_pixels(1)
  batch = pad_batch([ids], pad_id=0, multiple=1, pixels=pixels)
  model = tiny_llava_jax.model
  _, _, _, h = prefill(model, (batch.ids, batch.valid, batch.pixels, None), extra_slots=0)
  ours = np.asarray(model.language_model.logits(h))[0]
  ref = _hf_logits(hf, ids, pixels[0])
  assert ours.shape == ref.shape
  assert np.abs(ours - ref).max() <= TOL


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


def test_batch_of_different_lengths_equals_each_alone(tiny_llava, tiny_llava_jax):
  hf, _ = tiny_llava
  prompts = [tiny_prompt(2, 3, seed=10), tiny_prompt(7, 12, seed=11), tiny_prompt(4, 1, seed=12)]
  pixels = tiny_pixels(3, seed=5)
  gen = Generator(tiny_llava_jax.model, max_new_tokens=6, eos_ids=(), pad_id=0)
  together = gen(pad_batch(prompts, pad_id=0, multiple=16, pixels=pixels), keep_logits=True)
  for i, prompt in enumerate(prompts):
    alone = gen(pad_batch([prompt], pad_id=0, multiple=16, pixels=pixels[i:i + 1]), keep_logits=True)
    np.testing.assert_array_equal(np.asarray(together["tokens"][i]), np.asarray(alone["tokens"][0]))
    assert np.abs(np.asarray(together["logits"][i]) - np.asarray(alone["logits"][0])).max() <= TOL
    # and the first step equals transformers' last-position logits for that prompt alone
    ref = _hf_logits(hf, prompt, pixels[i])[-1]
    assert np.abs(np.asarray(together["logits"][i, 0]) - ref).max() <= TOL


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
