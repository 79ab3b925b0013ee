"""LLaVA-OneVision's tiny random checkpoint (SigLIP tower, AnyRes crops with unpad, anyres_max shrink and
image-newline slots, Qwen2 decoder) and its conformance fixture."""

from __future__ import annotations

import torch

from families.base import AnyResCase, anyres_hf_inputs, anyres_image, save_and_reload, unit_norms_randomized
from jaxprune.models.llava_onevision import host

IMAGE, VIDEO = 150, 151
S = 16  # crop side in pixels; patch 4 -> 4 x 4 = 16 tokens per crop
PINPOINTS = [[16, 16], [16, 32], [32, 16], [32, 32], [16, 48], [48, 16]]
# original image sizes (h, w) -> crop layout: 1 crop, 1x3 crops letterboxed (unpad drops rows), 2x2 crops whose
# 8x8 grid exceeds anyres_max_2's budget (shrunk bilinearly to 5x5), 3x1 crops letterboxed (unpad drops columns);
# 36, 46, 46 and 52 visual tokens
SIZES = [(16, 16), (10, 40), (40, 40), (44, 12)]


def hf_config():
  from transformers import LlavaOnevisionConfig
  vision = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, image_size=S, patch_size=4, vision_use_head=False)
  text = dict(model_type="qwen2", vocab_size=160, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=512,
              pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
  return LlavaOnevisionConfig(vision_config=vision, text_config=text, image_token_index=IMAGE,
                              video_token_index=VIDEO, image_grid_pinpoints=PINPOINTS,
                              vision_aspect_ratio="anyres_max_2", vision_feature_layer=-1,
                              vision_feature_select_strategy="full", tie_word_embeddings=False)


def save_tiny_onevision(path, seed: int):
  """A tiny random LLaVA-OneVision saved to `path` and reloaded -> the HF torch model (eager attention)."""
  from transformers import LlavaOnevisionForConditionalGeneration
  return save_and_reload(LlavaOnevisionForConditionalGeneration, hf_config(), path, seed, unit_norms_randomized)


def image_for(size, cfg, seed):
  return anyres_image(host, size, cfg, seed, S)


def hf_image_inputs(images) -> dict:
  """transformers' keywords for one prompt's images (`anyres_hf_inputs`), and its image count for several."""
  kwargs = anyres_hf_inputs(images)
  if len(images) > 1:
    kwargs["batch_num_images"] = torch.tensor([len(images)])
  return kwargs


class OnevisionCase(AnyResCase):
  image_token = IMAGE
  image_id_counts_views = True  # each image's base view and its newline token are views 2k and 2k + 1
  one_image = tuple(SIZES)
  alone = (0, 1, 2)  # alone N = 48 slots (together 64); the 52-token one alone would add a program and no padding
  two_images = (SIZES[2], SIZES[1])  # several images: base views only
  compile_sets = (((20, 30), (16, 40), SIZES[3], SIZES[0]), (SIZES[3], SIZES[0], SIZES[1], (20, 30)),
                  ((16, 40), SIZES[3], SIZES[0], (16, 16)))  # up to 52 tokens: 64 slots, <= 16 crops
  buckets = dict(length_multiple=128, visual_multiple=16, crop_multiple=8)
  alone_buckets = dict(length_multiple=96)

  host = host
  save_tiny = staticmethod(save_tiny_onevision)
  draw_image = staticmethod(image_for)
  hf_image_inputs = staticmethod(hf_image_inputs)
