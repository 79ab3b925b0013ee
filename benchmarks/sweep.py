"""Grid evaluation cost: the per-plan loop vs the shared-prefix grid (`Generator.grid`), in units of one
unpruned pass over the same items, next to the analytic bound of the shared grid.

    python benchmarks/sweep.py              # demo grid (llava-easyvqa) + large grid (llava-scenes)
    python benchmarks/sweep.py --grid demo  # the demo grid only
    python benchmarks/sweep.py --quick      # a 3-plan grid on one batch (smoke test)
    python benchmarks/sweep.py --grid large --large-model DIR   # the large grid on another deep model
    python benchmarks/sweep.py --grid large --bucket 16 --out evals/bench/bucket16   # less prompt padding

The demo grid is the no-argument demo's (`python -m jaxprune.eval`) on the easy-VQA model; the large grid is
every method x 4 layers x 4 budgets on the 12-layer scenes lab model (the easy-VQA model has 2 layers).
The grid is timed as the eval runs it: in chunks of at most MAX_LIVE_PLANS plans (`jaxprune.eval.loop`), whose
programs are freed before the next chunk, so a 125-plan grid never holds 125 compiled plans. Per chunk, every
program is compiled (warm-up) before timing; then each repetition times, back to back, one unpruned pass, its
prefill alone, the chunk's per-plan loop and its shared-prefix grid, so all of them see the same machine load.
Ratios are taken per chunk and repetition against that chunk's unpruned pass, summed over chunks, and reported
as medians over repetitions.

The analytic bound of the shared grid, in unpruned passes: its prefill FLOPs (vision once, the unpruned prefix
once per chunk up to the chunk's deepest first prune layer, every plan's continuation; `jaxprune/cost.py`) at
the measured
unpruned prefill rate, plus one decode per plan at the measured unpruned decode time: the greedy decode program
alone, from the unpruned prefill's cache, timed in each round as the prefill is (earlier versions took the unpruned
pass minus its prefill, a difference of two close timings that moved the bound by a third between runs). Decode is
timed, not counted in FLOPs: on these shapes a decode step is latency-bound, so FLOPs would price it at almost
nothing; a pruned plan's decode reads a shorter cache, so this prices it high. `prefill_only_bound` is the bound
without decode, as earlier versions reported.
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
import jax.numpy as jnp
import numpy as np
from flax import nnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxprune import cost  # noqa: E402
from jaxprune.data import load_task  # noqa: E402
from jaxprune.data.tasks import relevant_cells  # noqa: E402
from jaxprune.eval.cli import DEMO_ARGS, parse_args  # noqa: E402
from jaxprune.eval.grid import build_grid  # noqa: E402
from jaxprune.eval.loop import MAX_LIVE_PLANS  # noqa: E402
from jaxprune.eval.runner import Runner, task_relevance_signals, with_relevance_table  # noqa: E402
from jaxprune.generate import FORK_ROWS, greedy_decode, prefill  # noqa: E402
from jaxprune.models.base import language_model  # noqa: E402
from jaxprune.prune.methods import METHODS  # noqa: E402
from jaxprune.prune.pipeline import Pruner  # noqa: E402
from jaxprune.sharding import to_host  # noqa: E402

GRIDS = {"demo": ("llava-easyvqa", "easyvqa"), "large": ("llava-scenes", "scenes")}  # grid -> (model, task)
LARGE_KEEPS = "4,8,16,64"


def large_model(path: str | None) -> str:
  """The large grid's model: --large-model, else the shipped scenes lab model (`checkpoints/llava-scenes`)."""
  from jaxprune.models.registry import LOCAL_PRESETS
  if path:
    return path
  shipped = LOCAL_PRESETS.get("llava-scenes")
  if shipped is None or not (shipped / "config.json").exists():
    raise SystemExit("sweep.py: the large grid needs a deep model: checkpoints/llava-scenes is not shipped yet; "
                     "pass --large-model DIR (e.g. a short run of python -m jaxprune.recipes.scenes)")
  return "llava-scenes"


def batches(runner: Runner, task: str, n_items: int) -> list:
  items = list(load_task(task, limit=n_items))
  out = []
  for start in range(0, len(items), runner.batch_size):
    chunk = items[start:start + runner.batch_size]
    prompts = [runner.prompt(it["question"], with_image=True) for it in chunk]
    pixels = runner.host.join([runner.item_pixels(it["image"], f"{task} item {it['id']}") for it in chunk])
    batch = runner.batch(prompts, pixels)
    if "relevance" in task_relevance_signals(task, runner.config):  # the oracle bounds read it
      batch = with_relevance_table(batch, [relevant_cells(task, it, runner.config.grid) for it in chunk])
    out.append(batch)
  return out


def grid_plans(runner: Runner, task: str, method: str, layer: str | None, keep: str) -> list:
  argv = list(DEMO_ARGS)
  argv[argv.index("--method") + 1], argv[argv.index("--keep") + 1] = method, keep
  if layer is not None:
    argv += ["--layer", layer]
  plans, _ = build_grid(parse_args(argv), runner.config, task_relevance_signals(task, runner.config))
  return plans


def outputs_of(out: dict) -> tuple[np.ndarray, np.ndarray]:
  """(generated tokens [B, T], kept visual slots [B, L'] (-1: text)) of one generator output, on the host."""
  return to_host(out["tokens"]), to_host(out["kept"].patch)


def per_plan(runner, data, pruners) -> list:
  """[plan][batch] -> (tokens, kept slots): every plan alone, through `__call__`'s single program."""
  return [[outputs_of(runner.generator(b, prune_points_fn=p)) for b in data] for p in pruners]


def shared(runner, data, pruners) -> list:
  """[plan][batch] -> (tokens, kept slots): the chunk's plans together, through `Generator.grid`."""
  outs = [[outputs_of(o) for o in runner.generator.grid(b, pruners)] for b in data]
  return [[outs[j][i] for j in range(len(data))] for i in range(len(pruners))]


def differences(runner, data, plans, alone, together) -> list[dict]:
  """Every (plan, item) whose generated tokens or kept visual slots differ between the two paths, with both
  decoded answers (so a difference after the answer's EOS is told apart from a different answer)."""
  out = []
  for plan, xs, ys in zip(plans, alone, together):
    for j, ((tok_a, kept_a), (tok_b, kept_b)) in enumerate(zip(xs, ys)):
      for r in range(len(tok_a)):
        same_tokens, same_kept = np.array_equal(tok_a[r], tok_b[r]), np.array_equal(kept_a[r], kept_b[r])
        if not (same_tokens and same_kept):
          answer_a, answer_b = runner.decode(np.stack([tok_a[r], tok_b[r]]))
          out.append({"plan": "none" if plan is None else str(plan), "item": j * runner.batch_size + r,
                      "tokens_equal": same_tokens, "kept_equal": same_kept, "answer_alone": answer_a,
                      "answer_shared": answer_b})
  return out


def bench_programs(runner) -> dict:
  """The unpruned pass's two halves as programs of their own: "prefill" (-> first-token logits), "start" (->
  logits and the KV cache the decode starts from), "decode" (the greedy loop from them; the cache is donated,
  as in the grid's decode)."""
  if not hasattr(runner, "_bench_programs"):
    gen = runner.generator
    run_prefill = lambda state, inputs: prefill(nnx.merge(gen.graphdef, state), inputs,
                                                extra_slots=gen.max_new_tokens)[:2]
    decode = lambda state, first, cache: greedy_decode(
        language_model(nnx.merge(gen.graphdef, state)), first, cache, max_new_tokens=gen.max_new_tokens,
        eos_ids=gen.eos_ids, pad_id=gen.pad_id, keep_logits=False)[::2]  # (tokens, cache): the cache in place
    runner._bench_programs = {"prefill": jax.jit(lambda state, inputs: run_prefill(state, inputs)[0]),
                              "start": jax.jit(run_prefill),
                              "decode": jax.jit(decode, donate_argnames=("cache",))}
  return runner._bench_programs


def prefill_pass(runner, data) -> None:
  """The unpruned prefill alone over every batch (what the unpruned pass does before its decode)."""
  run = bench_programs(runner)["prefill"]
  for b in data:
    jax.block_until_ready(run(runner.generator.state, b))


def decode_starts(runner, data) -> list:
  """Per batch, the unpruned prefill's (first-token logits, KV cache): what `decode_pass` decodes from."""
  start = bench_programs(runner)["start"]
  return [jax.block_until_ready(start(runner.generator.state, b)) for b in data]


def decode_pass(runner, starts) -> float:
  """Seconds of the unpruned greedy decode alone over every batch, timed directly (each batch's cache copied
  outside the timing, since the decode consumes it)."""
  decode, total = bench_programs(runner)["decode"], 0.0
  for first, cache in starts:
    cache = jax.block_until_ready(jax.tree.map(jnp.copy, cache))
    start = time.perf_counter()
    jax.block_until_ready(decode(runner.generator.state, first, cache))
    total += time.perf_counter() - start
  return total


def timed(fn, *args) -> tuple[float, object]:
  start = time.perf_counter()
  result = fn(*args)
  return time.perf_counter() - start, result


def flops(cfg, data, plans, *, as_run: bool = False) -> dict:
  """Analytic prefill FLOPs over all items: the per-plan loop, the shared grid, one unpruned pass. Each prompt
  counts its real tokens, or with `as_run` the padded length its batch runs at (the bucket's padding is text
  padding: a pruned continuation keeps it, so it weighs more the fewer visual tokens are kept)."""
  text, nv = cfg.text, cfg.visual_tokens_per_image
  lengths = [int(n) if not as_run else b.valid.shape[1] for b in data for n in np.asarray(b.valid).sum(axis=1)]
  head = 2 * text.hidden_size * text.vocab_size  # lm_head, last position
  stages = [[] if p is None else [(s.layer, s.keep) for s in p.stages if s.keep < nv] for p in plans]
  first = [s[0][0] if s else 0 for s in stages]  # plans that prune nothing fork before layer 0 (Generator.grid)
  deepest = max(first, default=0)
  total = {"per_plan": 0, "shared": 0, "unpruned": 0}
  for length in lengths:
    vision = cost.vision_flops(cfg, nv)
    total["unpruned"] += cost.prefill_flops(cfg, length, num_visual=nv)
    total["per_plan"] += sum(cost.prefill_flops(cfg, length, s, num_visual=nv) for s in stages)
    unpruned = cost.sequence_lengths(text.num_layers, length, nv)
    # vision once, the unpruned prefix once up to the deepest first prune layer, each plan's own layers after
    total["shared"] += vision + sum(cost.decoder_layer_flops(text, n) for n in unpruned[:deepest])
    for s, k in zip(stages, first):
      own = cost.sequence_lengths(text.num_layers, length, nv, s)
      total["shared"] += sum(cost.decoder_layer_flops(text, n) for n in own[k:]) + head
  return total


def plan_stages(plan) -> list[tuple[int, int]]:
  return [] if plan is None else [(s.layer, s.keep) for s in plan.stages]


def chunked(plans: list, size: int) -> list[list]:
  """The plans in the eval's chunks (`jaxprune.eval.loop.plan_chunks`'s order: by first prune layer, the baseline
  last, then by stages), so the benchmark times the grid as `evaluate_task` runs it."""
  order = sorted(plans, key=lambda p: (plan_stages(p)[0][0] if plan_stages(p) else float("inf"), plan_stages(p)))
  return [order[i:i + size] for i in range(0, len(order), size)]


def time_chunk(runner: Runner, data, plans: list, reps: int) -> dict:
  """One chunk of plans: compile (warm-up), check answers, then `reps` interleaved rounds of (unpruned pass, its
  prefill alone, its decode alone, the chunk's per-plan loop, the chunk's shared grid); its programs are freed
  afterwards."""
  pruners = [None if p is None else Pruner(p, runner.config) for p in plans]
  t0 = time.perf_counter()
  per_plan(runner, data, [None])
  alone, together = per_plan(runner, data, pruners), shared(runner, data, pruners)  # compiles the chunk
  prefill_pass(runner, data)
  starts = decode_starts(runner, data)
  decode_pass(runner, starts)
  compile_s = time.perf_counter() - t0
  diffs = differences(runner, data, plans, alone, together)
  rows = []
  for _ in range(reps):  # interleaved, so every ratio compares timings taken under the same load
    base, _ = timed(per_plan, runner, data, [None])
    pre, _ = timed(prefill_pass, runner, data)
    dec = decode_pass(runner, starts)
    loop, _ = timed(per_plan, runner, data, pruners)
    grid, _ = timed(shared, runner, data, pruners)
    rows.append((base, pre, loop, grid, dec))
  runner.release_programs()  # as evaluate_task does between chunks: at most MAX_LIVE_PLANS programs live
  return {"plans": plans, "compile_s": compile_s, "differences": diffs, "rows": rows,
          "flops": flops(runner.config, data, plans), "flops_as_run": flops(runner.config, data, plans, as_run=True)}


def run_grid(name: str, model: str, runner: Runner, data, plans, reps: int,
             max_live_plans: int = MAX_LIVE_PLANS) -> dict:
  """Time the grid chunk by chunk (at most MAX_LIVE_PLANS plans compiled at once, as the eval runs it). Every
  ratio is taken within a chunk against that chunk's own unpruned pass, then summed over chunks; the bound counts
  each chunk's own vision + unpruned prefix, which the shared grid reruns per chunk."""
  chunks = [time_chunk(runner, data, c, reps) for c in chunked(plans, max_live_plans)]
  med = lambda xs: statistics.median(list(xs))
  unpruned = chunks[0]["flops"]["unpruned"]
  rounds = []  # per repetition: (unpruned pass s, decode share, per-plan loop, shared grid, bound) in passes
  for r in range(reps):
    per = [(c["rows"][r], c["flops"]["shared"] / unpruned, len(c["plans"])) for c in chunks]
    loop = sum(row[2] / row[0] for row, _, _ in per)
    grid = sum(row[3] / row[0] for row, _, _ in per)
    # the chunk's prefill FLOPs at that round's unpruned prefill rate + one unpruned decode per plan
    bound = sum((share * row[1] + n * row[4]) / row[0] for row, share, n in per)
    # the same at the padded shapes the programs run (the rate measured on the padded unpruned prefill)
    as_run = sum((c["flops_as_run"]["shared"] / c["flops_as_run"]["unpruned"] * row[1] + n * row[4]) / row[0]
                 for c, (row, _, n) in zip(chunks, per))
    rounds.append((med(row[0] for row, _, _ in per), med(row[4] / row[0] for row, _, _ in per), loop, grid,
                   bound, as_run))
  shared_flops = sum(c["flops"]["shared"] for c in chunks)
  prefill_only = shared_flops / unpruned  # the shared prefill at the unpruned prefill rate, in unpruned prefills
  grid_ratio = med(r[3] for r in rounds)
  return {"name": name, "model": model, "plans": [None if p is None else str(p) for p in plans],
          "n_plans": len(plans), "items": sum(b.size for b in data), "reps": reps,
          "fork_rows": runner.generator.fork_rows, "batch_size": runner.batch_size, "bucket": runner.bucket,
          "padded_share": round(1 - sum(int(b.valid.sum()) for b in data) / sum(b.valid.size for b in data), 3),
          "chunks": [len(c["plans"]) for c in chunks], "max_live_plans": max_live_plans,
          "warmup_and_compile_s": round(sum(c["compile_s"] for c in chunks), 1),
          "identical_answers": not any(c["differences"] for c in chunks),
          "differences": [d for c in chunks for d in c["differences"]],
          "unpruned_pass_s": round(med(r[0] for r in rounds), 4),
          "decode_share_of_unpruned_pass": round(med(r[1] for r in rounds), 3),
          "per_plan": {"ratio": round(med(r[2] for r in rounds), 2),
                       "flops_ratio": round(sum(c["flops"]["per_plan"] for c in chunks) / unpruned, 2)},
          "shared": {"ratio": round(grid_ratio, 2), "flops_ratio": round(prefill_only, 2),
                     "bound": round(med(r[4] for r in rounds), 2),
                     "vs_bound": round(med(r[3] / r[4] for r in rounds), 2),
                     "bound_as_run": round(med(r[5] for r in rounds), 2),
                     "vs_bound_as_run": round(med(r[3] / r[5] for r in rounds), 2),
                     "prefill_only_bound_vs": round(grid_ratio / prefill_only, 2)},
          "speedup": round(med(r[2] / r[3] for r in rounds), 2),
          "flops": {"per_plan": sum(c["flops"]["per_plan"] for c in chunks), "shared": shared_flops,
                    "unpruned": unpruned},
          "timings_s": {"columns": ["unpruned pass", "unpruned prefill", "per-plan loop", "shared grid",
                                    "unpruned decode"],
                        "chunks": [[[round(x, 4) for x in row] for row in c["rows"]] for c in chunks]}}


def markdown(result: dict) -> str:
  lines = ["# Grid sweep: per-plan loop vs shared prefix", "",
           f"{result['machine']}; times in units of one unpruned pass (prefill + greedy decode) over the same items, "
           f"median of {result['grids'][0]['reps']} interleaved repetitions; FLOPs = analytic prefill matmuls. "
           "Plans run in chunks of at most "
           f"{result['grids'][0].get('max_live_plans', MAX_LIVE_PLANS)} compiled at once, as the eval runs them. "
           "Bound = each chunk's shared prefill FLOPs (vision and unpruned prefix rerun per chunk) at the measured "
           "unpruned prefill rate + one unpruned decode per plan, the decode timed alone "
           "(`benchmarks/sweep.py`).", "",
           "| grid | model | bucket | plans | items | per-plan (time / FLOPs) | shared (time / FLOPs) | speedup "
           "| shared bound | shared vs bound | bound as run (padded) | vs it | fused vs grid: answers / kept maps "
           "differing |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for g in result["grids"]:
    diffs, pairs = g.get("differences", []), g["n_plans"] * g["items"]
    answers = sum(not d["tokens_equal"] for d in diffs)
    kept = sum(not d["kept_equal"] for d in diffs)
    lines.append(f"| {g['name']} | {g['model']} | {g.get('bucket', 64)} | {g['n_plans']} | {g['items']} | "
                 f"{g['per_plan']['ratio']} / {g['per_plan']['flops_ratio']} | {g['shared']['ratio']} / "
                 f"{g['shared']['flops_ratio']} | {g['speedup']}x | {g['shared']['bound']} | {g['shared']['vs_bound']} "
                 f"| {g['shared'].get('bound_as_run', '-')} | {g['shared'].get('vs_bound_as_run', '-')} | "
                 f"{answers} / {kept} of {pairs} |")
  lines += ["", "Targets: demo grid >= 3x faster than the per-plan loop; large grid <= 1.3x its analytic bound.", "",
            "Bucket: prompts are padded to a multiple of it (the eval's `--bucket`, default 64). The padding is text "
            "padding, so a pruned continuation carries all of it: at 16 kept visual tokens a scenes prompt is ~31 "
            "real tokens in a 64-token row at bucket 64. The bound counts real tokens; `bound as run` counts the "
            "padded shapes the programs run, so the gap between the two bounds is the padding's cost.", "",
            "Last column: (plan, item) pairs whose generated tokens / kept visual slots differ between the per-plan "
            "loop (each plan through one fused program, `--per-plan`) and the grid. The two split the same ops into "
            "different XLA programs, so float32 values differ by ~1e-7 and a score or logit tie within that noise "
            "can go either way; `differences` in sweep.json lists each with both answers. A plan evaluated alone "
            "by the eval runs the grid path itself and is bit-identical to the same plan in any grid "
            "(tests/test_shared_prefix.py).", ""]
  return "\n".join(lines)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="3 plans, one batch of 8 items, one repetition")
  ap.add_argument("--items", type=int, default=16)
  ap.add_argument("--batch-size", type=int, default=8)
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--max-live-plans", type=int, default=MAX_LIVE_PLANS,
                  help="plans compiled at once (the eval's chunk size); smaller shows the chunked timing on --quick")
  ap.add_argument("--fork-rows", type=int, default=FORK_ROWS,
                  help="rows of one stacked continuation in the grid (plans x batch), as the eval's --fork-rows")
  ap.add_argument("--bucket", type=int, default=64,
                  help="prompt lengths padded to a multiple of this, as the eval's --bucket (default 64, the eval's)")
  ap.add_argument("--out", default=str(ROOT / "evals" / "bench"))
  ap.add_argument("--large-model", default=None,
                  help="model of the large grid (default: llava-scenes, the 12-layer scenes lab model, once shipped)")
  ap.add_argument("--grid", choices=("demo", "large", "both"), default="both",
                  help="which grid(s) to run (each compiles every plan twice: the large one takes longest)")
  args = ap.parse_args(argv)
  if args.max_live_plans < 1:
    ap.error(f"--max-live-plans must be >= 1, got {args.max_live_plans}")
  if args.bucket < 1:
    ap.error(f"--bucket must be >= 1, got {args.bucket}")
  grids = []
  for name in ("demo", "large") if args.grid == "both" else (args.grid,):
    model, task = GRIDS[name]
    if name == "large":
      model = large_model(args.large_model)
    runner = Runner.load(model, dtype=None, max_new_tokens=16, bucket=args.bucket, batch_size=args.batch_size,
                         mesh=None, fork_rows=args.fork_rows)
    data = batches(runner, task, 8 if args.quick else args.items)
    if args.quick:
      plans, label = grid_plans(runner, task, "none,fastv@1,clsattn@0", None, "8"), "quick"
    elif name == "demo":
      demo = parse_args(DEMO_ARGS)
      plans, label = grid_plans(runner, task, demo.method, None, demo.keep), "demo"
    else:
      num_layers = runner.config.num_layers
      layers = ",".join(str(k) for k in sorted({0, 1, num_layers // 2, num_layers - 1}))  # 4 spread layers
      methods = ",".join(["none", *METHODS])  # the oracle bounds too: scenes has relevance masks
      plans, label = grid_plans(runner, task, methods, layers, LARGE_KEEPS), f"large (layers {layers})"
    print(f"{label}: {len(plans)} plans on {model}, {sum(b.size for b in data)} items", flush=True)
    grids.append(run_grid(label, model, runner, data, plans, 1 if args.quick else args.reps, args.max_live_plans))
    if args.quick:
      break
  result = {"machine": f"{jax.device_count()} {jax.default_backend()} device(s)", "grids": grids}
  if args.large_model:
    result["note"] = (f"the large grid ran on --large-model {args.large_model}: see its README.md for what it is")
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  if args.grid != "both" and not args.quick and (out / "sweep.json").exists():  # keep the other grid's result
    earlier = json.loads((out / "sweep.json").read_text()).get("grids", [])
    kept = [g for g in earlier if g["name"].split()[0] != args.grid]
    result["grids"] = sorted(kept + grids, key=lambda g: g["name"] != "demo")
  (out / "sweep.json").write_text(json.dumps(result, indent=1))
  (out / "sweep.md").write_text(markdown(result))
  print(markdown(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
