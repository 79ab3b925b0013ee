"""What a where-to-prune study costs, split into compile, device execute and host time, against its FLOPs bound.

    python benchmarks/study_cost.py                       # the scenes study's sweep (301 plans) on 128 items
    python benchmarks/study_cost.py --fork-rows 64        # the same with the eval's default: one plan per program
    python benchmarks/study_cost.py --limit 0             # every item: the committed study's sweep (~1400)
    python benchmarks/study_cost.py --out evals/bench/study_cost_after.json

It runs the sweep stage exactly as `python -m jaxprune.study` does (the committed scenes study's layers,
budgets, methods and `random` seeds; blind-filtered items; the eval's shared-prefix grid in chunks) in this
process, with three meters:
- compile: jax's own compile events (tracing, lowering, XLA backend compile), summed;
- device execute: time inside the generator's calls (each output blocked on), minus the compiles inside them;
- host: the rest of the wall time (data, host-side batches, scoring, records, analysis of none of it).
The FLOPs bound is the sweep's analytic prefill FLOPs (every plan x item, `jaxprune/cost.py`, as the records
carry them) at the XLA float32 matmul rate measured in the same process: the time the grid would take if every
prefill FLOP ran at matmul speed and decode, compile and host cost nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxprune import eval as jeval  # noqa: E402
from jaxprune.generate import Generator  # noqa: E402
from jaxprune.study import cli as study_cli  # noqa: E402
from jaxprune.study.run import plan_study  # noqa: E402

# The committed scenes study (evals/scenes/run.sh); --fork-rows is set from the flag below
SCENES = ["--model", "llava-scenes", "--tasks", "scenes", "--batch-size", "64", "--max-new-tokens", "4",
          "--layer", "0,1,2,4,6,8,10,11", "--keep", "4,8,16,32", "--seeds", "0,1,2"]
COMPILE_EVENTS = ("/jax/core/compile/backend_compile_duration", "/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration")


class Meters:
  """Compile seconds from jax's events; device seconds from the generator's calls (compiles inside removed)."""

  def __init__(self):
    self.compile = self.device = 0.0
    self.compiles = 0
    jax.monitoring.register_event_duration_secs_listener(self._event)
    for name in ("grid", "__call__"):
      setattr(Generator, name, self._timed(getattr(Generator, name)))

  def _event(self, event: str, seconds: float, **_) -> None:
    if event in COMPILE_EVENTS:
      self.compile += seconds
      self.compiles += event == COMPILE_EVENTS[0]

  def _timed(self, method):
    meters = self

    def timed(*args, **kwargs):
      compile_before, start = meters.compile, time.perf_counter()
      out = jax.block_until_ready(method(*args, **kwargs))
      meters.device += time.perf_counter() - start - (meters.compile - compile_before)
      return out
    return timed


def matmul_flops_per_second(n: int = 1024, rounds: int = 5) -> float:
  """XLA's float32 n x n matmul rate on this machine, best of `rounds`."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = min(_time(lambda: f(a).block_until_ready()) for _ in range(rounds))
  return 2 * n ** 3 / best


def _time(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--limit", type=int, default=128, help="items of the test split before blind filtering (0: all)")
  p.add_argument("--work", default=None, help="the study directory (default: a temporary one, removed after)")
  p.add_argument("--out", default=None, help="write the numbers as JSON here")
  p.add_argument("--fork-rows", type=int, default=640, help="rows per stacked continuation (run.sh: 640, ten plans; "
                 "the eval's default 64 is one plan per program at batch 64)")
  args = p.parse_args(argv)
  work = Path(args.work or tempfile.mkdtemp(prefix="study_cost_"))
  flags = SCENES + (["--limit", str(args.limit)] if args.limit else []) + ["--output-path", str(work)]
  flags += ["--fork-rows", str(args.fork_rows)]
  study = study_cli.parse_args(flags)
  plan = plan_study(study)
  shared = study_cli.stage_argv(study)
  for stage, extra in (("full", ["--method", "none"]), ("blind", ["--blind"])):  # not metered: the sweep is
    assert jeval.main([*shared, *extra, "--output-path", str(work / stage)]) == 0
  meters = Meters()
  rate = matmul_flops_per_second()
  start = time.perf_counter()
  code = jeval.main([*shared, "--drop-blind", str(work / "blind" / "blind_correct.json"), "--method",
                     ",".join(["none", *plan["plans"]]), "--output-path", str(work / "sweep")])
  wall = time.perf_counter() - start
  assert code == 0
  records = [json.loads(line) for line in (work / "sweep" / "samples.jsonl").read_text().splitlines()]
  flops = float(sum(r["flops"] for r in records if not r.get("failed")))
  items = len({r["id"] for r in records})
  result = {"fork_rows": study.eval.fork_rows, "plans": len(plan["plans"]) + 1, "items": items, "pairs": len(records), "wall_s": wall,
            "compile_s": meters.compile, "backend_compiles": meters.compiles, "device_s": meters.device,
            "host_s": wall - meters.compile - meters.device, "prefill_flops": flops,
            "matmul_flops_per_s": rate, "flops_bound_s": flops / rate, "wall_vs_bound": wall * rate / flops,
            "device_vs_bound": meters.device * rate / flops, "cpu_count": os.cpu_count(),
            "load_before": os.getloadavg()[0], "jax": jax.__version__}
  print(json.dumps(result, indent=1))
  if args.out:
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
  if args.work is None:
    shutil.rmtree(work)
  return 0


if __name__ == "__main__":
  sys.exit(main())
