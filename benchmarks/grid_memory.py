"""Resident memory of a large shared-prefix grid, with and without releasing plan programs between chunks.

    python benchmarks/grid_memory.py                      # 31 plans on a random 12-layer LLaVA, chunks of 8
    python benchmarks/grid_memory.py --layers 1,8 --cap 4  # quicker

jax keeps every compiled program for the life of its `jit`, and a grid compiles one fork program per plan, so a
125-plan grid on a 12-layer model once ran out of memory. The eval now runs its plans in chunks of at most
`max_live_plans`, sorted by first prune layer, and calls `Generator.release_plan_programs` between chunks
(jaxprune.eval.loop.evaluate_task). This script measures what that bounds, on one batch:

  kept      chunks of --cap plans, every program kept (what accumulates without the release)
  released  the same chunks with `release_plan_programs` between them, as the eval runs them

Each mode runs in a fresh process (peak RSS is per process) and reports resident memory growth over the state
after the model is built and the vision side compiled (VmHWM: peak, VmRSS: at the end, from /proc/self/status),
the RSS after each chunk, traces (`Generator.compiles`) and the executables alive at the end. Both modes must
generate the same tokens. The model is random and tiny (hidden 64): the programs, not the weights, hold memory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxprune.eval.loop import Job, plan_chunks  # noqa: E402
from jaxprune.generate import Generator, pad_batch  # noqa: E402
from jaxprune.models.config import TextConfig  # noqa: E402
from jaxprune.models.llava import Llava, LlavaConfig, VisionConfig  # noqa: E402
from jaxprune.prune.pipeline import Pruner  # noqa: E402
from jaxprune.sharding import to_host  # noqa: E402

VOCAB, IMAGE_TOKEN = 64, 63
METHODS = ("fastv", "latesim", "clsattn", "random", "uniform")  # methods that prune at any layer >= 1


def model_config(layers: int) -> LlavaConfig:
  """A 12-layer (by default) LLaVA with 64 visual tokens (32x32 image, patch 4); every width tiny."""
  text = TextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_layers=layers, num_heads=4,
                    num_kv_heads=2, head_dim=16, rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=512,
                    bos_token_id=1, eos_token_id=2, pad_token_id=0)
  vision = VisionConfig(hidden_size=32, intermediate_size=64, num_layers=3, num_heads=4, image_size=32, patch_size=4,
                        layer_norm_eps=1e-5, hidden_act="quick_gelu")
  return LlavaConfig(text=text, vision=vision, image_token_id=IMAGE_TOKEN)


def plan_texts(layers: list[int], keeps: list[int]) -> list[str]:
  """Every method x layer x keep, and the baseline."""
  return [f"{m}@{layer}:{keep}" for m in METHODS for layer in layers for keep in keeps] + ["none"]


def one_batch(cfg: LlavaConfig, size: int):
  """`size` prompts (bos, text, the image's placeholders, a question), left-padded to one bucket."""
  nv, rng = cfg.visual_tokens_per_image, np.random.RandomState(0)
  prompts, spans = [], []
  for i in range(size):
    before, after = 2 + i, 6 + 2 * i
    prompts.append([1] + rng.randint(3, IMAGE_TOKEN, before).tolist() + [IMAGE_TOKEN] * nv
                   + rng.randint(3, IMAGE_TOKEN, after).tolist())
    spans.append((1 + before + nv, 1 + before + nv + after))
  pixels = rng.randn(size, 3, cfg.vision.image_size, cfg.vision.image_size).astype(np.float32)
  return pad_batch(prompts, pad_id=0, multiple=16, query_spans=spans, pixels=pixels)


def memory_mib() -> dict[str, float]:
  status = Path("/proc/self/status").read_text()
  return {key: int(re.search(rf"{key}:\s+(\d+) kB", status).group(1)) / 1024 for key in ("VmRSS", "VmHWM")}


def child(mode: str, layers: list[int], keeps: list[int], cap: int, depth: int, batch_size: int) -> dict:
  """One mode in this process -> its measurements."""
  cfg = model_config(depth)
  gen = Generator(Llava(cfg, dtype=jnp.float32, rngs=nnx.Rngs(0)), max_new_tokens=4, eos_ids=(2,), pad_id=0)
  batch = one_batch(cfg, batch_size)
  texts = plan_texts(layers, keeps)
  pruners = [None if t == "none" else Pruner.build(t, cfg) for t in texts]
  jobs = [Job(pruner and pruner.plan, t, pruner, set(), 0) for t, pruner in zip(texts, pruners)]  # as the eval's
  start = gen.programs.start
  jax.block_until_ready(start(gen.state, batch))  # the shared vision side, compiled before the baseline is read
  base, compiles, t0 = memory_mib()["VmRSS"], gen.compiles, time.perf_counter()
  tokens, after_chunk = {}, []
  for n, chunk in enumerate(plan_chunks(jobs, cap)):
    if n and mode == "released":
      gen.release_plan_programs()
    for job, out in zip(chunk, gen.grid(batch, [job.pruner for job in chunk])):
      tokens[job.config] = to_host(out["tokens"])
    after_chunk.append(round(memory_mib()["VmRSS"] - base))
  end, (live_forks, live_decodes) = memory_mib(), gen.plan_programs()
  digest = hashlib.sha256(b"".join(tokens[t].tobytes() for t in texts)).hexdigest()[:16]
  return {"mode": mode, "plans": len(texts), "chunks": len(after_chunk), "seconds": round(time.perf_counter() - t0),
          "peak_growth_mib": round(end["VmHWM"] - base), "end_growth_mib": round(end["VmRSS"] - base),
          "rss_growth_after_chunk_mib": after_chunk, "traces": gen.compiles - compiles,
          "live_forks": live_forks, "live_decodes": live_decodes, "tokens_sha": digest}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--depth", type=int, default=12, help="decoder layers")
  p.add_argument("--layers", default="2,6,10", help="first prune layers of the grid")
  p.add_argument("--keeps", default="8,24", help="visual tokens kept (of 64)")
  p.add_argument("--cap", type=int, default=8, help="plans per chunk (max_live_plans)")
  p.add_argument("--batch-size", type=int, default=2)
  p.add_argument("--child", choices=("kept", "released"), help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  layers, keeps = [int(x) for x in args.layers.split(",")], [int(x) for x in args.keeps.split(",")]
  if args.child:
    print(json.dumps(child(args.child, layers, keeps, args.cap, args.depth, args.batch_size)))
    return
  results = {}
  for mode in ("kept", "released"):
    done = subprocess.run([sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--child", mode],
                          capture_output=True, text=True)
    if done.returncode:
      raise SystemExit(f"grid_memory.py: the {mode} run failed:\n{done.stderr[-3000:]}")
    results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
  kept, released = results["kept"], results["released"]
  print(f"grid: {kept['plans']} plans ({len(METHODS)} methods x layers {args.layers} x keeps {args.keeps} + none) on "
        f"a random {args.depth}-layer LLaVA, batch {args.batch_size}, {kept['chunks']} chunks of <= {args.cap}, "
        f"jax {jax.__version__} on {jax.default_backend()}")
  print(f"{'mode':<9} {'peak MiB':>9} {'end MiB':>8} {'traces':>7} {'live forks':>11} {'live decodes':>13} {'s':>5}  "
        f"RSS growth after each chunk (MiB)")
  for r in (kept, released):
    print(f"{r['mode']:<9} {r['peak_growth_mib']:>9} {r['end_growth_mib']:>8} {r['traces']:>7} {r['live_forks']:>11} "
          f"{r['live_decodes']:>13} {r['seconds']:>5}  {r['rss_growth_after_chunk_mib']}")
  same = kept["tokens_sha"] == released["tokens_sha"]
  print(f"same tokens in both modes: {same}")
  if not same:
    raise SystemExit(1)


if __name__ == "__main__":
  main()
