"""Host-side input preparation: images and prompts -> a padded `Batch` (NumPy, before any jit)."""

from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np

from jaxprune.data.common import convert_image
from jaxprune.generate import Batch, pad_batch


class InputError(ValueError):
  """Bad user input (an image, a prompt); the message is one line naming it."""


def _first_line(error: Exception) -> str:
  return (str(error).splitlines() or [""])[0]


def load_image(source: str | os.PathLike | bytes, *, name: str | None = None):
  """Open an image from a path or encoded bytes as RGB; one clear error if PIL cannot read it."""
  from PIL import Image, UnidentifiedImageError
  label = name or (f"<{len(source)} bytes>" if isinstance(source, bytes) else str(source))
  try:
    image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    image.load()
  except FileNotFoundError:
    raise InputError(f"image {label}: file not found") from None
  except Image.DecompressionBombError as e:  # not an OSError: it would end the whole run
    raise InputError(f"image {label}: refused as a decompression bomb ({_first_line(e)})") from None
  except (UnidentifiedImageError, OSError, ValueError) as e:
    raise InputError(f"image {label}: cannot be opened as an image ({type(e).__name__})") from None
  except Exception as e:  # PIL's decoders raise SyntaxError, struct.error, EOFError, ... on damaged files
    raise InputError(f"image {label}: cannot be decoded ({type(e).__name__}: {_first_line(e)})") from None
  try:
    return convert_image(image, "RGB")  # 16-bit grayscale scaled to 8 bits, not clipped to white
  except Exception as e:
    raise InputError(f"image {label}: cannot be converted to RGB ({type(e).__name__}: {_first_line(e)})") from None


def check_image_tokens(ids: np.ndarray, valid: np.ndarray, image_token_id: int, expected: int) -> None:
  """Every sample of an image batch must hold exactly `expected` placeholders (one image each)."""
  counts = ((ids == image_token_id) & valid).sum(axis=1)
  for i, count in enumerate(counts):
    if count != expected:
      raise InputError(f"sample {i} has {count} image tokens (id {image_token_id}); expected {expected}, one image")


def image_batch(sequences: Sequence[Sequence[int]], pixels: np.ndarray | None, *, image_token_id: int,
                num_image_tokens: int, pad_id: int, multiple: int = 64,
                query_spans: Sequence[tuple[int, int]] | None = None) -> Batch:
  """Pad prompts and check image placeholders against the pixel batch."""
  batch = pad_batch(sequences, pad_id=pad_id, multiple=multiple, query_spans=query_spans, pixels=pixels)
  if pixels is not None:
    if pixels.shape[0] != batch.size:
      raise InputError(f"{pixels.shape[0]} images for {batch.size} prompts")
    check_image_tokens(batch.ids, batch.valid, image_token_id, num_image_tokens)
  return batch
