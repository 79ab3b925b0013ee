"""LLaVA-1.5's conformance fixture: tests/conftest.py's tiny random LLaVA (CLIP tower, 4x4 = 16 tokens per image,
4 decoder layers), every image the same fixed size."""

from __future__ import annotations

import numpy as np
import torch
from conftest import TINY_IMAGE_TOKEN, TINY_NV

from families.base import Case
from jaxprune.generate import pad_batch


def stack_images(images: list[list[np.ndarray]]) -> np.ndarray | None:
  """Per prompt its images [C, H, W] (one count for all) -> None (text only), [B, C, H, W] or [B, I, C, H, W]."""
  counts = {len(x) for x in images}
  assert len(counts) == 1, "a fixed-resolution batch holds one image count"
  if counts == {0}:
    return None
  pixels = np.stack([np.stack(x) for x in images])
  return pixels[:, 0] if counts == {1} else pixels


class LlavaCase(Case):
  image_token = TINY_IMAGE_TOKEN
  text_ids = (3, 120)
  buckets = dict(multiple=64)  # prompts and prompts + STEPS generated tokens: one bucket
  alone_buckets = dict(multiple=48)

  def image(self, variant, seed):
    return np.random.RandomState(seed).randn(3, 32, 32).astype(np.float32)

  def placeholder(self, image):
    return [TINY_IMAGE_TOKEN] * TINY_NV

  def pack(self, ids, images, spans, multiple):
    return pad_batch(ids, pad_id=0, multiple=multiple, query_spans=spans, pixels=stack_images(images))

  def hf_images(self, sample, ids):
    return dict(pixel_values=torch.tensor(np.stack(sample.images))) if sample.images else {}
