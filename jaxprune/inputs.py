"""Host-side input preparation: images and prompts -> a padded `Batch` (NumPy, before any jit)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence

import numpy as np

from jaxprune.core.tokens import ModelInputs
from jaxprune.data.common import convert_image

Batch = ModelInputs  # a padded batch on the host, as every family's `input_tokens` takes it


def bucket_length(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def pad_batch(sequences: Sequence[Sequence[int]], *, pad_id: int, multiple: int = 64,
              query_spans: Sequence[tuple[int, int]] | None = None, pixels: np.ndarray | None = None) -> Batch:
  """Left-pad token lists to the next multiple of `multiple`. `query_spans` are [start, end) per sequence."""
  if not sequences or any(len(s) == 0 for s in sequences):
    raise ValueError("pad_batch: every prompt needs at least one token")
  length = bucket_length(max(len(s) for s in sequences), multiple)
  ids = np.full((len(sequences), length), pad_id, np.int32)
  valid = np.zeros((len(sequences), length), bool)
  query = None if query_spans is None else np.zeros((len(sequences), length), bool)
  for i, seq in enumerate(sequences):
    offset = length - len(seq)
    ids[i, offset:] = seq
    valid[i, offset:] = True
    if query is not None:
      start, end = query_spans[i]
      query[i, offset + start:offset + end] = True
  return Batch(ids=ids, valid=valid, query=query, pixels=pixels)


def item_keys(item_ids: Sequence[str], batch_size: int | None = None) -> np.ndarray:
  """[B] uint32 stable keys of item ids (4 bytes of BLAKE2b: the same in every process and run, unlike hash());
  rows past the items (batch padding) get 0. What per-item seeded draws (`random`, the oracle's ties) fold in."""
  keys = np.zeros((batch_size or len(item_ids),), np.uint32)
  for row, item_id in enumerate(item_ids):
    keys[row] = int.from_bytes(hashlib.blake2b(str(item_id).encode(), digest_size=4).digest(), "little")
  return keys


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


def check_image_tokens(ids: np.ndarray, valid: np.ndarray, image_token_id: int, expected: int,
                       images: int = 1) -> None:
  """Every sample of an image batch must hold exactly `expected` placeholders (`images` images each)."""
  counts = ((ids == image_token_id) & valid).sum(axis=1)
  for i, count in enumerate(counts):
    if count != expected:
      raise InputError(f"sample {i} has {count} image tokens (id {image_token_id}); expected {expected} for "
                       f"{images} image(s)")


def stack_pixels(per_prompt: Sequence[np.ndarray], family: str) -> np.ndarray:
  """Fixed-resolution families: prompts' pixels ([I, C, H, W] each, one I for all) -> [B, C, H, W] when every
  prompt has one image, else [B, I, C, H, W]. Mixed counts would need padded visual slots: refused in one line."""
  counts = sorted({len(p) for p in per_prompt})
  if len(counts) != 1:
    raise InputError(f"a {family} batch needs the same number of images in every prompt; got "
                     f"{', '.join(map(str, counts))} images per prompt")
  stacked = np.stack([np.asarray(p, np.float32) for p in per_prompt])  # [B, I, C, H, W]
  return stacked[:, 0] if counts[0] == 1 else stacked


def images_per_prompt(pixels: np.ndarray | None) -> int:
  """0 for a text-only batch, else I of `stack_pixels`' [B, C, H, W] (1) or [B, I, C, H, W]."""
  return 0 if pixels is None else 1 if pixels.ndim == 4 else pixels.shape[1]


def fill_batch(prompts: Sequence, pixels: np.ndarray | None, batch_size: int) -> tuple[list, np.ndarray | None]:
  """Pad a partial batch to `batch_size` rows by repeating its first prompt (and image), so shapes stay static."""
  fill = batch_size - len(prompts)
  if fill < 0:
    raise ValueError(f"{len(prompts)} prompts exceed batch_size={batch_size}")
  if pixels is not None and np.asarray(pixels).shape[0] != len(prompts):
    raise InputError(f"images for {np.asarray(pixels).shape[0]} prompts, but {len(prompts)} prompts")
  if pixels is not None and fill:
    pixels = np.concatenate([pixels, np.repeat(np.asarray(pixels)[:1], fill, axis=0)])
  return list(prompts) + [prompts[0]] * fill, pixels


def image_batch(sequences: Sequence[Sequence[int]], pixels: np.ndarray | None, *, image_token_id: int,
                num_image_tokens: int, pad_id: int, multiple: int = 64,
                query_spans: Sequence[tuple[int, int]] | None = None) -> Batch:
  """Pad prompts (a full batch from `fill_batch`, which checked one pixel row per prompt) and check each prompt's
  image placeholders against its images."""
  batch = pad_batch(sequences, pad_id=pad_id, multiple=multiple, query_spans=query_spans, pixels=pixels)
  if pixels is not None:
    images = images_per_prompt(pixels)
    check_image_tokens(batch.ids, batch.valid, image_token_id, images * num_image_tokens, images)
  return batch
