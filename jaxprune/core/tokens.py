"""The sequence that flows between decoder layers, the visual layout it indexes, and the KV cache.

Shapes: B batch, L sequence, D hidden, R rope axes (1 for 1-D RoPE, 3 for M-RoPE's (t, row, col)),
N = max_visual visual slots per sample, H query heads, G kv heads, Dh head dim, S cache slots.

Visual tokens are addressed through *slots*: a sample's visual tokens (all its images, in prompt order) are
slots 0..n-1 of its `VisualLayout`, padded to a static `max_visual` per bucket. A token's `patch` field is its
slot (-1 for text and for tokens a merge made), so any per-slot table (a vision-side score, a relevance mask, a
grid coordinate) reads the same way however many prune stages ran before.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np


@flax.struct.dataclass
class Tokens:
  """The decoder's sequence. Pruning gathers every field along L."""

  hidden: jax.Array  # [B, L, D]
  positions: jax.Array  # [B, L, R] int32 RoPE position ids (gaps allowed after pruning)
  valid: jax.Array  # [B, L] bool, False at padding (left padding and padded visual slots)
  image: jax.Array  # [B, L] bool, True at visual tokens (including padded visual slots)
  query: jax.Array  # [B, L] bool, True at the question tokens (what text-aware scorers compare against)
  patch: jax.Array  # [B, L] int32 visual slot in the VisualLayout; -1 for text and merged tokens
  image_id: jax.Array  # [B, L] int32 which image of the sample (0, 1, ...); -1 for text

  @property
  def length(self) -> int:
    return self.hidden.shape[1]

  @property
  def rope_axes(self) -> int:
    return self.positions.shape[-1]


@flax.struct.dataclass
class VisualLayout:
  """Where each visual slot of a sample comes from; made on the host per batch (NumPy), static max_visual.

  Slots are in prompt order: image 0's tokens in raster order (t, row, col), then image 1's, ...; slots past a
  sample's visual count are padding (valid False, image -1) and are never kept by any method.
  """

  image: jax.Array  # [B, N] int32 image index within the sample; -1 at padding
  t: jax.Array  # [B, N] int32 temporal index (0 for still images)
  row: jax.Array  # [B, N] int32 row in that image's token grid
  col: jax.Array  # [B, N] int32 column in that image's token grid
  grid_h: jax.Array  # [B, N] int32 that image's token-grid height (0 at padding)
  grid_w: jax.Array  # [B, N] int32 that image's token-grid width (0 at padding)
  valid: jax.Array  # [B, N] bool

  @property
  def max_visual(self) -> int:
    return self.valid.shape[1]

  @classmethod
  def from_grids(cls, grids_per_sample: list[list[tuple[int, int, int]]], max_visual: int) -> VisualLayout:
    """Host-side: per sample a list of (t, grid_h, grid_w) per image, in prompt order -> padded layout."""
    b = len(grids_per_sample)
    fields = {name: np.full((b, max_visual), fill, np.int32)
              for name, fill in (("image", -1), ("t", 0), ("row", 0), ("col", 0), ("grid_h", 0), ("grid_w", 0))}
    valid = np.zeros((b, max_visual), bool)
    for i, grids in enumerate(grids_per_sample):
      start = 0
      for image, (t, h, w) in enumerate(grids):
        n = t * h * w
        if start + n > max_visual:
          raise ValueError(f"sample {i}: {start + n} visual tokens exceed max_visual={max_visual}")
        tt, rr, cc = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
        sl = slice(start, start + n)
        fields["image"][i, sl], fields["t"][i, sl] = image, tt.ravel()
        fields["row"][i, sl], fields["col"][i, sl] = rr.ravel(), cc.ravel()
        fields["grid_h"][i, sl], fields["grid_w"][i, sl] = h, w
        valid[i, sl] = True
        start += n
    return cls(valid=valid, **fields)

  @classmethod
  def single_grid(cls, batch: int, grid_h: int, grid_w: int, images_per_sample: int = 1) -> VisualLayout:
    """Every sample holds `images_per_sample` images of one fixed grid (LLaVA-1.5's case)."""
    n = images_per_sample * grid_h * grid_w
    return cls.from_grids([[(1, grid_h, grid_w)] * images_per_sample] * batch, n)


@flax.struct.dataclass
class LayerTrace:
  """What the layer just before a prune point computed, for scorers that read attention (FastV)."""

  queries: jax.Array  # [B, L, H, Dh] post-RoPE (XLA keeps only the rows a scorer reads)
  keys: jax.Array  # [B, L, G, Dh] post-RoPE


PrunePoint = Callable[[Tokens, "LayerTrace | None"], Tokens]


@flax.struct.dataclass
class KVCache:
  """Per-layer K/V; layers of one group (between prune points) share a length and a slot mask."""

  keys: tuple[jax.Array, ...]  # per layer [B, S_g, G, Dh]
  values: tuple[jax.Array, ...]  # per layer [B, S_g, G, Dh]
  slot_valid: tuple[jax.Array, ...]  # per group [B, S_g] bool
  # per group [B] int32, RoPE position of the next token (on every rope axis: generated text is 1-D). Groups
  # differ when a stage renumbers positions: layers before it saw the original ids, layers after it the new ones.
  next_position: tuple[jax.Array, ...]
  step: jax.Array  # [] int32, decode steps taken so far
  group_of_layer: tuple[int, ...] = flax.struct.field(pytree_node=False)
  prefill_lengths: tuple[int, ...] = flax.struct.field(pytree_node=False)  # per group

  @property
  def nbytes(self) -> int:
    return sum(a.size * a.dtype.itemsize for a in self.keys + self.values)


def text_positions(valid: jax.Array) -> jax.Array:
  """[B, L] -> [B, L, 1]: left-padded batches count real tokens from 0, as HF's generate does."""
  return jnp.maximum(jnp.cumsum(valid, axis=1) - 1, 0).astype(jnp.int32)[..., None]


def make_tokens(hidden: jax.Array, valid: jax.Array, image: jax.Array, query: jax.Array | None = None, *,
                positions: jax.Array | None = None, image_id: jax.Array | None = None) -> Tokens:
  """Tokens for a left-padded batch. Defaults: 1-D positions counting valid tokens, one image per sample, and
  the query = every real text token."""
  if positions is None:
    positions = text_positions(valid)
  if query is None:
    query = valid & ~image
  # Real visual tokens take slots 0..n-1 in order; padded visual slots (image & ~valid) take n.. after them,
  # matching VisualLayout, wherever the host placed them in the row.
  real, padded = image & valid, image & ~valid
  n_real = jnp.sum(real, axis=1, keepdims=True)
  patch = jnp.where(real, jnp.cumsum(real, axis=1) - 1, jnp.where(padded, n_real + jnp.cumsum(padded, axis=1) - 1, -1))
  patch = patch.astype(jnp.int32)
  if image_id is None:
    image_id = jnp.where(image, 0, -1).astype(jnp.int32)
  return Tokens(hidden=hidden, positions=positions.astype(jnp.int32), valid=valid, image=image,
                query=query & valid & ~image, patch=patch, image_id=image_id)


@flax.struct.dataclass
class ModelInputs:
  """One padded batch, as every family's `input_tokens` takes it (host NumPy or device arrays).

  `pixels` is family-specific (LLaVA: [I, C, H, W] for the I images of the batch in order; Qwen2.5-VL: flattened
  patches and their metadata); None for a text-only batch. `positions` None means 1-D ids counting valid tokens.
  """

  ids: jax.Array  # [B, L] int32, left-padded
  valid: jax.Array  # [B, L] bool
  query: jax.Array | None = None  # [B, L] bool question tokens; None: every real text token
  positions: jax.Array | None = None  # [B, L, R] int32
  pixels: object = None  # family-specific pytree of arrays
  layout: VisualLayout | None = None  # visual slots, [B, max_visual]
  # [B, max_visual] float32 ground-truth relevance of each visual slot (1 = covers a referenced object), when the
  # task has it; read only by the `oracle` / `anti-oracle` bounds
  relevance: jax.Array | None = None
  # [B] uint32 a stable key per item (the eval hashes item ids: `jaxprune.inputs.item_keys`) that seeded methods
  # fold into their draw, so each item gets its own draw whatever batch it is in; None: a hash of the question
  # (`prompt_keys`), or one draw for the whole batch without a query mask
  item_key: jax.Array | None = None

  @property
  def size(self) -> int:
    return self.ids.shape[0]


@flax.struct.dataclass
class VisionSignals:
  """What the vision side produced for one batch: the LLM's visual tokens per slot, and the signals that
  vision-side methods read. Absent signals are None (a method that needs one is refused before compiling)."""

  features: jax.Array  # [B, N, D] visual tokens as the LLM receives them, per slot of `layout`
  layout: VisualLayout
  # [B, N] float32 vision-side importance of each slot: [CLS]->patch attention summed over heads (CLIP), or the
  # attention each token receives in the tower's last layer (towers without [CLS], e.g. Qwen2.5-VL)
  importance: jax.Array | None = None
  keys: jax.Array | None = None  # [B, N, Dk] that layer's attention keys averaged over heads (VisionZip)
  tower_states: jax.Array | None = None  # [B, N, Dv] tower states behind each slot (before the projector)
  relevance: jax.Array | None = None  # [B, N] the task's ground truth per slot (ModelInputs.relevance)
  item_key: jax.Array | None = None  # [B] uint32 per-item key for seeded draws (set by `generate.decoder_inputs`)


def prompt_keys(ids: jax.Array, question: jax.Array) -> jax.Array:
  """[B] uint32 a hash of each prompt's question token ids (`ModelInputs.query`; padding and the position of the
  question do not change it, and generated tokens are not part of it): the item key of a batch whose items
  carry no id."""
  rank = (jnp.cumsum(question, axis=1) - 1).astype(jnp.uint32)  # position within the question
  mixed = (ids.astype(jnp.uint32) + jnp.uint32(1)) * (rank * jnp.uint32(2654435761) + jnp.uint32(1))
  return jnp.sum(jnp.where(question, mixed ^ (mixed >> 15), jnp.uint32(0)), axis=1, dtype=jnp.uint32)
