"""Prefill time pruned / unpruned next to the analytic FLOPs ratio, and the scorer's own share of the time.

    python benchmarks/prune_overhead.py [--runs 10] [--batch 1] [--out evals/bench/prune_overhead_cpu.json]

A SmolLM2-135M-sized decoder (random weights, float32 on CPU) with 576 visual tokens (a 24x24 grid, as
LLaVA-1.5) and 64 text tokens. Only the decoder prefill is timed (the vision tower is the same for every
plan): medians of `--runs` timed runs after warm-up, each synchronised with `block_until_ready`.
Scoring + selection is timed on its own, as a jitted function of the hidden states entering layer K.
These are ratios measured in one run; the machine is noisy, so compare within a run, not across runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune import cost
from jaxprune.core.tokens import VisionSignals, VisualLayout
from jaxprune.models.config import TextConfig
from jaxprune.models.llama import LlamaModel, make_tokens
from jaxprune.models.llava import LlavaConfig, VisionConfig
from jaxprune.prune.pipeline import Pruner

SMOLLM2_135M = TextConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9,
                          num_kv_heads=3, head_dim=64, rms_norm_eps=1e-5, rope_theta=100000.0,
                          tie_word_embeddings=True)
CLIP_L_336 = VisionConfig(hidden_size=1024, intermediate_size=4096, num_layers=24, num_heads=16, image_size=336,
                          patch_size=14)
NUM_VISUAL, NUM_TEXT = 576, 64
PLANS = ["latesim@2:64", "fastv@2:64", "clsattn@2:64", "random@2:64"]


def median_ms(fn, *args, runs: int) -> float:
  jax.block_until_ready(fn(*args))  # compile + warm-up
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append((time.perf_counter() - start) * 1e3)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=10)
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--out", default="evals/bench/prune_overhead_cpu.json")
  args = parser.parse_args()

  cfg = LlavaConfig(text=SMOLLM2_135M, vision=CLIP_L_336, image_token_id=0)
  lm = LlamaModel(SMOLLM2_135M, dtype=jnp.float32, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(lm)
  b, length = args.batch, NUM_VISUAL + NUM_TEXT
  rng = np.random.RandomState(0)
  hidden = jnp.asarray(rng.randn(b, length, SMOLLM2_135M.hidden_size).astype(np.float32) * 0.02)
  image = np.zeros((b, length), bool)
  image[:, 8:8 + NUM_VISUAL] = True  # system prompt, image, then the question
  valid = jnp.ones((b, length), bool)
  cls_attention = jax.nn.softmax(jnp.asarray(rng.randn(b, 16, NUM_VISUAL).astype(np.float32)), axis=-1)
  side = CLIP_L_336.image_size // CLIP_L_336.patch_size
  vision = VisionSignals(features=None, layout=VisualLayout.single_grid(b, side, side),
                         importance=jnp.sum(cls_attention, axis=1), keys=None)

  def prefill(state, hidden, pruner):
    model = nnx.merge(graphdef, state)
    tokens = make_tokens(hidden, valid, jnp.asarray(image), None)
    points = pruner(model, tokens, vision) if pruner else None
    h, _, _ = model.prefill(tokens, extra_slots=0, prune_points=points)
    return model.logits(h[:, -1])

  def score_and_select(state, hidden, pruner):
    """The stage's own work on the states entering layer K: scores, top-k, gather (plus FastV's q/k rows)."""
    model = nnx.merge(graphdef, state)
    tokens = make_tokens(hidden, valid, jnp.asarray(image), None)
    stage = pruner.plan.stages[0]
    trace = None
    if stage.method == "fastv":  # FastV reads layer K-1's post-RoPE q/k, which the prefill computes anyway
      from jaxprune.models.llama import LayerTrace, rope_inverse_frequencies, rope_tables
      layer = model.layers[stage.layer - 1]
      cos, sin = rope_tables(tokens.positions, rope_inverse_frequencies(model.config))
      q, k, _ = layer.attn.project(layer.input_norm(tokens.hidden), cos, sin)
      trace = LayerTrace(queries=q, keys=k)
    point = pruner(model, tokens, vision)[stage.layer]
    return point(tokens, trace).hidden

  run = jax.jit(prefill, static_argnums=2)
  score = jax.jit(score_and_select, static_argnums=2)
  base_ms = median_ms(run, state, hidden, None, runs=args.runs)
  base_flops = cost.prefill_flops(SMOLLM2_135M, length, (), num_visual=NUM_VISUAL, batch=b, include_vision=False)
  rows = [{"plan": "none", "prefill_ms": base_ms, "time_ratio": 1.0, "flops_ratio": 1.0}]
  for text in PLANS:
    pruner = Pruner.build(text, cfg)
    stages = [(s.layer, s.keep) for s in pruner.plan.stages]
    ms = median_ms(run, state, hidden, pruner, runs=args.runs)
    score_ms = median_ms(score, state, hidden, pruner, runs=args.runs)
    flops = cost.prefill_flops(SMOLLM2_135M, length, stages, num_visual=NUM_VISUAL, batch=b, include_vision=False)
    rows.append({"plan": text, "prefill_ms": ms, "time_ratio": ms / base_ms, "flops_ratio": flops / base_flops,
                 "score_select_ms": score_ms, "score_share_of_unpruned": score_ms / base_ms})

  print(f"SmolLM2-135M-sized decoder, {NUM_VISUAL} visual + {NUM_TEXT} text tokens, batch {b}, float32, "
        f"{jax.devices()[0].platform}, median of {args.runs}")
  print(f"{'plan':<16}{'prefill ms':>12}{'time ratio':>12}{'FLOPs ratio':>13}{'speedup/bound':>15}"
        f"{'score+select ms':>17}{'share':>8}")
  for r in rows:
    bound = (1 / r["time_ratio"]) / (1 / r["flops_ratio"])
    extra = (f"{r['score_select_ms']:>17.2f}{100 * r['score_share_of_unpruned']:>7.2f}%" if "score_select_ms" in r
             else "")
    print(f"{r['plan']:<16}{r['prefill_ms']:>12.1f}{r['time_ratio']:>12.3f}{r['flops_ratio']:>13.3f}"
          f"{bound:>15.2f}{extra}")
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({
      "benchmark": "prune_overhead", "date": datetime.date.today().isoformat(), "machine": platform.machine(),
      "processor": platform.processor() or platform.machine(), "cpu_count": __import__("os").cpu_count(),
      "jax": jax.__version__, "device": str(jax.devices()[0]), "batch": b, "runs": args.runs, "rows": rows,
  }, indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
