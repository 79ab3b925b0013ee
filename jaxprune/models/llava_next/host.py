"""Host-side (NumPy, no jit) batch building for LLaVA-NeXT: prompts + images -> `ModelInputs`, by LLaVA-OneVision's
AnyRes host logic (`llava_onevision.host`: best crop layout, stitched crop grid, unpad, newline column, views,
packing into taps), which LLaVA-NeXT's config parametrises: no anyres_max shrink, and every image of a prompt is
tiled (base view + unpadded crops + newlines), as transformers' `LlavaNextModel.pack_image_features` does.

An image of (h, w) pixels becomes the base view ((S/p)^2 tokens, raster order, no newline), then the crops view:
the chosen layout's nh x nw crops stitched into one (nh*S/p) x (nw*S/p) grid, the letterbox rows or columns
removed, and one `image_newline` token after every row. Images travel as `Image`s (crops, base view first, and the
original size) from the checkpoint's own `LlavaNextImageProcessor`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxprune.models.llava_next.config import LlavaNextConfig
from jaxprune.models.llava_onevision.host import (
  Image,
  OnevisionHost,
  expand_image_tokens,
  image_tokens,
  image_views,
  num_crops,
  pack_batch,
)
from jaxprune.prompts import Prompt

__all__ = ["Image", "NextHost", "expand_image_tokens", "image_tokens", "image_views", "num_crops", "pack_batch",
           "preprocess_images"]


def preprocess_images(image_processor, images: Sequence) -> list[Image]:
  """One prompt's PIL images -> `Image`s by the checkpoint's `LlavaNextImageProcessor` (each image tiled on its own;
  the processor pads the crop axis to the longest image's, `pack_batch` reads only an image's own crops)."""
  if not images:
    return []
  out = image_processor(images=list(images), return_tensors="np")
  pixels = np.asarray(out["pixel_values"], np.float32)  # [I, max crops, 3, S, S]
  return [Image(crops=p, size=(int(s[0]), int(s[1]))) for p, s in zip(pixels, out["image_sizes"])]


class NextHost(OnevisionHost):
  """The family's host side (`prompt`, `pixels`, `join`, `batch`; see `base.Host`): OneVision's, with the
  checkpoint's chat template, the BOS its tokenizer adds in front of text (llava-hf's Llama/Mistral tokenizers: `<s>`,
  as `LlavaNextProcessor(text=rendered template)` tokenizes it) and LLaVA-NeXT's image processor."""

  def __init__(self, config: LlavaNextConfig, tokenizer, processor=None, *, visual_multiple: int = 64,
               crop_multiple: int = 8):
    if not getattr(processor, "chat_template", None) and not getattr(tokenizer, "chat_template", None):
      raise ValueError("LLaVA-NeXT needs the checkpoint's chat template (chat_template.json or "
                       "tokenizer_config.json)")
    super().__init__(config, tokenizer, processor, visual_multiple=visual_multiple, crop_multiple=crop_multiple)
    bos = tokenizer.bos_token_id
    self.prefix = [bos] if bos is not None and tokenizer.encode("", add_special_tokens=True)[:1] == [bos] else []

  def prompt(self, question: str, with_image: bool, num_images: int = 1) -> Prompt:
    p, n = super().prompt(question, with_image, num_images), len(self.prefix)
    return Prompt(self.prefix + p.ids, (p.question_span[0] + n, p.question_span[1] + n))

  def pixels(self, images: Sequence) -> list[Image]:
    """PIL images -> their crops by the checkpoint's image processor."""
    if self.image_processor is None:
      raise ValueError("LLaVA-NeXT needs the checkpoint's image processor (preprocessor_config.json)")
    return preprocess_images(self.image_processor, images)

