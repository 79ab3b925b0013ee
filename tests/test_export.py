"""`save_hf_llava`: a random tiny NNX LLaVA -> HF directory -> identical logits in jaxprune and transformers."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxprune.generate import pad_batch, prefill
from jaxprune.models.config import TextConfig
from jaxprune.models.llava import Llava, LlavaConfig, VisionConfig
from jaxprune.models.llava.export import save_hf_llava

IMAGE_TOKEN = 5
NV = 16  # 32x32 image, patch 8, [CLS] dropped
TOL = 1e-4


def tiny_config(tie: bool) -> LlavaConfig:
  text = TextConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4, num_kv_heads=2,
                    head_dim=16, rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=128,
                    tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2, pad_token_id=0)
  vision = VisionConfig(hidden_size=32, intermediate_size=64, num_layers=3, num_heads=4, image_size=32, patch_size=8)
  return LlavaConfig(text=text, vision=vision, image_token_id=IMAGE_TOKEN, vision_feature_layer=-2)


def random_llava(cfg: LlavaConfig, seed: int = 0) -> Llava:
  """Random init, then every weight perturbed, so norms (init 1) and biases (init 0) are distinguishable too."""
  model = Llava(cfg, dtype=jnp.float32, rngs=nnx.Rngs(seed))
  graphdef, state = nnx.split(model)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  leaves = [x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
  return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))


def our_logits(model: Llava, ids: list[int], pixels: np.ndarray) -> np.ndarray:
  batch = pad_batch([ids], pad_id=0, multiple=1, pixels=pixels)
  _, _, _, h = prefill(model, (batch.ids, batch.valid, batch.pixels, None), extra_slots=0)
  return np.asarray(model.language_model.logits(h))[0]  # [L, V]


@pytest.mark.parametrize("tie", [False, True])
def test_export_round_trip(tmp_path, tie):
  from transformers import LlavaForConditionalGeneration

  from jaxprune.convert.hf import load_model
  cfg = tiny_config(tie)
  model = random_llava(cfg)
  out = save_hf_llava(model, cfg, tmp_path / "export")

  hf_cfg = json.loads((out / "config.json").read_text())
  assert hf_cfg["vision_config"]["num_hidden_layers"] == cfg.vision_layers_used + 1
  assert LlavaConfig.from_hf(hf_cfg) == cfg

  rng = np.random.RandomState(0)
  ids = [1] + rng.randint(6, 64, 4).tolist() + [IMAGE_TOKEN] * NV + rng.randint(6, 64, 7).tolist()
  pixels = rng.randn(1, 3, 32, 32).astype(np.float32)
  ours = our_logits(model, ids, pixels)

  # (a) our own loader reads back exactly the same weights
  loaded = load_model(out, dtype="float32")
  assert loaded.config == cfg
  np.testing.assert_array_equal(our_logits(loaded.model, ids, pixels), ours)

  # (b) transformers loads the directory without missing/unexpected weights and agrees
  hf, info = LlavaForConditionalGeneration.from_pretrained(str(out), dtype=torch.float32, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  with torch.no_grad():
    ref = hf.eval()(input_ids=torch.tensor([ids]), pixel_values=torch.tensor(pixels)).logits[0].numpy()
  assert ref.shape == ours.shape
  assert np.abs(ref - ours).max() <= TOL


def test_export_writes_tokenizer_and_processor(tmp_path):
  from conftest import word_tokenizer
  from transformers import AutoImageProcessor, AutoTokenizer, CLIPImageProcessor
  cfg = tiny_config(False)
  processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
  out = save_hf_llava(random_llava(cfg), cfg, tmp_path / "export", tokenizer=word_tokenizer(64, IMAGE_TOKEN),
                      image_processor=processor)
  assert AutoTokenizer.from_pretrained(str(out)).convert_tokens_to_ids("<image>") == IMAGE_TOKEN
  assert AutoImageProcessor.from_pretrained(str(out)).crop_size == {"height": 32, "width": 32}


def test_export_rejects_mismatched_config(tmp_path):
  cfg = tiny_config(False)
  with pytest.raises(ValueError, match="differs"):
    save_hf_llava(random_llava(cfg), tiny_config(True), tmp_path / "export")
