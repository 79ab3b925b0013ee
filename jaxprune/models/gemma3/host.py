"""Gemma 3's host side: chat-template prompts, image preprocessing and padded batches (NumPy, before any jit).

Everything model-specific comes from the checkpoint through transformers: the chat template (processor or
tokenizer), the image placeholder expansion (`Gemma3Processor.full_image_sequence`: "\\n\\n<start_of_image>",
mm_tokens_per_image soft tokens, "<end_of_image>\\n\\n") and the image preprocessing (`Gemma3ImageProcessor`,
pan-and-scan off: one 896 px image per prompt image). A prompt may hold several images; a batch's prompts hold
the same number (its pixels are [B, I, C, S, S], no padded visual slots).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxprune.core.tokens import ModelInputs
from jaxprune.inputs import InputError, fill_batch, images_per_prompt, pad_batch, stack_pixels
from jaxprune.models.config import check_placeholder_token
from jaxprune.models.gemma3.config import Gemma3Config
from jaxprune.prompts import Prompt, chat_halves, encode_around


class Gemma3Host:
  """The family's host side as eval and generation call it: `prompt`, `pixels`, `join`, `batch`
  (see `base.Family.host`).

  `prompt` renders the checkpoint's chat template around a marker, expands the image placeholder with the
  processor's own sequence, and tokenizes in three pieces around the question, so the question's token span is
  exact (text-aware scorers read it).
  """

  def __init__(self, config: Gemma3Config, tokenizer, processor=None):
    from transformers import Gemma3Processor
    self.config, self.tokenizer = config, tokenizer
    self.image_processor = getattr(processor, "image_processor", processor)
    self.template = processor if getattr(processor, "chat_template", None) else tokenizer
    if not getattr(self.template, "chat_template", None):
      raise ValueError("Gemma 3 needs the checkpoint's chat template (chat_template.jinja or tokenizer_config)")
    missing = [name for name in ("boi_token", "image_token", "eoi_token") if not getattr(tokenizer, name, None)]
    if missing:
      raise ValueError(f"the tokenizer lacks Gemma 3's special token attribute(s) {', '.join(missing)}")
    for name in ("image_token", "boi_token", "eoi_token"):
      check_placeholder_token(tokenizer, getattr(config, f"{name}_id"), f"{name}_index", getattr(tokenizer, name))
    if isinstance(processor, Gemma3Processor):
      self.processor = processor
    elif self.image_processor is not None:
      self.processor = Gemma3Processor(image_processor=self.image_processor, tokenizer=tokenizer,
                                       image_seq_length=config.mm_tokens_per_image)
    else:
      self.processor = None  # text-only prompts still work; `pixels` and image prompts say what is missing
    if self.processor is not None and self.processor.image_seq_length != config.mm_tokens_per_image:
      raise ValueError(f"processor image_seq_length={self.processor.image_seq_length} differs from config.json "
                       f"mm_tokens_per_image={config.mm_tokens_per_image}")

  def _need_processor(self):
    if self.processor is None:
      raise ValueError("Gemma 3 needs the checkpoint's image processor (preprocessor_config.json) for images")
    return self.processor

  def prompt(self, question: str, with_image: bool, num_images: int = 1) -> Prompt:
    images = num_images if with_image else 0
    before, after = chat_halves(self.template, images)
    if images:
      boi = self.tokenizer.boi_token
      if before.count(boi) != images:
        raise ValueError(f"the chat template rendered {before.count(boi)} {boi} for {images} image(s)")
      before = before.replace(boi, self._need_processor().full_image_sequence)
    return encode_around(self.tokenizer, before, question, after)

  def pixels(self, images: Sequence) -> np.ndarray:
    """One prompt's PIL images -> [I, C, S, S] float32 by the checkpoint's image processor (no pan-and-scan)."""
    out = self._need_processor().image_processor(images=list(images), do_pan_and_scan=False, return_tensors="np")
    return np.asarray(out["pixel_values"], np.float32)

  def join(self, per_prompt: Sequence[np.ndarray]) -> np.ndarray:
    """`pixels` results of several prompts ([I, C, S, S] each, one I for all) -> [B, C, S, S] for one image per
    prompt, else [B, I, C, S, S] (what `Gemma3.encode_images` takes)."""
    return stack_pixels(per_prompt, "Gemma 3")

  def batch(self, prompts: Sequence[Prompt], pixels: np.ndarray | None, *, batch_size: int, bucket: int,
            pad_id: int) -> ModelInputs:
    """Pad to the bucket and to a full batch (repeating the first prompt), so shapes stay static. `pixels` is
    `join`'s [B, C, S, S] or [B, I, C, S, S]; every prompt must hold I images' soft tokens."""
    prompts, pixels = fill_batch(prompts, pixels, batch_size)
    images = images_per_prompt(pixels)
    batch = pad_batch([p.ids for p in prompts], pad_id=pad_id, multiple=bucket,
                      query_spans=[p.question_span for p in prompts], pixels=pixels)
    self._check_soft_tokens(batch.ids, images)
    return batch

  def _check_soft_tokens(self, ids: np.ndarray, images: int) -> None:
    """Every prompt holds mm_tokens_per_image soft tokens per image of its row in `pixels`."""
    want = images * self.config.mm_tokens_per_image
    for i, got in enumerate((ids == self.config.image_token_id).sum(axis=1)):
      if got != want:
        raise InputError(f"prompt {i} holds {got} image soft tokens (id {self.config.image_token_id}); its "
                         f"{images} image(s) need {want}")
