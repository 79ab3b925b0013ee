"""Batched greedy generation under one `jit`: prefill (with optional prune points) + a `while_loop` decode.

Prompts are left-padded to a length bucket, so every prompt length inside a bucket reuses one compiled
program; the decode loop stops early once every sample has emitted EOS and never syncs with the host.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.core import decoding
from jaxprune.core.tokens import KVCache, ModelInputs, PrunePoint, Tokens, make_tokens, prompt_keys
from jaxprune.inputs import Batch as Batch  # re-exported: generation takes what the host side pads
from jaxprune.inputs import bucket_length as bucket_length
from jaxprune.inputs import pad_batch as pad_batch
from jaxprune.models.base import language_model
from jaxprune.sharding import head_sizes, put_batch, shard_model_state

# (model, tokens, vision signals) -> {layer: prune point}; pruning plans compile into one of these.
PrunePointsFn = Callable[[nnx.Module, Tokens, Any], dict[int, PrunePoint]]


# `Generator.grid`: at most this many rows (plans x batch) in one stacked continuation (eval flag --fork-rows)
FORK_ROWS = 64


def input_tokens(model: nnx.Module, inputs: ModelInputs):
  """Decoder input Tokens (+ vision signals for a VLM) for any supported model."""
  if hasattr(model, "input_tokens"):
    return model.input_tokens(inputs)
  if inputs.pixels is not None:
    raise ValueError("this model is text-only; it cannot take pixel_values")
  hidden = model.embed(inputs.ids)
  return make_tokens(hidden, inputs.valid, jnp.zeros_like(inputs.valid), inputs.query,
                     positions=inputs.positions), None


def decoder_inputs(model: nnx.Module, inputs: ModelInputs | tuple):
  """-> (decoder input Tokens, VisionSignals with the task's relevance, or None). `inputs` may also be the tuple
  (ids, valid, pixels, query) of a one-image-per-sample batch."""
  if isinstance(inputs, tuple):
    ids, valid, pixels, query = inputs
    inputs = ModelInputs(ids=ids, valid=valid, query=query, pixels=pixels)
  tokens, vision = input_tokens(model, inputs)
  if vision is not None and inputs.relevance is not None:  # a task's ground truth, for the oracle bounds
    vision = vision.replace(relevance=jnp.asarray(inputs.relevance, jnp.float32))
  if vision is not None:  # what seeded methods fold into their per-item draw
    if inputs.item_key is not None:
      keys = inputs.item_key
    elif inputs.query is not None:
      keys = prompt_keys(inputs.ids, jnp.asarray(inputs.query) & jnp.asarray(inputs.valid))
    else:  # nothing stable to tell the prompts apart by (the text grows as it is generated): one shared draw
      keys = jnp.zeros((inputs.size,), jnp.uint32)
    vision = vision.replace(item_key=jnp.asarray(keys, jnp.uint32))
  return tokens, vision


def prefill(model: nnx.Module, inputs: ModelInputs | tuple, *, extra_slots: int,
            prune_points_fn: PrunePointsFn | None = None):
  """-> (last-position logits [B, V], KVCache, final Tokens, all final-normed hidden [B, L', D]).

  `inputs`: as `decoder_inputs` takes them."""
  tokens, vision = decoder_inputs(model, inputs)
  points = prune_points_fn(model, tokens, vision) if prune_points_fn else None
  decoder = language_model(model)
  h, cache, tokens = decoding.prefill(decoder, tokens, extra_slots=extra_slots, prune_points=points)
  return decoder.logits(h[:, -1]), cache, tokens, h


@flax.struct.dataclass
class DecodeState:
  """What the greedy `while_loop` carries from one step to the next."""

  step: jax.Array  # [] int32 the next output column
  tokens: jax.Array  # [B, T] int32 emitted tokens (pad after EOS)
  logits: jax.Array | None  # [B, T, V] float32 per-step logits (keep_logits), else None
  done: jax.Array  # [B] bool the sample has emitted EOS
  token: jax.Array  # [B] int32 the last emitted token (the next step's input)
  cache: KVCache


def greedy_decode(lm, first_logits: jax.Array, cache: KVCache, *, max_new_tokens: int,
                  eos_ids: tuple[int, ...], pad_id: int, keep_logits: bool):
  """Greedy loop from prefill logits [B, V] -> (tokens [B, T], per-step logits [B, T, V] or None, cache)."""
  b, vocab = first_logits.shape
  eos = jnp.asarray(eos_ids or (-1,), jnp.int32)

  def emit(state: DecodeState, logits: jax.Array) -> DecodeState:
    """Column `state.step` from this step's logits [B, V]; finished samples emit padding."""
    token = jnp.where(state.done, pad_id, jnp.argmax(logits, axis=-1).astype(jnp.int32))  # [B]
    all_logits = state.logits.at[:, state.step].set(logits) if keep_logits else None
    return state.replace(step=state.step + 1, tokens=state.tokens.at[:, state.step].set(token), logits=all_logits,
                         done=state.done | jnp.isin(token, eos), token=token)

  def cond(state: DecodeState):
    return (state.step < max_new_tokens) & ~jnp.all(state.done)

  def body(state: DecodeState) -> DecodeState:
    logits, cache = decoding.decode_step(lm, state.token, state.cache)
    return emit(state.replace(cache=cache), logits)

  start = DecodeState(step=jnp.asarray(0, jnp.int32), tokens=jnp.full((b, max_new_tokens), pad_id, jnp.int32),
                      logits=jnp.zeros((b, max_new_tokens, vocab), jnp.float32) if keep_logits else None,
                      done=jnp.zeros((b,), bool), token=jnp.zeros((b,), jnp.int32), cache=cache)
  final = jax.lax.while_loop(cond, body, emit(start, first_logits))
  return final.tokens, final.logits, final.cache


# The shared-prefix grid (`Generator.grid`)
#
# What is shared. The vision tower and embedding run once per batch; the unpruned decoder runs once up to each
# distinct first prune layer K (in increasing K, one layer per program), and every plan whose first prune point
# is at K forks its own continuation (its prune points at K and later, the remaining layers) from that state,
# then decodes. A multi-stage plan continues through its later stages in its own continuation: grids cross
# methods with layers and budgets, so two plans rarely share a first stage, and forking again would add a
# compiled program per shared stage (the dominant cost on CPU) for little reuse. Plans that prune nothing (the
# baseline, or keeps of at least the visual slots) fork from the state before layer 0.
#
# Stacking. Plans with a single prune point at K whose pruned tokens have the same shapes (a grid's methods at
# one layer and budget) continue as one program: pruned tokens stacked on the batch axis (plan-major), the
# prefix KV repeated per plan, up to `fork_rows` rows. On small batches a continuation costs mostly per-op
# overhead, not FLOPs, so P plans in one program cost about one.
#
# Bit-identity. A plan's outputs do not depend on which other plans share the grid: program `l` of the prefix
# is the same whether the walk stops at l + 1 or goes on, a stacked plan's rows go through the same ops as
# alone, and other plans' forks and decodes are their own. So a plan alone (`grid(batch, [fn])`, what the eval
# runs for one plan) and the same plan inside any grid give bit-identical tokens, kept tokens and logits on
# CPU, where XLA's row-wise results do not depend on the row count (tests/test_shared_prefix.py checks it).
# (A GPU matmul may choose another algorithm for another row count: logits may then differ by float noise.)
# Against `__call__`'s single fused program the grid is not bit-identical (XLA fuses differently across program
# boundaries: float32 logits differ by ~1e-7 on CPU), so a tie within that noise can go either way there.
#
# Programs and memory. A fork is compiled per plan, or per stack (prune points are static); the decode, a
# `while_loop` over every layer, is compiled once per cache layout (kept length per layer, rows) and shared by
# the forks with that layout. jax keeps every compiled program for the life of its `jit`, so a long evaluation
# runs plans in chunks and calls `release_plan_programs` between them (jaxprune.eval.loop.evaluate_task). One
# live prefix state (what enters layer K and the KV of layers < K) and one continuation exist at a time.


class GridPrograms(NamedTuple):
  """The jitted pieces of `Generator.grid`, in the order a grid runs them."""

  start: Callable  # (state, inputs) -> (PrefillState before layer 0, VisionSignals): once per batch
  advance: Callable  # (state, prefix, to_layer=) -> the unpruned prefix one stretch further
  fork: Callable  # (state, prefix, vision, prune_points_fn=) -> one plan's continuation: (first, cache, kept)
  decode: Callable  # (state, first, cache, kept, keep_logits=, parts=) -> (one output per plan, cache)
  fork_stacked: Callable  # (state, prefix, vision, prune_points_fns=) -> several plans' continuation, stacked


class Generator:
  """Compiled greedy generation for one model. `compiles` counts traces (one per bucket × plan × size; `grid`
  adds one per bucket for the vision side, one per stretch of shared prefix and one decode per cache layout)."""

  def __init__(self, model: nnx.Module, *, max_new_tokens: int = 32, eos_ids: Sequence[int] = (),
               pad_id: int = 0, mesh=None, fork_rows: int = FORK_ROWS):
    self.graphdef, self.state = nnx.split(model)
    self.mesh = mesh  # with a mesh: batch sharded on "data", weights placed by jaxprune.sharding's rules
    if mesh is not None:
      self.state = shard_model_state(self.state, mesh, head_sizes(model))
    self.max_new_tokens = max_new_tokens
    self.eos_ids = tuple(int(e) for e in eos_ids)
    self.pad_id = pad_id
    self.compiles = 0
    self.fork_rows = fork_rows
    self._pruned_shapes: dict[tuple, Any] = {}  # (fn, layer, input shapes) -> shapes of its pruned tokens
    self._run = jax.jit(self._generate, static_argnames=("prune_points_fn", "keep_logits"))
    self.programs = GridPrograms(
        start=jax.jit(self._grid_start),
        advance=jax.jit(self._grid_advance, static_argnames=("to_layer",)),
        fork=jax.jit(self._grid_fork, static_argnames=("prune_points_fn",)),
        decode=jax.jit(self._grid_decode, static_argnames=("keep_logits", "parts"), donate_argnames=("cache",)),
        fork_stacked=jax.jit(self._grid_fork_stacked, static_argnames=("prune_points_fns",)))

  def _generate(self, state, inputs, *, prune_points_fn, keep_logits):
    self.compiles += 1  # runs only while tracing
    model = nnx.merge(self.graphdef, state)
    first, cache, tokens, _ = prefill(model, inputs, extra_slots=self.max_new_tokens,
                                      prune_points_fn=prune_points_fn)
    return self._decode(model, first, cache, tokens, keep_logits)

  def _decode(self, model, first, cache: KVCache, tokens: Tokens, keep_logits: bool) -> dict:
    return {**self._decoded(model, first, cache, keep_logits)[0], "kept": tokens.replace(hidden=None)}

  def _decoded(self, model, first, cache: KVCache, keep_logits: bool) -> tuple[dict, KVCache]:
    """The decode from first-token logits [B, V] -> (every output of `__call__` but "kept", final cache)."""
    out, logits, cache = greedy_decode(language_model(model), first, cache, max_new_tokens=self.max_new_tokens,
                                       eos_ids=self.eos_ids, pad_id=self.pad_id, keep_logits=keep_logits)
    return {"tokens": out, "logits": logits, "kv_bytes": cache.nbytes,
            "nonfinite": jnp.sum(~jnp.isfinite(first), axis=-1)}, cache  # [B] NaN/inf first-token logits: say, never 0%

  # ------------------------------------------------------------------------ a grid of plans sharing its prefix

  def _grid_start(self, state, inputs):
    """Vision tower + embedding, once per batch -> (PrefillState before layer 0, VisionSignals or None)."""
    self.compiles += 1
    tokens, vision = decoder_inputs(nnx.merge(self.graphdef, state), inputs)
    return decoding.prefill_start(tokens, extra_slots=self.max_new_tokens), vision

  def _grid_advance(self, state, prefix: decoding.PrefillState, *, to_layer: int):
    """The unpruned prefix, one more stretch: layers prefix.layer .. to_layer-1."""
    self.compiles += 1
    return decoding.prefill_advance(language_model(nnx.merge(self.graphdef, state)), prefix, to_layer)

  def _grid_fork(self, state, prefix: decoding.PrefillState, vision, *, prune_points_fn):
    """One plan's own continuation from the shared prefix: its prune points and the remaining layers -> (first-token
    logits [B, V], KVCache, kept Tokens without hidden). The decode is `_grid_decode`: only this part is the plan's."""
    self.compiles += 1
    model = nnx.merge(self.graphdef, state)
    decoder = language_model(model)
    # nothing is pruned before the prefix's layer, so these tokens have the input's shapes
    points = prune_points_fn(model, prefix.tokens, vision) if prune_points_fn else None
    h, cache, tokens = decoding.prefill_finish(
        decoder, decoding.prefill_advance(decoder, prefix, decoder.config.num_layers, points))
    return decoder.logits(h[:, -1]), cache, tokens.replace(hidden=None)

  def _grid_fork_stacked(self, state, prefix: decoding.PrefillState, vision, *, prune_points_fns):
    """Several one-stage plans pruning at prefix.layer to the same shapes, as one continuation: each plan's
    pruned tokens (from the same prefix) stacked on the batch axis, plan-major, with the prefix's KV repeated
    per plan -> (first-token logits [P*B, V], KVCache, kept Tokens [P*B, ...]). Per row, the same ops as
    `_grid_fork`; on small batches a continuation costs mostly per-op overhead, which P plans now pay once."""
    self.compiles += 1
    model = nnx.merge(self.graphdef, state)
    decoder = language_model(model)
    pruned = []
    for fn in prune_points_fns:
      (point,) = fn(model, prefix.tokens, vision).values()  # its one prune point, at prefix.layer
      pruned.append(point(prefix.tokens, prefix.trace))
    stack = lambda xs: jnp.concatenate(xs, axis=0)
    repeat = lambda arrays: tuple(stack([a] * len(pruned)) for a in arrays)
    stacked = prefix.replace(tokens=jax.tree.map(lambda *xs: stack(xs), *pruned), trace=None,
                             keys=repeat(prefix.keys), values=repeat(prefix.values),
                             slot_valid=repeat(prefix.slot_valid), next_position=repeat(prefix.next_position))
    # the pruning already happened: an identity point at this layer starts the new group (positions, masks)
    as_pruned = {prefix.layer: lambda tokens, trace: tokens}
    h, cache, tokens = decoding.prefill_finish(
        decoder, decoding.prefill_advance(decoder, stacked, decoder.config.num_layers, as_pruned))
    return decoder.logits(h[:, -1]), cache, tokens.replace(hidden=None)

  def _grid_decode(self, state, first: jax.Array, cache: KVCache, kept: Tokens, *, keep_logits, parts):
    """A fork's greedy decode -> (one output per plan of the fork, as `__call__` gives it; the final cache).
    `parts` plans share the fork, plan-major rows. Nothing here names the plan: the program is keyed by shapes
    alone (the cache's kept length per layer, rows per plan), so every plan keeping the same lengths at the same
    layers (a grid's methods at one layer and budget, the baseline and plans that prune nothing) shares one
    compiled decode. The rows are split per plan in this program, not by a few small ops per plan afterwards.
    The cache is donated: the loop updates it in place, as inside `__call__`'s single program."""
    self.compiles += 1
    out, cache = self._decoded(nnx.merge(self.graphdef, state), first, cache, keep_logits)
    out = {**out, "kept": kept, "kv_bytes": out["kv_bytes"] // parts}  # a scalar: each plan's share of the cache
    rows = first.shape[0] // parts
    per_plan = tuple(jax.tree.map(lambda x, n=n: x if jnp.ndim(x) == 0 else x[n * rows:(n + 1) * rows], out)
                     for n in range(parts))
    return per_plan, cache  # the final cache reuses the donated buffers (the caller drops it)

  def grid(self, batch: Batch, prune_points_fns: Sequence[PrunePointsFn | None], *,
           keep_logits: bool = False) -> list[dict]:
    """Every plan on one batch, sharing what the plans share: -> one output per plan, as `__call__` gives it
    (see "The shared-prefix grid" above the class for what is shared, what is bit-identical and what stays alive).

    The vision tower and embedding run once; the unpruned decoder runs once up to each distinct first prune
    layer K, walked in increasing order, and the plans whose first prune point is at K continue from that state
    (`_continue_at`). A prune-points function must choose its layers from shapes alone (as `Pruner` does): it is
    called once on the host to find its first layer."""
    prefix, vision = self.programs.start(self.state, self.device_arrays(batch))
    model = nnx.merge(self.graphdef, self.state)
    by_layer: dict[int, list[int]] = {}  # first prune layer -> plan indices; plans that prune nothing: 0
    one_point: set[int] = set()  # plans with a single prune point: their continuations can be stacked
    for index, fn in enumerate(prune_points_fns):
      layers = sorted(fn(model, prefix.tokens, vision)) if fn else []  # builds the points; runs nothing
      by_layer.setdefault(layers[0] if layers else 0, []).append(index)
      if len(layers) == 1:
        one_point.add(index)
    outputs: list[dict | None] = [None] * len(prune_points_fns)
    for layer in sorted(by_layer):
      while prefix.layer < layer:  # one layer per program: the same programs whatever layers the grid holds
        prefix = self.programs.advance(self.state, prefix, to_layer=prefix.layer + 1)  # the old state is dropped
      stacks: dict[tuple, list[int]] = {}  # plans whose pruned tokens have the same shapes, in grid order
      for index in by_layer[layer]:
        key = (("stack", self._pruned_shapes_of(prune_points_fns[index], model, prefix, vision))
               if index in one_point else ("alone", index))
        stacks.setdefault(key, []).append(index)
      for (kind, _), indices in stacks.items():
        self._continue_at(prefix, vision, [(i, prune_points_fns[i]) for i in indices], outputs,
                          stacked=kind == "stack", keep_logits=keep_logits, rows=batch.size)
    return outputs

  def _continue_at(self, prefix: decoding.PrefillState, vision, plans: list[tuple[int, Any]], outputs: list,
                   *, stacked: bool, keep_logits: bool, rows: int) -> None:
    """Fork and decode `plans` ((index, prune-points fn) pairs) from the prefix into `outputs[index]`: one
    program per plan ("alone": the baseline, plans that prune nothing, multi-stage plans), or, for one-point
    plans with equal pruned shapes, stacks of at most `fork_rows` rows (plans x batch)."""
    programs = self.programs
    if not stacked:
      (index, fn), = plans
      first, cache, kept = programs.fork(self.state, prefix, vision, prune_points_fn=fn)
      (outputs[index],), _ = programs.decode(self.state, first, cache, kept, keep_logits=keep_logits, parts=1)
      return  # the fork's cache was consumed (donated) by its decode
    per_stack = max(1, self.fork_rows // rows)
    for lo in range(0, len(plans), per_stack):
      part = plans[lo:lo + per_stack]
      first, cache, kept = programs.fork_stacked(self.state, prefix, vision,
                                                 prune_points_fns=tuple(fn for _, fn in part))
      outs, _ = programs.decode(self.state, first, cache, kept, keep_logits=keep_logits, parts=len(part))
      for (index, _), out in zip(part, outs):
        outputs[index] = out

  def _pruned_shapes_of(self, fn: PrunePointsFn, model, prefix: decoding.PrefillState, vision) -> Any:
    """The shapes of a one-point plan's pruned tokens at prefix.layer (traced once per plan, layer and input
    shapes, never run): plans with equal shapes share one stacked continuation."""
    key = (fn, prefix.layer, tuple((x.shape, x.dtype) for x in jax.tree.leaves((prefix.tokens, prefix.trace))))
    if key not in self._pruned_shapes:
      (point,) = fn(model, prefix.tokens, vision).values()
      shapes = jax.eval_shape(point, prefix.tokens, prefix.trace)
      leaves = tuple((x.shape, x.dtype) for x in jax.tree.leaves(shapes))
      self._pruned_shapes[key] = (jax.tree.structure(shapes), leaves)
    return self._pruned_shapes[key]

  def plan_programs(self) -> tuple[int, int]:
    """(fork programs, decode programs) compiled and alive now: what `release_plan_programs` frees."""
    programs = self.programs
    return programs.fork._cache_size() + programs.fork_stacked._cache_size(), programs.decode._cache_size()

  def release_plan_programs(self) -> None:
    """Drop the compiled programs that belong to plans: `grid`'s forks and decodes and `__call__`'s per-plan
    programs. The vision side and the prefix stretches stay (one per bucket, and per bucket and layer).

    jax keeps an executable while its `jit`'s cache holds it; `clear_cache` empties that cache and the trace
    caches, which frees the executables (jax's compilation cache holds them only weakly, by their lowered
    module; benchmarks/grid_memory.py measures the resident memory with and without). A plan run again after
    this compiles again."""
    for jitted in (self._run, self.programs.fork, self.programs.decode, self.programs.fork_stacked):
      jitted.clear_cache()
    self._pruned_shapes.clear()
    gc.collect()  # the traced modules sit in reference cycles; collect them now, not at some later allocation

  def __call__(self, batch: Batch, *, prune_points_fn: PrunePointsFn | None = None,
               keep_logits: bool = False) -> dict:
    """-> {"tokens": [B, T] int32 (pad after EOS), "logits": [B, T, V] | None, "kept": final Tokens (no hidden),
    "kv_bytes": int, "nonfinite": [B] count of non-finite first-token logits}."""
    return self._run(self.state, self.device_arrays(batch), prune_points_fn=prune_points_fn,
                     keep_logits=keep_logits)

  def device_arrays(self, batch: Batch) -> Batch:
    """The batch as host arrays, or as global arrays sharded on the mesh's data axis."""
    if self.mesh is None:
      return batch
    if batch.size % self.mesh.shape["data"]:
      raise ValueError(f"batch of {batch.size} does not divide over the mesh's {self.mesh.shape['data']} data shards")
    return put_batch(batch, self.mesh)


def trim_at_eos(tokens: np.ndarray, eos_ids: Sequence[int]) -> list[list[int]]:
  """[B, T] -> per-sample lists ending before the first EOS."""
  result = []
  for row in np.asarray(tokens):
    stop = next((i for i, t in enumerate(row) if t in eos_ids), len(row))
    result.append(row[:stop].tolist())
  return result
