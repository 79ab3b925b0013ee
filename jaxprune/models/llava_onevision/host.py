"""Host-side (NumPy, no jit) batch building for LLaVA-OneVision: prompts + images -> `ModelInputs`.

AnyRes, as transformers' `LlavaOnevisionModel.pack_image_features` lays it out: an image of (h, w) pixels is
resized onto the best crop layout of `image_grid_pinpoints` (nh x nw crops of S px) and the processor emits the
base view (the whole image at S x S) then the crops, raster order. The LLM receives
  - the base view: Np = (S/p)^2 projector outputs in raster order (no newline), then
  - the crops view: the crops' tokens stitched into one (nh*S/p) x (nw*S/p) grid, the rows/columns that only cover
    the letterbox padding removed (unpad), bilinearly shrunk when it still exceeds about `max_num_patches` crops'
    worth of tokens, and one `image_newline` token after every row.
A prompt with several images gives each image its base view and one newline only (transformers' multi-image
rule; the processor pads such an image to a square before resizing it, see `preprocess_images`). Every LLM token
is a fixed combination of projector outputs, so the host describes each visual slot as up to 4 (crop token,
weight) taps (one tap of weight 1 unless shrunk) or as a newline; under jit the model only gathers, so any image
size inside the buckets reuses one compiled program.

`VisualLayout`: each *view* is one layout entry ("image" index = view index within the sample): the base view
is a (S/p) x (S/p) grid; the crops view is an h' x (w' + 1) grid whose last column holds the newline tokens,
raster order equal to token order; a multi-image prompt's lone newline is a 1 x 1 view. Kept-token maps are
therefore one map per view.

Buckets (as Qwen2.5-VL's host): sequence length L, visual slots N (padded slots sit in the left padding as
image tokens with valid False), crops C (zero crops at the end, never read).

Shapes: B batch, L sequence, N visual slots, C crops, S crop side, Np tokens per crop.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from jaxprune.core.tokens import ModelInputs, VisualLayout
from jaxprune.models.config import check_placeholder_token
from jaxprune.models.llava_onevision.config import OnevisionConfig
from jaxprune.models.llava_onevision.modeling import OnevisionPixels
from jaxprune.prompts import Prompt, chat_halves, encode_around

TAPS = 4  # bilinear interpolation reads at most 4 source tokens


@dataclasses.dataclass
class View:
  """One view of one image: its token grid and, per token in raster order, taps into the image's own crops."""

  grid: tuple[int, int]
  source: np.ndarray  # [n, TAPS] int32 crop * Np + token, within this image's crops
  weight: np.ndarray  # [n, TAPS] float32
  newline: np.ndarray  # [n] bool


def _round_up(n: int, multiple: int) -> int:
  return -(-max(n, 1) // multiple) * multiple


def best_resolution(size: tuple[int, int], pinpoints: Sequence[tuple[int, int]]) -> tuple[int, int]:
  """(h, w) -> the (height, width) of `pinpoints` that keeps the most of the image's resolution, then wastes the
  least area (LLaVA-NeXT's AnyRes rule, as the processor applies it)."""
  h, w = size
  best, best_key = None, None
  for ph, pw in pinpoints:
    scale = min(pw / w, ph / h)
    effective = min(int(w * scale) * int(h * scale), w * h)
    key = (effective, -(ph * pw - effective))
    if best_key is None or key > best_key:
      best, best_key = (ph, pw), key
  return best


def num_crops(size: tuple[int, int], cfg: OnevisionConfig) -> int:
  """Crops the processor makes for one image: the base view plus the chosen layout's tiles."""
  bh, bw = best_resolution(size, cfg.image_grid_pinpoints)
  s = cfg.vision.image_size
  return 1 + (bh // s) * (bw // s)


def _bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """torch's bilinear resize along one axis (align_corners=False, no antialias) -> low index, high index and the
  high index's weight, each [n_out]."""
  src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
  low = np.floor(src).astype(np.int64)
  high = np.minimum(low + 1, n_in - 1)
  return low, high, (src - low).astype(np.float32)


def _unpadded_window(size: tuple[int, int], grid_h: int, grid_w: int) -> tuple[slice, slice]:
  """Rows and columns of the stitched crop grid that cover the image, not its letterbox padding."""
  h, w = size
  if w / h > grid_w / grid_h:
    new_h = int(round(h * (grid_w / w), 7))
    pad = (grid_h - new_h) // 2
    return slice(pad, grid_h - pad), slice(0, grid_w)
  new_w = int(round(w * (grid_h / h), 7))
  pad = (grid_w - new_w) // 2
  return slice(0, grid_h), slice(pad, grid_w - pad)


def _view(grid: tuple[int, int], source: np.ndarray, weight: np.ndarray, newline: np.ndarray) -> View:
  return View(grid, source.astype(np.int32), weight.astype(np.float32), newline)


def _one_tap(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  source = np.zeros((len(index), TAPS), np.int64)
  weight = np.zeros((len(index), TAPS), np.float32)
  source[:, 0], weight[:, 0] = index, 1.0
  return source, weight


def image_views(size: tuple[int, int], cfg: OnevisionConfig, *, base_only: bool = False) -> list[View]:
  """One image of (h, w) pixels -> its views in token order (see the module docstring)."""
  side = cfg.vision.grid[0]
  n = side * side
  src, wgt = _one_tap(np.arange(n))
  views = [_view((side, side), src, wgt, np.zeros(n, bool))]
  if base_only:
    src, wgt = _one_tap(np.zeros(1, np.int64))
    return views + [_view((1, 1), src, wgt * 0, np.ones(1, bool))]
  bh, bw = best_resolution(size, cfg.image_grid_pinpoints)
  nh, nw = bh // cfg.vision.image_size, bw // cfg.vision.image_size
  r, c = np.meshgrid(np.arange(nh * side), np.arange(nw * side), indexing="ij")
  stitched = (1 + (r // side) * nw + c // side) * n + (r % side) * side + c % side  # [H, W] crop token per cell
  rows, cols = _unpadded_window(size, nh * side, nw * side)
  stitched = stitched[rows, cols]
  ch, cw = stitched.shape
  ratio = math.sqrt(ch * cw / (cfg.max_num_patches * side ** 2))
  if ratio > 1.1:  # shrink as transformers' F.interpolate(mode="bilinear") does
    oh, ow = int(ch // ratio), int(cw // ratio)
    r0, r1, lr = _bilinear_taps(ch, oh)
    c0, c1, lc = _bilinear_taps(cw, ow)
    source = np.stack([stitched[r0][:, c0], stitched[r0][:, c1], stitched[r1][:, c0], stitched[r1][:, c1]], -1)
    weight = np.stack([np.outer(1 - lr, 1 - lc), np.outer(1 - lr, lc), np.outer(lr, 1 - lc), np.outer(lr, lc)], -1)
  else:
    oh, ow = ch, cw
    source, weight = _one_tap(stitched.ravel())
    source, weight = source.reshape(oh, ow, TAPS), weight.reshape(oh, ow, TAPS)
  # the newline column: no taps
  source = np.concatenate([source, np.zeros((oh, 1, TAPS), source.dtype)], axis=1).reshape(-1, TAPS)
  weight = np.concatenate([weight, np.zeros((oh, 1, TAPS), np.float32)], axis=1).reshape(-1, TAPS)
  newline = np.zeros((oh, ow + 1), bool)
  newline[:, -1] = True
  return views + [_view((oh, ow + 1), source, weight, newline.ravel())]


def image_tokens(size: tuple[int, int], cfg: OnevisionConfig, *, base_only: bool = False) -> int:
  """LLM tokens one image becomes (what the processor expands its `<image>` into)."""
  return sum(v.grid[0] * v.grid[1] for v in image_views(size, cfg, base_only=base_only))


def base_only(images: Sequence, cfg: OnevisionConfig) -> bool:
  """Whether each of one prompt's images gives only its base view and one newline: transformers' multi-image rule
  for LLaVA-OneVision; a config whose `multi_image_base_only` is False (LLaVA-NeXT) tiles every image."""
  return len(images) > 1 and getattr(cfg, "multi_image_base_only", True)


@dataclasses.dataclass
class Image:
  """One preprocessed image: its crops (base view first) and its original (h, w) in pixels."""

  crops: np.ndarray  # [c, 3, S, S]
  size: tuple[int, int]


def expand_image_tokens(ids: Sequence[int], images: Sequence[Image], cfg: OnevisionConfig) -> list[int]:
  """One `<image>` per image (what a chat template emits) -> that image's token count of them."""
  where = [i for i, x in enumerate(ids) if x == cfg.image_token_id]
  if len(where) != len(images):
    raise ValueError(f"prompt holds {len(where)} image token(s) (id {cfg.image_token_id}) but {len(images)} "
                     f"image(s) were given")
  only_base = base_only(images, cfg)
  out, k = [], 0
  for x in ids:
    if x == cfg.image_token_id:
      out += [x] * image_tokens(images[k].size, cfg, base_only=only_base)
      k += 1
    else:
      out.append(x)
  return out


def pack_batch(ids: Sequence[Sequence[int]], images: Sequence[Sequence[Image]], cfg: OnevisionConfig, *,
               pad_id: int = 0, length_multiple: int = 64, visual_multiple: int = 64, crop_multiple: int = 8,
               query: Sequence[Sequence[bool]] | None = None) -> ModelInputs:
  """Per sample: expanded ids and its images -> one padded `ModelInputs` (text-only batch: pixels None and a
  layout with max_visual = 0)."""
  b = len(ids)
  if len(images) != b:
    raise ValueError(f"{b} prompts but image lists for {len(images)}")
  s, np_ = cfg.vision.image_size, cfg.vision.num_patches
  views: list[list[View]] = []
  for i, imgs in enumerate(images):
    sample_views = []
    for k, im in enumerate(imgs):
      want = 1 if base_only(imgs, cfg) else num_crops(im.size, cfg)
      if im.crops.ndim != 4 or im.crops.shape[0] < want or im.crops.shape[1:] != (3, s, s):
        raise ValueError(f"sample {i} image {k}: crops of shape {tuple(im.crops.shape)} for an image of size "
                         f"{im.size}; expected [>= {want}, 3, {s}, {s}]")
      sample_views.append(image_views(im.size, cfg, base_only=base_only(imgs, cfg)))
    views.append(sample_views)
  counts = [sum(v.grid[0] * v.grid[1] for vs in sv for v in vs) for sv in views]
  any_image = any(len(x) for x in images)
  n_slots = _round_up(max(counts), visual_multiple) if any_image else 0
  length = _round_up(max(len(x) + n_slots - n for x, n in zip(ids, counts)), length_multiple)

  seq = np.full((b, length), pad_id, np.int32)
  valid = np.zeros((b, length), bool)
  q = np.zeros((b, length), bool)
  for i, (row, n) in enumerate(zip(ids, counts)):
    got = sum(1 for x in row if x == cfg.image_token_id)
    if got != n:
      raise ValueError(f"sample {i}: {got} image tokens, but its images give {n} (expand with expand_image_tokens)")
    start = length - len(row)
    seq[i, start - (n_slots - n):start] = cfg.image_token_id  # padded visual slots: valid False
    seq[i, start:] = row
    valid[i, start:] = True
    is_text = np.asarray(row) != cfg.image_token_id
    q[i, start:] = is_text if query is None else np.asarray(query[i], bool) & is_text
  layout = VisualLayout.from_grids([[(1, *v.grid) for vs in sv for v in vs] for sv in views], n_slots)
  if not any_image:
    return ModelInputs(ids=seq, valid=valid, query=q, pixels=None, layout=layout)

  crops, offset = [], 0
  source = np.zeros((b, n_slots, TAPS), np.int32)
  weight = np.zeros((b, n_slots, TAPS), np.float32)
  newline = np.zeros((b, n_slots), bool)
  for i, (imgs, sv) in enumerate(zip(images, views)):
    at = 0
    for im, vs in zip(imgs, sv):
      used = 1 if base_only(imgs, cfg) else num_crops(im.size, cfg)
      crops.append(np.asarray(im.crops[:used], np.float32))
      for v in vs:
        n = len(v.newline)
        source[i, at:at + n] = v.source + offset * np_
        weight[i, at:at + n], newline[i, at:at + n] = v.weight, v.newline
        at += n
      offset += used
  crops = np.concatenate(crops)
  crops = np.concatenate([crops, np.zeros((_round_up(len(crops), crop_multiple) - len(crops),) + crops.shape[1:],
                                          np.float32)])
  pixels = OnevisionPixels(crops=crops, source=source, weight=weight, newline=newline)
  return ModelInputs(ids=seq, valid=valid, query=q, pixels=pixels, layout=layout)


def preprocess_images(image_processor, images: Sequence) -> list[Image]:
  """One prompt's PIL images -> `Image`s by the checkpoint's own `LlavaOnevisionImageProcessor`.

  One image: AnyRes crops (base view first). Several: the processor's multi-image rule, which it applies only to
  a nested list (one list per prompt, as transformers' processor and chat template pass it): each image padded to
  a square with the mean colour, then resized to one S x S base view."""
  if not images:
    return []
  nested = [list(images)] if len(images) > 1 else list(images)
  out = image_processor(images=nested, return_tensors="np")
  pixels = np.asarray(out["pixel_values"], np.float32)  # [I, max crops, 3, S, S] (padded to the batch's max)
  return [Image(crops=p, size=(int(s[0]), int(s[1]))) for p, s in zip(pixels, out["image_sizes"])]


class OnevisionHost:
  """The family's host side as eval and generation call it: `prompt`, `pixels`, `join`, `batch` (see
  `base.Family.host`). The prompt is the checkpoint's own chat template, tokenized in three pieces around the
  question so its token span is exact; `batch` expands each `<image>` to its token count."""


  def __init__(self, config: OnevisionConfig, tokenizer, processor=None, *, visual_multiple: int = 64,
               crop_multiple: int = 8):
    self.config, self.tokenizer = config, tokenizer
    self.image_processor = getattr(processor, "image_processor", processor)
    self.template = processor if getattr(processor, "chat_template", None) else tokenizer
    if not getattr(self.template, "chat_template", None):
      raise ValueError("LLaVA-OneVision needs the checkpoint's chat template (chat_template.json or "
                       "tokenizer_config.json)")
    self.visual_multiple, self.crop_multiple = visual_multiple, crop_multiple
    token = getattr(processor, "image_token", None) or getattr(tokenizer, "image_token", None) or "<image>"
    check_placeholder_token(tokenizer, config.image_token_id, "image_token_index", token)

  def prompt(self, question: str, with_image: bool, num_images: int = 1) -> Prompt:
    before, after = chat_halves(self.template, num_images if with_image else 0)
    return encode_around(self.tokenizer, before, question, after)

  def pixels(self, images: Sequence) -> list[Image]:
    """PIL images -> their crops by the checkpoint's image processor."""
    if self.image_processor is None:
      raise ValueError("LLaVA-OneVision needs the checkpoint's image processor (preprocessor_config.json)")
    return preprocess_images(self.image_processor, images)

  def join(self, per_prompt: Sequence[list]) -> list:
    """`pixels` results of several prompts -> the `pixels` argument of `batch` (one entry per prompt)."""
    return list(per_prompt)

  def batch(self, prompts: Sequence[Prompt], pixels: Sequence | None, *, batch_size: int, bucket: int,
            pad_id: int) -> ModelInputs:
    """One prompt per row, `pixels` one entry per prompt (an `Image` or a list of them); padded to `batch_size`
    rows by repeating the first, and to the length bucket."""
    fill = batch_size - len(prompts)
    if fill < 0:
      raise ValueError(f"{len(prompts)} prompts exceed batch_size={batch_size}")
    per_prompt = [[] for _ in prompts] if pixels is None else [[p] if isinstance(p, Image) else list(p)
                                                               for p in pixels]
    if len(per_prompt) != len(prompts):
      raise ValueError(f"{len(prompts)} prompts but images for {len(per_prompt)}")
    prompts, per_prompt = list(prompts) + [prompts[0]] * fill, per_prompt + [per_prompt[0]] * fill
    ids, query = [], []
    for prompt, imgs in zip(prompts, per_prompt):
      expanded = expand_image_tokens(prompt.ids, imgs, self.config)
      start, end = prompt.question_span
      before = sum(1 for x in prompt.ids[:start] if x == self.config.image_token_id)  # images before the question
      only_base = base_only(imgs, self.config)
      shift = sum(image_tokens(im.size, self.config, base_only=only_base) - 1 for im in imgs[:before])
      mask = np.zeros(len(expanded), bool)
      mask[start + shift:end + shift] = True
      ids.append(expanded)
      query.append(mask)
    return pack_batch(ids, per_prompt, self.config, pad_id=pad_id, length_multiple=bucket,
                      visual_multiple=self.visual_multiple, crop_multiple=self.crop_multiple, query=query)
