"""Host-side (NumPy, no jit) batch building for Qwen2.5-VL: prompts + images -> `ModelInputs`.

Dynamic resolution made static: each image gives t*h*w patches (its own size) and t*h*w/4 merged LLM tokens.
A batch is padded to three buckets, each a multiple given by the caller, so a new image size inside the
buckets reuses the compiled program:
  - sequence length L (left padding),
  - visual slots N = max_visual: a sample with n < N visual tokens gets N - n *padded visual slot* tokens
    (image token id, valid False) inside its left padding, so every row holds exactly N image tokens and a
    prune stage that keeps k of them shortens every row by the same N - k;
  - patches P (all images of the batch concatenated; padding patches form their own attention group).

M-RoPE positions follow transformers' `get_rope_index`: text counts up by one; an image's tokens take
(t, row, col) = start + (t, row, col) on the merged grid; text after an image continues at start + max(h, w).

Shapes: B batch, L sequence, N visual slots, P patches, Dp flattened patch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxprune.core.tokens import ModelInputs, VisualLayout
from jaxprune.models.config import check_placeholder_token
from jaxprune.models.qwen2_5_vl.config import Qwen25VLConfig
from jaxprune.models.qwen2_5_vl.vision import VisionPatches
from jaxprune.prompts import Prompt, chat_halves, encode_around

Grid = tuple[int, int, int]  # (t, h, w) in patches, as the image processor's image_grid_thw


def _round_up(n: int, multiple: int) -> int:
  return -(-max(n, 1) // multiple) * multiple


def merged_tokens(grid: Grid, cfg: Qwen25VLConfig) -> int:
  t, h, w = grid
  return t * h * w // cfg.vision.merge_unit


def merged_grid(grid: Grid, cfg: Qwen25VLConfig) -> Grid:
  """(t, h, w) in patches -> (t, rows, cols) of the merged token grid the LLM sees."""
  t, h, w = grid
  m = cfg.vision.spatial_merge_size
  return t, h // m, w // m


def patch_metadata(grid: Grid, cfg: Qwen25VLConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One image's patches in processor order (merge blocks in raster order, a block's patches consecutive) ->
  row, col in the patch grid, and the local window index, each [t*h*w] int32."""
  t, h, w = grid
  m, side = cfg.vision.spatial_merge_size, cfg.vision.window_tokens
  if h % m or w % m:
    raise ValueError(f"image grid {grid}: h and w must be multiples of spatial_merge_size={m}")
  bh, bw = h // m, w // m
  tt, br, bc, mr, mc = np.meshgrid(np.arange(t), np.arange(bh), np.arange(bw), np.arange(m), np.arange(m),
                                   indexing="ij")
  rows, cols = (br * m + mr).ravel(), (bc * m + mc).ravel()
  windows_h, windows_w = -(-bh // side), -(-bw // side)
  window = (tt * windows_h * windows_w + (br // side) * windows_w + bc // side).ravel()
  return rows.astype(np.int32), cols.astype(np.int32), window.astype(np.int32)


def expand_image_tokens(ids: Sequence[int], grids: Sequence[Grid], cfg: Qwen25VLConfig) -> list[int]:
  """One image token per image (what a chat template emits) -> that image's merged-token count of them."""
  where = [i for i, x in enumerate(ids) if x == cfg.image_token_id]
  if len(where) != len(grids):
    raise ValueError(f"prompt holds {len(where)} image token(s) (id {cfg.image_token_id}) but {len(grids)} "
                     f"image(s) were given")
  out: list[int] = []
  k = 0
  for x in ids:
    if x == cfg.image_token_id:
      out += [x] * merged_tokens(grids[k], cfg)
      k += 1
    else:
      out.append(x)
  return out


def rope_positions(ids: Sequence[int], grids: Sequence[Grid], cfg: Qwen25VLConfig) -> np.ndarray:
  """Expanded, unpadded ids -> M-RoPE position ids [L, 3] (transformers' `get_rope_index` for images)."""
  ids = np.asarray(ids)
  positions = np.zeros((len(ids), 3), np.int32)
  i, current, k = 0, 0, 0
  while i < len(ids):
    if ids[i] != cfg.image_token_id:
      positions[i] = current
      i, current = i + 1, current + 1
      continue
    if k >= len(grids):
      raise ValueError(f"prompt has more image-token runs than the {len(grids)} image(s) given")
    t, h, w = merged_grid(grids[k], cfg)
    n = t * h * w
    if not np.all(ids[i:i + n] == cfg.image_token_id):
      raise ValueError(f"image {k}: expected {n} consecutive image tokens at position {i} (grid {grids[k]})")
    tt, rr, cc = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    positions[i:i + n] = current + np.stack([tt.ravel(), rr.ravel(), cc.ravel()], axis=-1)
    i, current, k = i + n, current + max(h, w), k + 1
  if k != len(grids):
    raise ValueError(f"prompt holds image tokens for {k} image(s) but {len(grids)} were given")
  return positions


def pack_batch(ids: Sequence[Sequence[int]], grids: Sequence[Sequence[Grid]], patches: Sequence[Sequence[np.ndarray]],
               cfg: Qwen25VLConfig, *, pad_id: int = 0, length_multiple: int = 64, visual_multiple: int = 64,
               patch_multiple: int = 256, query: Sequence[Sequence[bool]] | None = None) -> ModelInputs:
  """Per sample: expanded ids, its images' grids and patch arrays [t*h*w, Dp] -> one padded `ModelInputs`.

  A text-only batch (no images anywhere) gets `pixels=None` and a layout with max_visual = 0.
  """
  vc = cfg.vision
  if patch_multiple % vc.merge_unit:
    raise ValueError(f"patch_multiple={patch_multiple} must be a multiple of {vc.merge_unit} (one merged token)")
  b = len(ids)
  if not (len(grids) == len(patches) == b):
    raise ValueError(f"{b} prompts but {len(grids)} grid lists and {len(patches)} patch lists")
  counts = [sum(merged_tokens(g, cfg) for g in gs) for gs in grids]
  any_image = any(len(gs) for gs in grids)
  n_slots = _round_up(max(counts), visual_multiple) if any_image else 0
  length = _round_up(max(len(x) + n_slots - n for x, n in zip(ids, counts)), length_multiple)

  seq = np.full((b, length), pad_id, np.int32)
  valid = np.zeros((b, length), bool)
  q = np.zeros((b, length), bool)
  positions = np.zeros((b, length, 3), np.int32)
  for s, (row_ids, gs, n) in enumerate(zip(ids, grids, counts)):
    if sum(1 for x in row_ids if x == cfg.image_token_id) != n:
      raise ValueError(f"sample {s}: {sum(1 for x in row_ids if x == cfg.image_token_id)} image tokens, but its "
                       f"images {list(gs)} give {n} (expand with expand_image_tokens)")
    start = length - len(row_ids)
    seq[s, start - (n_slots - n):start] = cfg.image_token_id  # padded visual slots: valid False
    seq[s, start:] = row_ids
    valid[s, start:] = True
    positions[s, start:] = rope_positions(row_ids, gs, cfg)
    is_text = np.asarray(row_ids) != cfg.image_token_id
    q[s, start:] = is_text if query is None else np.asarray(query[s], bool) & is_text
  layout = VisualLayout.from_grids([[merged_grid(g, cfg) for g in gs] for gs in grids], n_slots)
  if not any_image:
    return ModelInputs(ids=seq, valid=valid, query=q, positions=positions, pixels=None, layout=layout)

  flat, rows, cols, image, window, slot_token = [], [], [], [], [], np.zeros((b, n_slots), np.int32)
  image_index = window_offset = token_offset = 0
  for s, (gs, ps) in enumerate(zip(grids, patches)):
    if len(gs) != len(ps):
      raise ValueError(f"sample {s}: {len(gs)} grids but {len(ps)} patch arrays")
    slot_token[s, :counts[s]] = token_offset + np.arange(counts[s])
    for g, p in zip(gs, ps):
      t, h, w = g
      if p.shape != (t * h * w, vc.patch_dim):
        raise ValueError(f"sample {s}: patches of shape {p.shape} for grid {g}; expected {(t * h * w, vc.patch_dim)}")
      r, c, win = patch_metadata(g, cfg)
      flat.append(p)
      rows.append(r)
      cols.append(c)
      image.append(np.full(len(p), image_index, np.int32))
      window.append(win + window_offset)
      image_index, window_offset = image_index + 1, window_offset + int(win.max()) + 1
      token_offset += len(p) // vc.merge_unit
  n_patches = sum(len(p) for p in flat)
  size = _round_up(n_patches, patch_multiple)
  pad = size - n_patches

  def padded(parts, fill, dtype):
    return np.concatenate(parts + [np.full((pad,) + parts[0].shape[1:], fill, dtype)]).astype(dtype)

  pixels = VisionPatches(patches=padded(flat, 0, np.float32), row=padded(rows, 0, np.int32),
                         col=padded(cols, 0, np.int32), image=padded(image, -1, np.int32),
                         window=padded(window, -1, np.int32), slot_token=slot_token)
  return ModelInputs(ids=seq, valid=valid, query=q, positions=positions, pixels=pixels, layout=layout)


def preprocess_images(image_processor, images: Sequence) -> tuple[list[Grid], list[np.ndarray]]:
  """PIL images (or arrays) -> per image its grid (t, h, w) and patches [t*h*w, Dp], by the checkpoint's own
  `Qwen2VLImageProcessor` (resize to multiples of 28 px within min/max pixels, normalise, patchify)."""
  if not images:
    return [], []
  out = image_processor(images=list(images), return_tensors="np")
  grids = [tuple(int(v) for v in g) for g in out["image_grid_thw"]]
  sizes = np.cumsum([t * h * w for t, h, w in grids])[:-1]
  return grids, np.split(np.asarray(out["pixel_values"], np.float32), sizes)


def build_inputs(tokenizer, image_processor, prompts: Sequence[str], images: Sequence[Sequence], cfg: Qwen25VLConfig,
                 **buckets) -> ModelInputs:
  """Prompt texts (one image token per image, e.g. from `chat_prompt`) + images per prompt -> `ModelInputs`."""
  ids, grids, patches = [], [], []
  for text, imgs in zip(prompts, images, strict=True):
    g, p = preprocess_images(image_processor, imgs)
    ids.append(expand_image_tokens(tokenizer(text, add_special_tokens=False)["input_ids"], g, cfg))
    grids.append(g)
    patches.append(p)
  pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  return pack_batch(ids, grids, patches, cfg, pad_id=pad_id, **buckets)


class Qwen25VLHost:
  """The family's host side as eval and generation call it: `prompt`, `pixels`, `batch` (see `base.Family.host`).

  `prompt` renders the checkpoint's own chat template with one image token per image and tokenizes it in three
  pieces around the question, so the question's token span is exact (text-aware scorers read it). `batch`
  expands each image token to its merged-token count, which moves the span by the tokens inserted before it.
  """


  def __init__(self, config: Qwen25VLConfig, tokenizer, processor=None, *, visual_multiple: int = 64,
               patch_multiple: int = 256):
    self.config, self.tokenizer = config, tokenizer
    self.image_processor = getattr(processor, "image_processor", processor)
    self.template = processor if getattr(processor, "chat_template", None) else tokenizer
    if not getattr(self.template, "chat_template", None):
      raise ValueError("Qwen2.5-VL needs the checkpoint's chat template (chat_template.json or tokenizer_config)")
    self.visual_multiple, self.patch_multiple = visual_multiple, patch_multiple
    check_placeholder_token(tokenizer, config.image_token_id, "image_token_id", "<|image_pad|>")

  def prompt(self, question: str, with_image: bool, num_images: int = 1) -> Prompt:
    before, after = chat_halves(self.template, num_images if with_image else 0)
    return encode_around(self.tokenizer, before, question, after)

  def pixels(self, images: Sequence) -> list[tuple[Grid, np.ndarray]]:
    """PIL images -> per image (grid, patches [t*h*w, Dp]) by the checkpoint's image processor."""
    if self.image_processor is None:
      raise ValueError("Qwen2.5-VL needs the checkpoint's image processor (preprocessor_config.json)")
    grids, patches = preprocess_images(self.image_processor, images)
    return list(zip(grids, patches))

  def join(self, per_prompt: Sequence[list]) -> list:
    """`pixels` results of several prompts -> the `pixels` argument of `batch` (one entry per prompt)."""
    return list(per_prompt)

  def batch(self, prompts: Sequence, pixels: Sequence | None, *, batch_size: int, bucket: int,
            pad_id: int) -> ModelInputs:
    """One prompt per row, `pixels` one entry per prompt (a (grid, patches) pair, or a list of them for several
    images); padded to `batch_size` rows by repeating the first, and to the length bucket."""
    fill = batch_size - len(prompts)
    if fill < 0:
      raise ValueError(f"{len(prompts)} prompts exceed batch_size={batch_size}")
    per_prompt = [[] for _ in prompts] if pixels is None else [
        [p] if isinstance(p, tuple) else list(p) for p in pixels]
    if len(per_prompt) != len(prompts):
      raise ValueError(f"{len(prompts)} prompts but images for {len(per_prompt)}")
    prompts, per_prompt = list(prompts) + [prompts[0]] * fill, per_prompt + [per_prompt[0]] * fill
    ids, grids, patches, query = [], [], [], []
    for prompt, images in zip(prompts, per_prompt):
      g = [grid for grid, _ in images]
      expanded = expand_image_tokens(prompt.ids, g, self.config)
      start, end = prompt.question_span
      shift = sum(merged_tokens(grid, self.config) - 1 for grid, at in zip(g, self._image_positions(prompt.ids))
                  if at < start)
      mask = np.zeros(len(expanded), bool)
      mask[start + shift:end + shift] = True
      ids.append(expanded)
      grids.append(g)
      patches.append([p for _, p in images])
      query.append(mask)
    return pack_batch(ids, grids, patches, self.config, pad_id=pad_id, length_multiple=bucket,
                      visual_multiple=self.visual_multiple, patch_multiple=self.patch_multiple, query=query)

  def _image_positions(self, ids: Sequence[int]) -> list[int]:
    return [i for i, x in enumerate(ids) if x == self.config.image_token_id]
