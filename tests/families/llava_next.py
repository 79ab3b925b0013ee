"""LLaVA-NeXT's tiny random checkpoint (CLIP tower, AnyRes crops with unpad and image-newline, every image tiled,
Llama decoder) and its conformance fixture."""

from __future__ import annotations

from families.base import AnyResCase, anyres_hf_inputs, anyres_image, save_and_reload, unit_norms_randomized
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
  """A tiny random LLaVA-NeXT (larger weights and norms, see `unit_norms_randomized`) saved to `path` and reloaded
  -> the HF torch model (eager attention)."""
  from transformers import LlavaNextForConditionalGeneration
  return save_and_reload(LlavaNextForConditionalGeneration, hf_config(), path, seed, unit_norms_randomized)


def image_for(size, cfg, seed):
  return anyres_image(host, size, cfg, seed, S)


hf_image_inputs = anyres_hf_inputs


class NextCase(AnyResCase):
  image_token = IMAGE
  image_id_counts_views = True  # each image's base view and its crops view are two views
  one_image = (ONE, ROWS, COLS, SQUARE)
  alone = (0, 2)  # alone N = 64 slots (together 96): the others alone would add programs
  two_images = (ROWS, COLS)  # several images: every one tiled
  compile_sets = ((SQUARE, ONE, ROWS, ROWS), (COLS, SQUARE, ONE, ONE), (ROWS, COLS, ONE, SQUARE))  # 96 slots, 16 crops
  buckets = dict(length_multiple=128, visual_multiple=16, crop_multiple=8)
  alone_buckets = dict(length_multiple=96)

  host = host
  save_tiny = staticmethod(save_tiny_next)
  draw_image = staticmethod(image_for)
  hf_image_inputs = staticmethod(hf_image_inputs)
