"""Qwen2.5-VL's tiny random checkpoint (dynamic resolution, window attention in the tower, M-RoPE) and its
conformance fixture."""

from __future__ import annotations

import numpy as np
import torch

from families.base import Case, save_and_reload
from jaxprune.models.qwen2_5_vl import host

IMAGE, VIDEO, START, END = 150, 151, 152, 153
# patch grids (t, h, w): 8x8, 8x12 and 6x10 patches -> 4x4, 4x6, 3x5 merged tokens (16, 24 and 15, none square but
# one); windows of 2x2 merged tokens split each image into 4, 6 and 6 windows (the last row/column of the 3x5 one
# partial)
GRIDS = [(1, 8, 8), (1, 8, 12), (1, 6, 10)]


def hf_config():
  from transformers import Qwen2_5_VLConfig
  vision = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, patch_size=4,
                temporal_patch_size=2, spatial_merge_size=2, window_size=16, fullatt_block_indexes=[2],
                in_channels=3, hidden_act="silu")
  text = dict(vocab_size=160, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=512, pad_token_id=0,
              bos_token_id=1, eos_token_id=2, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
  return Qwen2_5_VLConfig(vision_config=vision, text_config=text, image_token_id=IMAGE, video_token_id=VIDEO,
                          vision_start_token_id=START, vision_end_token_id=END, tie_word_embeddings=False)


def randomize(hf, scale=0.15):
  """transformers' init (std 0.02, unit norms, zero biases) leaves a tiny tower nearly blind to position: a
  row/col swap in its RoPE moved outputs by only 4e-5. Larger random weights, norms and biases make every
  mapped tensor and every position id matter at the 1e-4 tolerance."""
  with torch.no_grad():
    for name, param in hf.named_parameters():
      if name.endswith("norm.weight") or "norm1" in name or "norm2" in name or "ln_q" in name:
        param.copy_(1 + 0.2 * torch.randn_like(param))
      else:
        param.normal_(0.0, scale if param.dim() > 1 else 0.1)


def save_tiny_qwen(path, seed: int):
  """A tiny random Qwen2.5-VL (larger weights, see `randomize`) saved to `path`, reloaded as transformers runs a
  checkpoint directory -> the HF torch model in eval mode."""
  from transformers import Qwen2_5_VLForConditionalGeneration
  return save_and_reload(Qwen2_5_VLForConditionalGeneration, hf_config(), path, seed, randomize, eager=False)


def patches_for(grid, seed):
  t, h, w = grid
  return np.random.RandomState(seed).randn(t * h * w, 3 * 2 * 4 * 4).astype(np.float32)


class Qwen25VLCase(Case):
  image_token = IMAGE
  one_image = tuple(GRIDS)
  alone = (0, 2)  # alone N = 16 slots (together 24); the 24-token one alone would add a program and no padding
  two_images = (GRIDS[2], GRIDS[0])
  compile_sets = (((1, 6, 10), (1, 8, 10), (1, 10, 4)), ((1, 12, 8), (1, 4, 6), (1, 8, 8)),
                  ((1, 8, 12), (1, 10, 8), (1, 6, 6)))  # 15-24 tokens: 24 slots, <= 256 patches
  buckets = dict(length_multiple=64, visual_multiple=8, patch_multiple=256)
  alone_buckets = dict(length_multiple=48)

  @classmethod
  def build(cls, path):
    from jaxprune.convert.hf import load_model
    hf = save_tiny_qwen(path, seed=0)
    hf.set_attn_implementation("eager")
    return cls(hf, load_model(path, dtype="float32"), path)

  def image(self, variant, seed):
    return variant, patches_for(variant, seed)

  def placeholder(self, image):
    return [START, IMAGE, END]

  def expand(self, ids, images):
    return host.expand_image_tokens(ids, [grid for grid, _ in images], self.config)

  def pack(self, ids, images, spans, **buckets):
    query = [(np.arange(len(x)) >= start) & (np.arange(len(x)) < end) for x, (start, end) in zip(ids, spans)]
    return host.pack_batch(ids, [[g for g, _ in x] for x in images], [[p for _, p in x] for x in images],
                           self.config, query=query, **buckets)

  def hf_images(self, sample, ids):
    if not sample.images:
      return {}
    return dict(pixel_values=torch.tensor(np.concatenate([p for _, p in sample.images])),
                image_grid_thw=torch.tensor([g for g, _ in sample.images]), mm_token_type_ids=(ids == IMAGE).int())
