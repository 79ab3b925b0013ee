"""Plan -> prune points for the decoder: score visual tokens, keep the top k (or merge), gather.

`Pruner` is a frozen dataclass, so it hashes by its plan and serves as a `jit` static argument: one compile
per (length bucket, plan). It is the `prune_points_fn` that `jaxprune.generate` passes to the model.

Scores are always over the image tokens currently in the sequence ([B, n] for n = tokens present).
Vision-side and spatial scores are tables over the image's visual tokens, read through each token's `patch`
id, so they stay aligned however many stages ran before. Tokens made by a merge carry patch -1 and score
lowest in such tables.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from jaxprune.models.config import LlavaConfig
from jaxprune.models.llama import LayerTrace, LlamaModel, Tokens
from jaxprune.models.llava import VisionOutputs
from jaxprune.prune import scorers
from jaxprune.prune.plan import METHODS, PrunePlan, Stage
from jaxprune.prune.select import (contiguous_positions, keep_image_tokens, replace_image_tokens, split_positions,
                                   take_rows)

VISIONZIP_CONTEXTUAL_SHARE = 10 / 64  # VisionZip's LLaVA-1.5 split: 54 dominant + 10 contextual of 64


@dataclasses.dataclass(frozen=True)
class Pruner:
  plan: PrunePlan  # validated (ratios resolved)
  config: LlavaConfig

  @classmethod
  def build(cls, plan: PrunePlan | str, config: LlavaConfig) -> "Pruner":
    plan = PrunePlan.parse(plan) if isinstance(plan, str) else plan
    return cls(plan.validate(config), config)

  @property
  def grid(self) -> tuple[int, int]:
    side = self.config.vision.image_size // self.config.vision.patch_size
    return side, side

  def __call__(self, model, tokens: Tokens, vision: VisionOutputs | None) -> dict:
    """-> {layer: prune point}. A text-only batch (no pixels) has nothing to prune."""
    if vision is None:
      return {}
    points, present = {}, self.config.num_image_tokens
    for stage in self.plan.stages:
      if stage.keep >= present:
        continue  # identity: no gather at all, so logits stay bit-identical
      points[stage.layer] = functools.partial(self._prune, stage, present, model.language_model, vision)
      present = stage.keep
    return points

  def _prune(self, stage: Stage, present: int, lm: LlamaModel, vision: VisionOutputs, tokens: Tokens,
             trace: LayerTrace | None) -> Tokens:
    image_idx, text_idx = split_positions(tokens.image, present)  # [B, n], [B, L - n]
    if METHODS[stage.method].merge:
      hidden, patch = self._merge(stage, tokens, image_idx, vision)
      out = replace_image_tokens(tokens, image_idx, text_idx, hidden, patch)
    else:
      scores = self.scores(stage, tokens, image_idx, text_idx, lm, vision, trace)  # [B, n]
      out = keep_image_tokens(tokens, image_idx, text_idx, scorers.top_k_indices(scores, stage.keep))
    return contiguous_positions(out) if stage.reindex else out

  def _patch_table(self, table: jax.Array, tokens: Tokens, image_idx: jax.Array) -> jax.Array:
    """table [B or 1, Nv] over the image's visual tokens -> [B, n] for the tokens present."""
    patch = take_rows(tokens.patch, image_idx)
    table = jnp.broadcast_to(table, (patch.shape[0], table.shape[1]))
    return jnp.where(patch >= 0, jnp.take_along_axis(table, jnp.maximum(patch, 0), axis=1), -jnp.inf)

  def _cls_scores(self, vision: VisionOutputs) -> jax.Array:
    if vision.cls_attention is None:
      raise ValueError("clsattn/visionzip need an encoder layer's attention; vision_feature_layer selects none")
    scores = scorers.clsattn(vision.cls_attention)  # [B, Np]
    if self.config.vision_feature_select_strategy == "full":  # [CLS] is a visual token too: always keep it
      scores = jnp.concatenate([jnp.full_like(scores[:, :1], jnp.inf), scores], axis=1)
    return scores

  def scores(self, stage, tokens, image_idx, text_idx, lm, vision, trace) -> jax.Array:
    method, keep = stage.method, stage.keep
    vis = take_rows(tokens.hidden, image_idx)  # [B, n, D] states entering layer K
    if method in ("latesim", "embedsim"):
      norm = lm.layers[stage.layer].input_norm.weight[...] if stage.option("norm") == "rms" else None
      query = tokens.query if stage.option("query") == "question" else tokens.valid & ~tokens.image
      return scorers.latesim(vis, tokens.hidden, query, norm_weight=norm, eps=lm.config.rms_norm_eps,
                             aggregate=stage.option("aggregate"))
    if method == "fastv":
      length = tokens.length
      if stage.option("query") == "last":  # left padding: the last position is every sample's last token
        rows = jnp.full((image_idx.shape[0], 1), length - 1, jnp.int32)
      else:
        rows = text_idx
      q = take_rows(trace.queries, rows)  # [B, Q, H, Dh] only these rows: no L x L matrix
      q_mask = take_rows(tokens.valid if stage.option("query") == "last" else tokens.query, rows)
      return scorers.fastv(q, rows, q_mask, trace.keys, tokens.valid, image_idx)
    if method == "clsattn":
      return self._patch_table(self._cls_scores(vision), tokens, image_idx)
    if method == "divprune":
      return scorers.divprune_scores(vis, keep)
    if method == "random":
      return self._patch_table(scorers.random_scores(stage.option("seed"), 1, self.config.num_image_tokens),
                               tokens, image_idx)
    if method == "uniform":
      return self._patch_table(scorers.uniform_scores(1, *self.grid, keep), tokens, image_idx)
    raise AssertionError(method)  # plan validation rejects unknown methods

  def _merge(self, stage: Stage, tokens: Tokens, image_idx: jax.Array, vision: VisionOutputs):
    """Merge methods run at layer 0 on the full image: -> (new tokens [B, k, D], their patch ids [B, k])."""
    keep, b = stage.keep, image_idx.shape[0]
    vis = take_rows(tokens.hidden, image_idx)  # [B, Nv, D] projector outputs
    if stage.method == "pool":
      pooled = scorers.pool(vis, *self.grid, keep)  # [B, k, D]
      kh, kw = scorers.pool_grid(*self.grid, keep)
      gh, gw = self.grid
      centres = [((2 * i + 1) * gh // (2 * kh)) * gw + (2 * j + 1) * gw // (2 * kw) for i in range(kh)
                 for j in range(kw)]
      return pooled, jnp.broadcast_to(jnp.asarray(centres, jnp.int32), (b, keep))
    contextual = stage.option("contextual") or max(1, round(keep * VISIONZIP_CONTEXTUAL_SHARE))
    merged, dominant = scorers.visionzip(vis, self._cls_scores(vision), vision.keys,
                                         n_dominant=keep - contextual, n_contextual=contextual)
    patch = jnp.concatenate([dominant, jnp.full((b, contextual), -1, jnp.int32)], axis=1)
    return merged, patch
