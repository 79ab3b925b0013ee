"""LLaVA-NeXT's tiny random checkpoint (CLIP tower, AnyRes crops with unpad and image-newline, every image tiled,
Llama decoder) and its conformance fixture."""

from __future__ import annotations

import numpy as np
import torch

from families.base import Case
from jaxprune.models.llava_next import host

IMAGE = 150
S, PATCH = 16, 4  # crop side in pixels; patch 4 -> a 4 x 4 grid, 16 tokens per crop ([CLS] dropped)
PINPOINTS = [[16, 32], [32, 16], [32, 32], [16, 48], [48, 16]]  # LLaVA-NeXT's shape: no single-crop layout
# original (h, w) -> layout: 1x2 crops (nothing to unpad), 1x3 letterboxed (unpad keeps 2 of 4 rows), 3x1
# letterboxed (unpad keeps 2 of 4 columns), 2x2 crops; 52, 42, 52 and 88 visual tokens
ONE, ROWS, COLS, SQUARE = (16, 30), (8, 40), (40, 8), (30, 28)
GRIDS = {ONE: (4, 8), ROWS: (2, 12), COLS: (12, 2), SQUARE: (8, 8)}  # unpadded crop grids (before the newlines)


def hf_config():
  from transformers import LlavaNextConfig
  vision = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                num_attention_heads=4, image_size=S, patch_size=PATCH, projection_dim=16)
  text = dict(model_type="llama", vocab_size=160, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, max_position_embeddings=512,
              pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
  return LlavaNextConfig(vision_config=vision, text_config=text, image_token_index=IMAGE,
                         image_grid_pinpoints=PINPOINTS, vision_feature_layer=-2,
                         vision_feature_select_strategy="default", tie_word_embeddings=False)


def save_tiny_next(path, seed: int):
  """A tiny random LLaVA-NeXT (weights, norms and biases larger than transformers' init, so every mapped tensor
  matters at 1e-4) saved to `path` and reloaded -> the HF torch model (eager attention)."""
  from transformers import LlavaNextForConditionalGeneration
  torch.manual_seed(seed)
  hf = LlavaNextForConditionalGeneration(hf_config()).eval()
  with torch.no_grad():
    for name, param in hf.named_parameters():
      if "norm" in name and name.endswith("weight"):
        param.copy_(1 + 0.2 * torch.randn_like(param))
      else:
        param.normal_(0.0, 0.15 if param.dim() > 1 else 0.1)
  hf.save_pretrained(path)
  hf = LlavaNextForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
  hf.set_attn_implementation("eager")
  return hf


def image_for(size, cfg, seed):
  rng = np.random.RandomState(seed)
  return host.Image(crops=rng.randn(host.num_crops(size, cfg), 3, S, S).astype(np.float32), size=size)


def hf_image_inputs(images) -> dict:
  """transformers' keywords for one prompt's images: crops padded to the most crops, and the original sizes."""
  if not images:
    return {}
  most = max(len(im.crops) for im in images)
  crops = np.stack([np.pad(im.crops, ((0, most - len(im.crops)),) + ((0, 0),) * 3) for im in images])
  return dict(pixel_values=torch.tensor(crops), image_sizes=torch.tensor([im.size for im in images]))


class NextCase(Case):
  image_token = IMAGE
  image_id_counts_views = True  # each image's base view and its crops view are two views
  one_image = (ONE, ROWS, COLS, SQUARE)
  alone = (0, 2)  # alone N = 64 slots (together 96): the others alone would add programs
  two_images = (ROWS, COLS)  # several images: every one tiled
  compile_sets = ((SQUARE, ONE, ROWS, ROWS), (COLS, SQUARE, ONE, ONE), (ROWS, COLS, ONE, SQUARE))  # 96 slots, 16 crops
  buckets = dict(length_multiple=128, visual_multiple=16, crop_multiple=8)
  alone_buckets = dict(length_multiple=96)

  @classmethod
  def build(cls, path):
    from jaxprune.convert.hf import load_model
    hf = save_tiny_next(path, seed=0)
    return cls(hf, load_model(path, dtype="float32"), path)

  def image(self, variant, seed):
    return image_for(variant, self.config, seed)

  def placeholder(self, image):
    return [IMAGE]

  def expand(self, ids, images):
    return host.expand_image_tokens(ids, images, self.config)

  def pack(self, ids, images, spans, **buckets):
    query = [(np.arange(len(x)) >= start) & (np.arange(len(x)) < end) for x, (start, end) in zip(ids, spans)]
    return host.pack_batch(ids, images, self.config, query=query, **buckets)

  def hf_images(self, sample, ids):
    return hf_image_inputs(sample.images)
