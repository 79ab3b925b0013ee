"""Grid evaluation cost: the per-plan loop vs the shared-prefix grid (`Generator.grid`), in units of one
unpruned pass over the same items, next to the analytic prefill FLOPs of both.

    python benchmarks/sweep.py            # demo grid + large grid on checkpoints/llava-easyvqa
    python benchmarks/sweep.py --grid demo  # the demo grid only
    python benchmarks/sweep.py --quick    # a 3-plan grid on one batch (smoke test)

Every program is compiled (warm-up) before timing; then each repetition times, back to back, one unpruned pass,
the per-plan loop and the shared-prefix grid, so all three see the same machine load; ratios are per repetition,
reported as medians. The analytic bound of the shared grid is its FLOPs (vision once, the unpruned prefix once up
to the deepest first prune layer, every plan's continuation) at the measured unpruned FLOP rate. FLOPs count
prefill matmuls only (jaxprune/cost.py); the decode steps of every plan are extra work in both paths.
Writes evals/bench/sweep.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxprune import cost  # noqa: E402
from jaxprune.data import load_task  # noqa: E402
from jaxprune.eval.cli import DEMO_ARGS, parse_args  # noqa: E402
from jaxprune.eval.grid import build_grid  # noqa: E402
from jaxprune.eval.runner import Runner, task_relevance_signals  # noqa: E402
from jaxprune.prune.methods import METHODS  # noqa: E402
from jaxprune.prune.pipeline import Pruner  # noqa: E402
from jaxprune.sharding import to_host  # noqa: E402

MODEL = "llava-easyvqa"
LARGE_KEEPS = "4,8,16,64"


def batches(runner: Runner, n_items: int) -> list:
  items = list(load_task("easyvqa", limit=n_items))
  out = []
  for start in range(0, len(items), runner.batch_size):
    chunk = items[start:start + runner.batch_size]
    prompts = [runner.prompt(it["question"], with_image=True) for it in chunk]
    pixels = runner.host.join([runner.item_pixels(it["image"], f"easyvqa item {it['id']}") for it in chunk])
    out.append(runner.batch(prompts, pixels))
  return out


def grid_plans(runner: Runner, method: str, layer: str | None, keep: str) -> list:
  argv = list(DEMO_ARGS)
  argv[argv.index("--method") + 1], argv[argv.index("--keep") + 1] = method, keep
  if layer is not None:
    argv += ["--layer", layer]
  plans, _ = build_grid(parse_args(argv), runner.config, task_relevance_signals("easyvqa", runner.config))
  return plans


def per_plan(runner, data, pruners) -> list:
  return [[to_host(runner.generator(b, prune_points_fn=p)["tokens"]) for b in data] for p in pruners]


def shared(runner, data, pruners) -> list:
  outs = [[to_host(o["tokens"]) for o in runner.generator.grid(b, pruners)] for b in data]
  return [[outs[j][i] for j in range(len(data))] for i in range(len(pruners))]


def timed(fn, *args) -> tuple[float, object]:
  start = time.perf_counter()
  result = fn(*args)
  return time.perf_counter() - start, result


def flops(cfg, data, plans) -> dict:
  """Analytic prefill FLOPs over all items: the per-plan loop, the shared grid, one unpruned pass."""
  text, nv = cfg.text, cfg.visual_tokens_per_image
  lengths = [int(n) for b in data for n in np.asarray(b.valid).sum(axis=1)]
  head = 2 * text.hidden_size * text.vocab_size  # lm_head, last position
  stages = [[] if p is None else [(s.layer, s.keep) for s in p.stages if s.keep < nv] for p in plans]
  first = [s[0][0] if s else text.num_layers for s in stages]
  deepest = max((k for k in first if k < text.num_layers), default=0)
  total = {"per_plan": 0, "shared": 0, "unpruned": 0}
  for length in lengths:
    vision = cost.vision_flops(cfg, nv)
    total["unpruned"] += cost.prefill_flops(cfg, length, num_visual=nv)
    total["per_plan"] += sum(cost.prefill_flops(cfg, length, s, num_visual=nv) for s in stages)
    unpruned = cost.sequence_lengths(text.num_layers, length, nv)
    # vision once, the unpruned prefix once up to the deepest first prune layer (the baseline finishes it)
    total["shared"] += vision + sum(cost.decoder_layer_flops(text, n) for n in unpruned[:deepest])
    for s, k in zip(stages, first):
      own = cost.sequence_lengths(text.num_layers, length, nv, s)
      start = k if k < text.num_layers else deepest
      total["shared"] += sum(cost.decoder_layer_flops(text, n) for n in own[start:]) + head
  return total


def run_grid(name: str, runner: Runner, data, plans, reps: int) -> dict:
  pruners = [None if p is None else Pruner(p, runner.config) for p in plans]
  t0 = time.perf_counter()
  alone, together = per_plan(runner, data, pruners), shared(runner, data, pruners)  # compiles everything
  compile_s = time.perf_counter() - t0
  identical = all(np.array_equal(a, b) for xs, ys in zip(alone, together) for a, b in zip(xs, ys))
  rows = []
  for _ in range(reps):  # interleaved, so every ratio compares timings taken under the same load
    base, _ = timed(per_plan, runner, data, [None])
    loop, _ = timed(per_plan, runner, data, pruners)
    grid, _ = timed(shared, runner, data, pruners)
    rows.append((base, loop, grid))
  base = statistics.median(r[0] for r in rows)
  f = flops(runner.config, data, plans)
  loop_ratio = statistics.median(r[1] / r[0] for r in rows)
  grid_ratio = statistics.median(r[2] / r[0] for r in rows)
  bound = f["shared"] / f["unpruned"]  # the shared grid's time at the unpruned FLOP rate, in unpruned passes
  return {"name": name, "plans": [None if p is None else str(p) for p in plans], "n_plans": len(plans),
          "items": sum(b.size for b in data), "reps": reps, "warmup_and_compile_s": round(compile_s, 1),
          "identical_answers": identical, "unpruned_pass_s": round(base, 4),
          "per_plan": {"ratio": round(loop_ratio, 2), "flops_ratio": round(f["per_plan"] / f["unpruned"], 2)},
          "shared": {"ratio": round(grid_ratio, 2), "flops_ratio": round(bound, 2),
                     "vs_bound": round(grid_ratio / bound, 2)},
          "speedup": round(statistics.median(r[1] / r[2] for r in rows), 2),
          "flops": f, "timings_s": [[round(x, 4) for x in r] for r in rows]}


def markdown(result: dict) -> str:
  lines = [f"# Grid sweep: per-plan loop vs shared prefix ({result['model']})", "",
           f"{result['machine']}; times in units of one unpruned pass over the same items (median of "
           f"{result['grids'][0]['reps']} interleaved repetitions); FLOPs = analytic prefill matmuls.", "",
           "| grid | plans | items | per-plan (time / FLOPs) | shared (time / FLOPs) | speedup | shared vs bound | "
           "same answers |", "|---|---|---|---|---|---|---|---|"]
  for g in result["grids"]:
    lines.append(f"| {g['name']} | {g['n_plans']} | {g['items']} | {g['per_plan']['ratio']} / "
                 f"{g['per_plan']['flops_ratio']} | {g['shared']['ratio']} / {g['shared']['flops_ratio']} | "
                 f"{g['speedup']}x | {g['shared']['vs_bound']} | {g['identical_answers']} |")
  lines += ["", "Targets: demo grid >= 3x faster than the per-plan loop; large grid <= 1.3x its analytic bound.", ""]
  return "\n".join(lines)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="3 plans, one batch of 8 items, one repetition")
  ap.add_argument("--items", type=int, default=16)
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--out", default=str(ROOT / "evals" / "bench"))
  ap.add_argument("--grid", choices=("demo", "large", "both"), default="both",
                  help="which grid(s) to run (each compiles every plan twice: the large one takes longest)")
  args = ap.parse_args(argv)
  runner = Runner.load(MODEL, dtype=None, max_new_tokens=16, bucket=64, batch_size=8, mesh=None)
  data = batches(runner, 8 if args.quick else args.items)
  if args.quick:
    grids = [("quick", grid_plans(runner, "none,fastv@1,clsattn@0", None, "8"))]
  else:
    demo = parse_args(DEMO_ARGS)
    layers = ",".join(str(k) for k in range(min(4, runner.config.num_layers)))  # 4 layers, or all there are
    methods = ",".join(["none"] + [m for m in METHODS if m not in ("oracle", "anti-oracle")])
    grids = [("demo", grid_plans(runner, demo.method, None, demo.keep)),
             (f"large (layers {layers})", grid_plans(runner, methods, layers, LARGE_KEEPS))]
    grids = [g for g, name in zip(grids, ("demo", "large")) if args.grid in (name, "both")]
  result = {"model": MODEL, "machine": f"{jax.device_count()} {jax.default_backend()} device(s)",
            "grids": [run_grid(name, runner, data, plans, 1 if args.quick else args.reps) for name, plans in grids]}
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "sweep.json").write_text(json.dumps(result, indent=1))
  (out / "sweep.md").write_text(markdown(result))
  print(markdown(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
