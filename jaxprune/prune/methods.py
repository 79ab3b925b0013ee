"""The pruning methods, one object each: what it needs, where its signal exists, and how it scores or merges.

Every method answers "which visual tokens stay" from one signal. A method is a small frozen object:
- `layers`: where the signal exists — "any" K, "zero" (the LLM input only) or "late" (K >= 1: it reads layer
  K-1's attention);
- `needs`: the signals it reads — the vision side's (`models/base.py`: "importance", "keys", "grid") or the
  task's ("relevance": ground truth per slot); a model or task that lacks one is refused before anything
  compiles, naming the signal;
- `options`: (name, allowed values; the first is the default), integer options list only their default;
- `score(ctx) -> [B, n]` (higher = keep) or, for merges, `merge(ctx) -> (tokens [B, k, D], slots [B, k])` placed
  at the first k visual positions, or `(tokens, slots, at [B, k])` placed at those visual positions (ascending).

`METHODS` is the registry that the plan grammar, the pipeline, the eval grid and the cost model all read.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxprune.core.tokens import LayerTrace, Tokens, VisionSignals
from jaxprune.prune import scorers
from jaxprune.prune.select import take_rows

VISIONZIP_CONTEXTUAL_SHARE = 10 / 64  # VisionZip's LLaVA-1.5 split: 54 dominant + 10 contextual of 64


class MethodError(ValueError):
  """A method that cannot run on this model or plan; one line naming the stage and the reason."""


@dataclasses.dataclass
class Context:
  """What a prune point hands a method: the sequence entering layer K and everything read from it."""

  stage: Any  # plan.Stage (keep resolved to a count)
  tokens: Tokens
  image_idx: jax.Array  # [B, n] positions of the visual tokens present, ascending
  text_idx: jax.Array  # [B, L - n] positions of everything else
  decoder: Any  # the decoder (for the normalisation layer K applies)
  vision: VisionSignals
  trace: LayerTrace | None  # layer K-1's post-RoPE q and k (None at K = 0)
  config: Any  # the family config (models/base.py: VLMConfig)

  @property
  def visual_hidden(self) -> jax.Array:
    """[B, n, D] states entering layer K at the visual tokens."""
    return take_rows(self.tokens.hidden, self.image_idx)

  @property
  def slots(self) -> jax.Array:
    """[B, n] the visual slot of each visual token present (-1 for merged tokens)."""
    return take_rows(self.tokens.patch, self.image_idx)

  def slot_table(self, table: jax.Array) -> jax.Array:
    """A table [B or 1, N] over the layout's slots -> [B, n] for the tokens present; merged tokens -inf."""
    slots = self.slots
    table = jnp.broadcast_to(table, (slots.shape[0], table.shape[1]))
    return jnp.where(slots >= 0, jnp.take_along_axis(table, jnp.maximum(slots, 0), axis=1), -jnp.inf)


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  layers: str = "any"  # "any", "zero" or "late"
  needs: frozenset[str] = frozenset()
  options: tuple[tuple[str, tuple], ...] = ()
  merge: bool = False
  fixed_grid: bool = False  # needs one fixed token grid per sample (a static output grid)
  doc: str = ""

  @property
  def seeded(self) -> bool:
    """Whether a `seed` option draws its scores (the eval's `--seed` sets it)."""
    return any(name == "seed" for name, _ in self.options)

  def unavailable_at(self, layer: int) -> str | None:
    """Why this method's signal does not exist entering decoder layer `layer`, or None where it does."""
    if self.layers == "zero" and layer != 0:
      return f"{self.name} works on the LLM input, so it exists only at layer 0"
    if self.layers == "late" and layer == 0:
      return f"{self.name} reads layer K-1's attention, which does not exist at layer 0"
    return None

  def reads_question(self, stage) -> bool:
    """Whether the stage scores against the question tokens alone (an empty question leaves it no query)."""
    return False

  def check(self, stage, cfg) -> None:
    """Method-specific validation beyond layers/signals/options; raise MethodError."""

  def score(self, ctx: Context) -> jax.Array:
    raise NotImplementedError

  def merge_tokens(self, ctx: Context) -> tuple[jax.Array, jax.Array]:
    raise NotImplementedError


_TEXT_SIM = (("norm", ("rms", "raw")), ("aggregate", ("mean", "max")), ("query", ("question", "text")))


@dataclasses.dataclass(frozen=True)
class TextSimilarity(Method):
  """latesim (ours) / embedsim: cosine similarity of visual and question hidden states entering layer K."""

  options: tuple = _TEXT_SIM

  def reads_question(self, stage) -> bool:
    return stage.option("query") == "question"  # an empty question: all-zero scores, the first tokens kept

  def score(self, ctx: Context) -> jax.Array:
    stage, tokens = ctx.stage, ctx.tokens
    weight, eps = ctx.decoder.input_norm_params(stage.layer) if stage.option("norm") == "rms" else (None, 1e-6)
    query = tokens.query if stage.option("query") == "question" else tokens.valid & ~tokens.image
    return scorers.latesim(ctx.visual_hidden, tokens.hidden, query, norm_weight=weight, eps=eps,
                           aggregate=stage.option("aggregate"))


@dataclasses.dataclass(frozen=True)
class FastV(Method):
  """Attention the last token (or the question) pays each visual token in layer K-1, from q and k alone."""

  layers: str = "late"
  options: tuple = (("query", ("last", "question")),)

  def reads_question(self, stage) -> bool:
    return stage.option("query") == "question"

  def score(self, ctx: Context) -> jax.Array:
    tokens, trace, last = ctx.tokens, ctx.trace, ctx.stage.option("query") == "last"
    if last:  # left padding: the last position is every sample's last token
      rows = jnp.full((ctx.image_idx.shape[0], 1), tokens.length - 1, jnp.int32)
    else:
      rows = ctx.text_idx
    q = take_rows(trace.queries, rows)  # [B, Q, H, Dh] only these rows: no L x L matrix
    q_mask = take_rows(tokens.valid if last else tokens.query, rows)
    window = ctx.decoder.attention_window(ctx.stage.layer - 1)  # Gemma 3's sliding layers see only a window
    return scorers.fastv(q, rows, q_mask, trace.keys, tokens.valid, ctx.image_idx, window=window)


@dataclasses.dataclass(frozen=True)
class VisionImportance(Method):
  """clsattn: the vision tower's own importance of each token ([CLS] attention, or attention received)."""

  needs: frozenset = frozenset({"importance"})

  def score(self, ctx: Context) -> jax.Array:
    return ctx.slot_table(ctx.vision.importance)


@dataclasses.dataclass(frozen=True)
class VisionZip(Method):
  """Dominant tokens by vision importance + contextual tokens merged by key similarity (a merge)."""

  layers: str = "zero"
  needs: frozenset = frozenset({"importance", "keys"})
  options: tuple = (("contextual", (None,)),)
  merge: bool = True

  def check(self, stage, cfg) -> None:
    contextual = stage.option("contextual")
    available = cfg.visual_tokens_per_image
    if contextual is not None and not 1 <= contextual < min(stage.keep, available or stage.keep + 1):
      raise MethodError(f"stage {stage}: contextual must lie in [1, keep)")

  def merge_tokens(self, ctx: Context) -> tuple[jax.Array, ...]:
    keep, b = ctx.stage.keep, ctx.image_idx.shape[0]
    contextual = ctx.stage.option("contextual") or max(1, round(keep * VISIONZIP_CONTEXTUAL_SHARE))
    if ctx.config.visual_tokens_per_image is None:
      # padded visual slots (dynamic resolution): sequence order differs from slot order, so read the slot
      # tables per token, and keep each output at one of the image's tokens (dominant: its own; contextual: its
      # target's), so that M-RoPE positions stay those of real cells
      real = take_rows(ctx.tokens.valid, ctx.image_idx)  # [B, n]
      keys = take_rows(ctx.vision.keys, jnp.maximum(ctx.slots, 0))  # [B, n, Dk]
      merged, at, is_context = scorers.visionzip_padded(
          ctx.visual_hidden, ctx.slot_table(ctx.vision.importance), keys, real, n_dominant=keep - contextual,
          n_contextual=contextual)
      return merged, jnp.where(is_context, -1, jnp.take_along_axis(ctx.slots, at, axis=1)), at
    importance = jnp.where(ctx.vision.layout.valid, ctx.vision.importance, -jnp.inf)  # padded slots never dominate
    merged, dominant = scorers.visionzip(ctx.visual_hidden, importance, ctx.vision.keys,
                                         n_dominant=keep - contextual, n_contextual=contextual)
    return merged, jnp.concatenate([dominant, jnp.full((b, contextual), -1, jnp.int32)], axis=1)


@dataclasses.dataclass(frozen=True)
class DivPrune(Method):
  """Greedy max-min diversity of the projector outputs."""

  layers: str = "zero"

  def score(self, ctx: Context) -> jax.Array:
    real = take_rows(ctx.tokens.valid, ctx.image_idx)  # padded visual slots are not candidates
    return scorers.divprune_scores(ctx.visual_hidden, ctx.stage.keep, real)


@dataclasses.dataclass(frozen=True)
class Random(Method):
  """Seeded uniform scores per slot, a fresh draw per item (keyed by the item, so batch = alone = resume)."""

  options: tuple = (("seed", (0,)),)

  def score(self, ctx: Context) -> jax.Array:
    return ctx.slot_table(scorers.random_scores(ctx.stage.option("seed"), ctx.vision.item_key,
                                                ctx.vision.layout.max_visual))


@dataclasses.dataclass(frozen=True)
class Uniform(Method):
  """Evenly strided cells of each image's own token grid (read from the layout, any grid shape)."""

  needs: frozenset = frozenset({"grid"})

  def score(self, ctx: Context) -> jax.Array:
    per_image, layout = ctx.config.visual_tokens_per_image, ctx.vision.layout
    if per_image is not None and layout.max_visual % per_image == 0:  # a fixed grid: the static host table
      grid = ctx.config.grid  # only fixed-grid families define it (dynamic ones have no single grid)
      images = layout.max_visual // per_image
      table = scorers.uniform_scores(1, *grid, -(-ctx.stage.keep // images))  # [1, Nv]
      return ctx.slot_table(jnp.tile(table, (1, images)))
    return ctx.slot_table(scorers.uniform_layout_scores(layout, ctx.stage.keep))


@dataclasses.dataclass(frozen=True)
class Pool(Method):
  """Average-pool the token grid to about `keep` cells (a merge; one fixed grid per sample)."""

  layers: str = "zero"
  needs: frozenset = frozenset({"grid"})
  merge: bool = True
  fixed_grid: bool = True

  def check(self, stage, cfg) -> None:
    grid = cfg.grid
    if stage.keep < cfg.visual_tokens_per_image:
      kh, kw = scorers.pool_grid(*grid, stage.keep)
      if kh * kw != stage.keep:
        raise MethodError(f"stage {stage}: pool cannot tile the {grid[0]}x{grid[1]} grid into {stage.keep} tokens "
                          f"(nearest: {kh * kw})")

  def merge_tokens(self, ctx: Context) -> tuple[jax.Array, jax.Array]:
    keep, b = ctx.stage.keep, ctx.image_idx.shape[0]
    gh, gw = ctx.config.grid  # one fixed grid per sample (checked by the plan), so static
    pooled = scorers.pool(ctx.visual_hidden, gh, gw, keep)  # [B, k, D]
    kh, kw = scorers.pool_grid(gh, gw, keep)
    centres = [((2 * i + 1) * gh // (2 * kh)) * gw + (2 * j + 1) * gw // (2 * kw) for i in range(kh)
               for j in range(kw)]
    return pooled, jnp.broadcast_to(jnp.asarray(centres, jnp.int32), (b, keep))


@dataclasses.dataclass(frozen=True)
class Oracle(Method):
  """The bounds every real method sits between, for tasks with ground-truth relevance per slot: `oracle` keeps
  the referenced objects' cells first (then the per-item random ones up to the budget), `anti-oracle` drops them first."""

  needs: frozenset = frozenset({"relevance"})
  options: tuple = (("seed", (0,)),)
  sign: float = 1.0  # +1 keeps relevant cells first, -1 drops them first

  def score(self, ctx: Context) -> jax.Array:
    # [B, N] in [0, 1): ties broken by the same per-item draw as `random` with this seed
    tie = scorers.random_scores(ctx.stage.option("seed"), ctx.vision.item_key, ctx.vision.layout.max_visual)
    relevant = (ctx.vision.relevance > 0).astype(jnp.float32)  # [B, N]
    return ctx.slot_table(self.sign * relevant + tie)


METHODS: dict[str, Method] = {m.name: m for m in (
    TextSimilarity("latesim", doc="cosine similarity of visual and question hidden states at layer K (ours)"),
    TextSimilarity("embedsim", layers="zero", doc="latesim on the LLM's input embeddings"),
    FastV("fastv", doc="text->image attention of the last token (or the question) at layer K-1"),
    VisionImportance("clsattn", doc="the vision tower's [CLS] attention / attention received (FasterVLM)"),
    VisionZip("visionzip", doc="dominant tokens by vision importance + merged contextual tokens"),
    DivPrune("divprune", doc="greedy max-min diversity of projector outputs"),
    Random("random", doc="seeded random scores"),
    Uniform("uniform", doc="evenly strided cells of each image's grid"),
    Pool("pool", doc="average pooling of the token grid"),
    Oracle("oracle", doc="ground-truth relevant cells first (an upper bound; tasks with relevance masks)"),
    Oracle("anti-oracle", sign=-1.0, doc="ground-truth relevant cells last (a lower bound)"),
)}
COMMON_OPTIONS = (("reindex", (None, True, False)),)
FREE_VALUES = {"contextual", "seed"}  # integer options: the tuple holds only the default
