"""Gemma 3's tiny random checkpoint and its conformance fixture.

The tiny config keeps what makes Gemma 3 differ: sliding and global layers (window 6, shorter than an image's
16 soft tokens, so the window cuts through the bidirectional image block), two RoPE bases with linear scaling on
the global one, query_pre_attn_scalar != head_dim, QK-norm and (1 + w) norms with non-zero weights.
"""

from __future__ import annotations

import numpy as np
import torch

from families.base import Case, save_and_reload
from families.llava import stack_images
from jaxprune.generate import pad_batch

IMAGE, BOI, EOI = 150, 151, 152
NV = 16  # soft tokens per image (a 4x4 grid pooled from 8x8 patches)
LAYER_TYPES = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
WINDOW = 6
BUCKET = 48  # the per-family tests' one length bucket: each batch size compiles `forward` once


def hf_config():
  from transformers import Gemma3Config as HFGemma3Config
  vision = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, image_size=32, patch_size=4, layer_norm_eps=1e-6, vision_use_head=False)
  text = dict(vocab_size=160, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24, sliding_window=WINDOW,
              layer_types=LAYER_TYPES, rope_theta=10000.0, rope_local_base_freq=100.0,
              rope_scaling={"rope_type": "linear", "factor": 4.0}, max_position_embeddings=512, pad_token_id=0,
              bos_token_id=2, eos_token_id=1)
  return HFGemma3Config(vision_config=vision, text_config=text, mm_tokens_per_image=NV, image_token_index=IMAGE,
                        boi_token_index=BOI, eoi_token_index=EOI)


def randomize(hf, scale=0.15):
  """transformers' init (std 0.02, zero-centred norms = identity) hides mapping mistakes under 1e-4: larger random
  weights and norms make every tensor matter."""
  with torch.no_grad():
    for name, param in hf.named_parameters():
      if "vision_tower" in name and ("layer_norm" in name or "post_layernorm" in name):  # SigLIP LayerNorms
        param.copy_((1 + 0.2 * torch.randn_like(param)) if name.endswith("weight") else 0.1 * torch.randn_like(param))
      elif "norm" in name:
        param.normal_(0.0, 0.2)  # Gemma's zero-centred (1 + w) norms
      else:
        param.normal_(0.0, scale if param.dim() > 1 else 0.1)


def save_tiny_gemma(path, seed: int):
  """A tiny random Gemma 3 saved to `path` and reloaded as transformers runs a checkpoint (eager attention, so
  attention weights can be read) -> the HF torch model in eval mode."""
  from transformers import Gemma3ForConditionalGeneration
  return save_and_reload(Gemma3ForConditionalGeneration, hf_config(), path, seed, randomize)


def pixels_for(n, seed):
  return np.random.RandomState(seed).randn(n, 3, 32, 32).astype(np.float32)


def prompt(n_before, n_after, seed, image=True):
  """bos, text, [<start_of_image>, 16 soft tokens, <end_of_image>], text."""
  rng = np.random.RandomState(seed)
  ids = [2] + rng.randint(3, 140, n_before).tolist()
  if image:
    ids += [BOI] + [IMAGE] * NV + [EOI]
  return ids + rng.randint(3, 140, n_after).tolist()


class Gemma3Case(Case):
  image_token = IMAGE
  bos = 2
  norm_offset = 1.0  # Gemma's zero-centred (1 + w) norms
  buckets = dict(multiple=64)  # prompts and prompts + STEPS generated tokens: one bucket
  alone_buckets = dict(multiple=48)

  @classmethod
  def build(cls, path):
    from jaxprune.convert.hf import load_model
    hf = save_tiny_gemma(path, seed=0)
    return cls(hf, load_model(path, dtype="float32"), path)

  def image(self, variant, seed):
    return pixels_for(1, seed)[0]

  def placeholder(self, image):
    return [BOI] + [IMAGE] * NV + [EOI]

  def pack(self, ids, images, spans, multiple):
    return pad_batch(ids, pad_id=0, multiple=multiple, query_spans=spans, pixels=stack_images(images))

  def hf_images(self, sample, ids):
    if not sample.images:
      return {}
    return dict(pixel_values=torch.tensor(np.stack(sample.images)), token_type_ids=(ids == IMAGE).long())
