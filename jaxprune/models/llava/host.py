"""LLaVA-1.5's host side: prompt text, image preprocessing and padded batches (NumPy, before any jit)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxprune.core.tokens import ModelInputs
from jaxprune.inputs import fill_batch, image_batch, stack_pixels
from jaxprune.models.config import check_placeholder_token
from jaxprune.models.llava.config import LlavaConfig
from jaxprune.prompts import Prompt, build_prompt

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


class LlavaHost:
  """Turns questions and PIL images into `ModelInputs` for `Llava.input_tokens`.

  The prompt is LLaVA-1.5's conversation format `USER: <image>\\n{question} ASSISTANT:` (what llava-hf's chat
  template renders and what the shipped easy-VQA model was trained on), built piece by piece so the question's
  token span is exact. Images go through the checkpoint's own image processor; without one, CLIP preprocessing
  at the tower's resolution.
  """

  def __init__(self, config: LlavaConfig, tokenizer, processor=None):
    self.config, self.tokenizer, self.processor = config, tokenizer, processor
    # the id is inserted directly (no placeholder text), so only its kind is checked
    check_placeholder_token(tokenizer, config.image_token_id, "image_token_index")

  def prompt(self, question: str, with_image: bool, num_images: int = 1) -> Prompt:
    return build_prompt(self.tokenizer, question, image_token_id=self.config.image_token_id if with_image else None,
                        num_image_tokens=self.config.visual_tokens_per_image, num_images=num_images)

  def pixels(self, images: list) -> np.ndarray:
    """One prompt's PIL images -> [I, C, H, W] float32."""
    if self.processor is not None:
      return np.asarray(self.processor(images=images, return_tensors="np")["pixel_values"], np.float32)
    size = self.config.vision.image_size
    arrays = [np.asarray(im.resize((size, size)), np.float32) / 255.0 for im in images]
    x = (np.stack(arrays) - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return x.transpose(0, 3, 1, 2)

  def join(self, per_prompt: Sequence[np.ndarray]) -> np.ndarray:
    """`pixels` results of several prompts ([I, C, H, W] each, one I for all) -> [B, C, H, W] for one image per
    prompt, else [B, I, C, H, W] (what `Llava.input_tokens` takes)."""
    return stack_pixels(per_prompt, "LLaVA")

  def batch(self, prompts: Sequence[Prompt], pixels: np.ndarray | None, *, batch_size: int, bucket: int,
            pad_id: int) -> ModelInputs:
    """Pad to the bucket and to a full batch (repeating the first prompt), so shapes stay static."""
    prompts, pixels = fill_batch(prompts, pixels, batch_size)
    return image_batch([p.ids for p in prompts], pixels, image_token_id=self.config.image_token_id,
                       num_image_tokens=self.config.visual_tokens_per_image, pad_id=pad_id, multiple=bucket,
                       query_spans=[p.question_span for p in prompts])
