"""Plan -> prune points for the decoder: score visual tokens, keep the top k (or merge), gather.

`Pruner` is a frozen dataclass, so it hashes by its plan and serves as a `jit` static argument: one compile
per (length bucket, plan). It is the `prune_points_fn` that `jaxprune.generate` passes to the model. It knows
no model family: methods come from `prune/methods.py`, model facts from the family config (`VLMConfig`).

Scores are always over the visual tokens currently in the sequence ([B, n] for n = tokens present, padded
visual slots included: they score -inf, and every real token outranks them whatever its score, so they are dropped
first and a keep >= a prompt's real count keeps all of its tokens). A stage with keep >= n is skipped (bit-identical
logits); one with keep between a prompt's real count and n drops only padded slots, and its logits equal the
unpruned ones to float rounding only (the shorter sequence sums in another order). Vision-side and spatial scores
are tables over the layout's slots, read through each token's `patch` slot, so they stay aligned however many
stages ran before. Tokens made by a merge carry slot -1 and score lowest in such tables.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax.numpy as jnp

from jaxprune.core.tokens import LayerTrace, Tokens, VisionSignals
from jaxprune.models.base import language_model
from jaxprune.prune.methods import METHODS, Context
from jaxprune.prune.plan import PrunePlan, Stage
from jaxprune.prune.select import (
  keep_image_tokens,
  renumber_positions,
  replace_image_tokens,
  split_positions,
  take_rows,
  top_k_real,
)


@dataclasses.dataclass(frozen=True)
class Pruner:
  plan: PrunePlan  # validated (ratios resolved)
  config: Any  # the family config (hashable)

  @classmethod
  def build(cls, plan: PrunePlan | str, config: Any, task_signals: frozenset[str] = frozenset()) -> Pruner:
    plan = PrunePlan.parse(plan) if isinstance(plan, str) else plan
    return cls(plan.validate(config, task_signals), config)

  def __call__(self, model, tokens: Tokens, vision: VisionSignals | None) -> dict:
    """-> {layer: prune point}. A text-only batch (no pixels) has nothing to prune."""
    if vision is None:
      return {}
    points, present = {}, vision.layout.max_visual
    for stage in self.plan.stages:
      if stage.keep >= present:
        continue  # identity: no gather at all, so logits stay bit-identical
      points[stage.layer] = functools.partial(self._prune, stage, present, language_model(model), vision)
      present = stage.keep
    return points

  def _prune(self, stage: Stage, present: int, decoder, vision: VisionSignals, tokens: Tokens,
             trace: LayerTrace | None) -> Tokens:
    image_idx, text_idx = split_positions(tokens.image, present)  # [B, n], [B, L - n]
    method = METHODS[stage.method]
    if method.merge:
      ctx = Context(stage, tokens, image_idx, text_idx, decoder, vision, trace, self.config)
      out = replace_image_tokens(tokens, image_idx, text_idx, *method.merge_tokens(ctx))
    else:
      scores = self.scores(stage, tokens, image_idx, text_idx, decoder, vision, trace)  # [B, n]
      real = take_rows(tokens.valid, image_idx)  # [B, n] False at padded visual slots
      out = keep_image_tokens(tokens, image_idx, text_idx, top_k_real(scores, real, stage.keep))
    return renumber_positions(out) if stage.reindex else out

  def scores(self, stage: Stage, tokens: Tokens, image_idx, text_idx, decoder, vision: VisionSignals,
             trace: LayerTrace | None):
    """[B, n] the stage's scores of the visual tokens at image_idx (padded visual slots -inf)."""
    ctx = Context(stage, tokens, image_idx, text_idx, decoder, vision, trace, self.config)
    real = jnp.take_along_axis(tokens.valid, image_idx, axis=1)  # padded visual slots are never kept
    return jnp.where(real, METHODS[stage.method].score(ctx), -jnp.inf)
