"""CPU attention: jaxprune's query-blocked `attend` vs one `jax.nn.dot_product_attention` call vs torch sdpa.

    python benchmarks/attention_cpu.py [--runs 15] [--out evals/bench/attention_cpu.json]

Timings are interleaved (A, B, C, A, B, C, ...) so machine noise hits all three alike; the printed ratios are
medians of one run, and the JSON keeps each path's min/median/max beside them. Outputs are checked equal (<= 1e-4 on every row that has a visible key) before timing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # one command from a checkout, installed or not
from jaxprune.models.attention import QUERY_BLOCK, attend

# name: (B, T, H, G, Dh, causal+left padding)
CASES = {
    "decoder prefill, cpu-small (576 visual + 64 text)": (4, 640, 9, 3, 64, True),
    "vision tower, CLIP-B/14 at 336px": (4, 577, 12, 12, 64, False),
    "vision tower, easy-VQA model (eval batch)": (64, 257, 4, 4, 24, False),
}
PADDING = 20  # left-padding tokens of the first sequence in causal cases


def inputs(b, t, h, g, dh, causal, rng):
  q = jnp.asarray(rng.standard_normal((b, t, h, dh)), jnp.float32)
  k, v = (jnp.asarray(rng.standard_normal((b, t, g, dh)), jnp.float32) for _ in range(2))
  if not causal:
    return q, k, v, None, np.ones((b, t), bool)
  valid = np.ones((b, t), bool)
  valid[0, :PADDING] = False
  mask = jnp.asarray(np.tril(np.ones((t, t), bool))[None, None] & valid[:, None, None, :])  # [B, 1, T, T]
  return q, k, v, mask, valid


def run_case(name, shape, runs, rng):
  import torch
  b, t, h, g, dh, causal = shape
  q, k, v, mask, rows = inputs(b, t, h, g, dh, causal, rng)
  fns = {
      "jax.nn.dot_product_attention": jax.jit(lambda q, k, v, m: jax.nn.dot_product_attention(q, k, v, mask=m)),
      "jaxprune attend (blocked)": jax.jit(lambda q, k, v, m: attend(q, k, v, m, causal_prefix=causal,
                                                                     block=QUERY_BLOCK)),
  }
  outs = {n: np.asarray(f(q, k, v, mask)) for n, f in fns.items()}
  diff = float(np.abs(outs["jaxprune attend (blocked)"] - outs["jax.nn.dot_product_attention"])[rows].max())
  if diff > 1e-4:
    raise SystemExit(f"{name}: blocked attention differs from jax.nn.dot_product_attention by {diff:.2e}")
  tq, tk, tv = (torch.as_tensor(np.asarray(a)).transpose(1, 2).contiguous() for a in (q, k, v))
  tmask = None if mask is None else torch.as_tensor(np.asarray(mask))
  torch_fn = lambda: torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tmask,
                                                                       enable_gqa=g != h)
  times = {n: [] for n in [*fns, "torch sdpa"]}
  with torch.inference_mode():
    torch_fn()
    for _ in range(runs):
      for n, f in fns.items():
        start = time.perf_counter()
        jax.block_until_ready(f(q, k, v, mask))
        times[n].append((time.perf_counter() - start) * 1e3)
      start = time.perf_counter()
      torch_fn()
      times["torch sdpa"].append((time.perf_counter() - start) * 1e3)
  ms = {n: statistics.median(x) for n, x in times.items()}
  spread = {n: {"min": min(x), "median": statistics.median(x), "max": max(x)} for n, x in times.items()}
  return {"case": name, "shape": dict(zip("B T H G Dh causal".split(), shape)), "median_ms": ms, "spread_ms": spread,
          "max_abs_diff": diff,
          "blocked_speedup_vs_single_call": ms["jax.nn.dot_product_attention"] / ms["jaxprune attend (blocked)"],
          "blocked_speed_vs_torch": ms["torch sdpa"] / ms["jaxprune attend (blocked)"]}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--runs", type=int, default=15)
  p.add_argument("--out", default="evals/bench/attention_cpu.json")
  args = p.parse_args()
  if jax.default_backend() != "cpu":
    raise SystemExit(f"this benchmark is for CPU; jax's default backend is {jax.default_backend()}")
  rng = np.random.default_rng(0)
  rows = [run_case(name, shape, args.runs, rng) for name, shape in CASES.items()]
  print(f"{'case':<52}{'single call':>12}{'blocked':>10}{'torch':>10}{'blocked/single':>16}{'vs torch':>10}")
  for r in rows:
    ms = r["median_ms"]
    print(f"{r['case']:<52}{ms['jax.nn.dot_product_attention']:>10.1f}ms{ms['jaxprune attend (blocked)']:>8.1f}ms"
          f"{ms['torch sdpa']:>8.1f}ms{r['blocked_speedup_vs_single_call']:>15.2f}x{r['blocked_speed_vs_torch']:>9.2f}x")
  import torch
  meta = {"date": datetime.date.today().isoformat(), "loadavg_1min": os.getloadavg()[0],
          "machine": f"{platform.machine()}, {jax.device_count()} cpu device(s), {os.cpu_count()} cores", "jax": jax.__version__, "torch": torch.__version__,
          "torch_threads": torch.get_num_threads(), "runs": args.runs, "query_block": QUERY_BLOCK}
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
