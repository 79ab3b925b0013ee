"""The Qwen2.5-VL vision tower in Flax NNX, for every image of a batch at once (dynamic resolution under jit).

All images' patches are concatenated in processor order (within an image: 2x2 merge blocks in raster order, the
four patches of a block consecutive) and padded to a static patch bucket P. Per-patch metadata made on the host
(`VisionPatches`) says which image and which attention window each patch is in, and its (row, col). Attention is
one masked [P, P] product: window blocks attend within (image, window), the `fullatt_block_indexes` blocks within
the image; padding patches form their own group, so they never touch real ones and never produce NaN. transformers
instead permutes patches into window order and loops over windows; attention is permutation-invariant, so both
agree up to float rounding.

Shapes: P padded patches, M = P/4 merged tokens, Dp flattened patch (C*T*p*p), Dv tower hidden, H heads,
Dh head dim, Do merger output (the LLM's hidden size).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.models.activations import activation
from jaxprune.models.attention import attend
from jaxprune.models.layers import linear
from jaxprune.models.llama import RMSNorm, apply_rope
from jaxprune.models.qwen2_5_vl.config import Qwen25VisionConfig

_EPS = 1e-6  # transformers hard-codes the tower's RMSNorm eps


@flax.struct.dataclass
class VisionPatches:
  """A batch's images as the tower takes them (the `pixels` of a Qwen2.5-VL `ModelInputs`); made by `host.py`."""

  patches: jax.Array  # [P, Dp] flattened patches of every image, in order; zeros at padding
  row: jax.Array  # [P] int32 patch row in its image's patch grid
  col: jax.Array  # [P] int32 patch column
  image: jax.Array  # [P] int32 batch-wide image index; -1 at padding
  window: jax.Array  # [P] int32 batch-wide attention-window index; -1 at padding
  slot_token: jax.Array  # [B, N] int32 merged-token index (into M) behind each visual slot; 0 at padding slots


@flax.struct.dataclass
class TowerOutputs:
  """Per merged token (M = P/4, the batch's tokens in order; padding tokens at the end)."""

  features: jax.Array  # [M, Do] merger outputs: the LLM's visual tokens
  importance: jax.Array  # [M] float32 attention received in the last block (see `VisionTower.__call__`)
  keys: jax.Array  # [M, Dh] last block's pre-RoPE keys, mean over heads and over the merged patches


def rope_2d(row: jax.Array, col: jax.Array, cfg: Qwen25VisionConfig) -> tuple[jax.Array, jax.Array]:
  """[P] row/col -> cos, sin [1, P, Dh] float32: the first Dh/4 frequencies turn with the row, the next Dh/4
  with the column, halves duplicated (rotate-half layout), as transformers' axial vision RoPE."""
  quarter = cfg.head_dim // 4
  inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(quarter, dtype=jnp.float32) * 2 / (cfg.head_dim // 2)))  # [Dh/4]
  angles = jnp.concatenate([row[:, None] * inv_freq, col[:, None] * inv_freq], axis=-1)  # [P, Dh/2]
  angles = jnp.concatenate([angles, angles], axis=-1)[None].astype(jnp.float32)  # [1, P, Dh]
  return jnp.cos(angles), jnp.sin(angles)


class PatchEmbed(nnx.Module):
  """The Conv3d with stride = kernel over (T, p, p) is one matmul over flattened patches."""

  def __init__(self, cfg: Qwen25VisionConfig, *, dtype, rngs: nnx.Rngs):
    self.proj = linear(cfg.patch_dim, cfg.hidden_size, dtype, rngs, bias=False)

  def __call__(self, patches: jax.Array) -> jax.Array:
    return self.proj(patches.astype(self.proj.kernel.dtype))  # [P, Dv]


class VisionAttention(nnx.Module):

  def __init__(self, cfg: Qwen25VisionConfig, *, dtype, rngs: nnx.Rngs):
    self.qkv = linear(cfg.hidden_size, 3 * cfg.hidden_size, dtype, rngs, bias=True)
    self.proj = linear(cfg.hidden_size, cfg.hidden_size, dtype, rngs, bias=True)
    self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim

  def project(self, x: jax.Array, cos: jax.Array, sin: jax.Array):
    """x [P, Dv] -> post-RoPE q, k and v [1, P, H, Dh], and pre-RoPE k [P, H, Dh]."""
    p = x.shape[0]
    q, k, v = jnp.moveaxis(self.qkv(x).reshape(p, 3, self.num_heads, self.head_dim), 1, 0)  # each [P, H, Dh]
    # RoPE in float32, as transformers does, then back to the model dtype
    q_rot = apply_rope(q[None].astype(jnp.float32), cos, sin).astype(x.dtype)
    k_rot = apply_rope(k[None].astype(jnp.float32), cos, sin).astype(x.dtype)
    return q_rot, k_rot, v[None], k

  def __call__(self, x, cos, sin, mask):
    """x [P, Dv], mask [1, 1, P, P] -> [P, Dv]."""
    q, k, v, _ = self.project(x, cos, sin)
    return self.proj(attend(q, k, v, mask)[0].reshape(x.shape[0], -1))

  def with_received_attention(self, x, cos, sin, mask, groups, image):
    """Like __call__, plus what the last block's attention gives pruning -> ([P, Dv], received [P] float32,
    pre-RoPE keys [P, H, Dh]). `groups` [P] are the ids `mask` compares (image or window), `image` [P]."""
    q, k, v, k_raw = self.project(x, cos, sin)
    out = self.proj(attend(q, k, v, mask)[0].reshape(x.shape[0], -1))
    return out, received_attention(q[0], k[0], groups, image), k_raw


def received_attention(q: jax.Array, k: jax.Array, groups: jax.Array, image: jax.Array,
                       block: int = 256) -> jax.Array:
  """received[j] = sum_h mean_{i in image(j)} A_h[i, j] for post-RoPE q, k [P, H, Dh]; A is softmax over the keys
  of i's group. Query rows go in blocks, so memory is [H, block, P], never [H, P, P] (a 16k-patch image)."""
  p, _, dh = q.shape
  block = block if p % block == 0 else p
  scale = 1.0 / jnp.sqrt(jnp.float32(dh))

  def rows(start):
    q_rows = jax.lax.dynamic_slice_in_dim(q, start, block)  # [C, H, Dh]
    g_rows = jax.lax.dynamic_slice_in_dim(groups, start, block)  # [C]
    logits = jnp.einsum("chd,khd->hck", q_rows, k, preferred_element_type=jnp.float32) * scale  # [H, C, P]
    allowed = (g_rows[:, None] == groups[None, :])[None]  # [1, C, P]; every row allows itself
    return jnp.einsum("hck->k", jax.nn.softmax(jnp.where(allowed, logits, -jnp.inf), axis=-1))  # [P]

  received = jnp.sum(jax.lax.map(rows, jnp.arange(0, p, block)), axis=0)  # [P]
  slot = image + 1  # padding (-1) counts in segment 0
  per_image = jax.ops.segment_sum(jnp.ones_like(received), slot, num_segments=p + 1)[slot]  # [P] queries per image
  return received / per_image


class VisionMLP(nnx.Module):

  def __init__(self, cfg: Qwen25VisionConfig, *, dtype, rngs: nnx.Rngs):
    d, f = cfg.hidden_size, cfg.intermediate_size
    self.gate_proj = linear(d, f, dtype, rngs, bias=True)
    self.up_proj = linear(d, f, dtype, rngs, bias=True)
    self.down_proj = linear(f, d, dtype, rngs, bias=True)
    self.act = activation(cfg.hidden_act, "vision_config.hidden_act")

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class VisionBlock(nnx.Module):

  def __init__(self, cfg: Qwen25VisionConfig, *, dtype, rngs: nnx.Rngs):
    self.norm1 = RMSNorm(cfg.hidden_size, _EPS, dtype=dtype)
    self.attn = VisionAttention(cfg, dtype=dtype, rngs=rngs)
    self.norm2 = RMSNorm(cfg.hidden_size, _EPS, dtype=dtype)
    self.mlp = VisionMLP(cfg, dtype=dtype, rngs=rngs)

  def __call__(self, x, cos, sin, mask):
    x = x + self.attn(self.norm1(x), cos, sin, mask)
    return x + self.mlp(self.norm2(x))

  def with_received_attention(self, x, cos, sin, mask, groups, image):
    attended, received, keys = self.attn.with_received_attention(self.norm1(x), cos, sin, mask, groups, image)
    x = x + attended
    return x + self.mlp(self.norm2(x)), received, keys


class PatchMerger(nnx.Module):
  """RMSNorm, then each 2x2 block of patches (consecutive in processor order) -> one token by a GELU MLP."""

  def __init__(self, cfg: Qwen25VisionConfig, *, dtype, rngs: nnx.Rngs):
    wide = cfg.hidden_size * cfg.merge_unit
    self.ln_q = RMSNorm(cfg.hidden_size, _EPS, dtype=dtype)
    self.mlp_0 = linear(wide, wide, dtype, rngs, bias=True)
    self.mlp_2 = linear(wide, cfg.out_hidden_size, dtype, rngs, bias=True)
    self.wide = wide

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.ln_q(x).reshape(-1, self.wide)  # [M, 4 Dv]
    return self.mlp_2(jax.nn.gelu(self.mlp_0(x), approximate=False))  # [M, Do]


class VisionTower(nnx.Module):

  def __init__(self, cfg: Qwen25VisionConfig, *, dtype=jnp.bfloat16, rngs: nnx.Rngs):
    bad = [i for i in cfg.fullatt_block_indexes if not 0 <= i < cfg.depth]
    if bad:
      raise ValueError(f"config.json: vision_config.fullatt_block_indexes names block {bad[0]}, but depth={cfg.depth}")
    self.config = cfg
    self.patch_embed = PatchEmbed(cfg, dtype=dtype, rngs=rngs)
    self.blocks = nnx.List([VisionBlock(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.depth)])
    self.merger = PatchMerger(cfg, dtype=dtype, rngs=rngs)

  def __call__(self, inputs: VisionPatches) -> TowerOutputs:
    """Patches of every image -> merged tokens, plus the signals pruning reads.

    Importance signal. The tower has no [CLS] token, so FasterVLM's [CLS]->patch attention does not exist. We use
    what VisPruner-style methods use for such towers: the attention each patch *receives* in the last block, summed
    over heads and averaged over the query patches of its image, computed from that block's own q and k (its
    probabilities, recomputed in query blocks so no [H, P, P] tensor is kept). A merged token's importance is the
    sum over its 2x2 patches, so it is a share of attention mass (an image's tokens sum to the head count). The last
    block is a full-attention block in released checkpoints (31 in fullatt_block_indexes), so every patch competes
    with its whole image; were it a window block, the score would be relative within each window.

    Keys for similarity (VisionZip-style merging) are that block's keys *before* RoPE: RoPE rotates a key by its
    position, which would make token-to-token similarity depend on where the tokens sit rather than what they show.
    """
    cfg = self.config
    cos, sin = rope_2d(inputs.row, inputs.col, cfg)  # [1, P, Dh]
    same_image = inputs.image[:, None] == inputs.image[None, :]  # [P, P]; padding (-1) forms its own group
    # a window id is unique across the batch, so equal ids also imply the same image
    same_window = inputs.window[:, None] == inputs.window[None, :]  # [P, P]
    full_mask, window_mask = same_image[None, None], same_window[None, None]  # [1, 1, P, P]
    x = self.patch_embed(inputs.patches)  # [P, Dv]
    last = cfg.depth - 1
    for i, block in enumerate(self.blocks):
      mask = full_mask if i in cfg.fullatt_block_indexes else window_mask
      if i < last:
        x = block(x, cos, sin, mask)
      else:
        groups = inputs.image if i in cfg.fullatt_block_indexes else inputs.window
        x, received, keys = block.with_received_attention(x, cos, sin, mask, groups, inputs.image)
    unit = cfg.merge_unit
    importance = received.reshape(-1, unit).sum(-1)  # [M]
    keys = keys.astype(jnp.float32).mean(axis=1).reshape(-1, unit, cfg.head_dim).mean(axis=1)  # [M, Dh]
    return TowerOutputs(features=self.merger(x), importance=importance, keys=keys)
