"""The prepared GPU check: LLaVA-1.5-7B shape, random bf16 weights, jaxprune vs transformers SDPA, one command.

    bash benchmarks/gpu_check.sh              # a GPU box (H100/H200): < 8 min, writes evals/bench/gpu_check.{json,md}
    bash benchmarks/gpu_check.sh --dry-run    # any CPU: tiny widths, same code paths, writes out/gpu_check_dryrun/

What it measures (each sub-benchmark is timed alone, after a compile/warm-up call; min/median/max of `--runs`):
- env: python/jax/jaxlib/flax/torch/transformers versions, devices, cuDNN, which Pallas kernels import.
- jax: the measured bf16 matmul peak (8192^2 jitted matmul); jaxprune prefill (vision tower + projector + decoder,
  last-position logits, KV cache) at batch 8 and 1, unpruned and with latesim@2 / fastv@2 / visionzip@0 at
  keep 64 and 144 (batch 8); greedy decode (`--decode-steps` cached steps) at batch 1 and 8; the attention
  implementations (XLA, cuDNN via `jax.nn.dot_product_attention`, the Pallas Triton flash kernel) alone at the
  decoder's prefill shape, then the whole unpruned prefill with each while the budget lasts.
- torch: transformers `LlavaForConditionalGeneration` from the same config, random bf16 weights on cuda,
  `attn_implementation="sdpa"`: prefill (`logits_to_keep=1`, cache on) and a manual cached greedy decode loop
  at batch 1 and 8. Weights differ from jaxprune's (both random): same shapes and FLOPs, so a speed comparison;
  numerical parity is tested elsewhere (tests/families/test_conformance.py).
- report: targets — unpruned prefill >= 1.3x transformers SDPA at batch 8; prefill MFU >= 55% at batch 8 against
  the measured matmul peak; pruned speedup >= 0.85x the analytic FLOPs ratio (`jaxprune.cost.prefill_flops`).

Robust by construction (it may be the only GPU run for weeks): each stage is its own process (jax and torch never
share the GPU's memory; a crash loses one stage), killed at its share of the time budget; inside a stage every
sub-benchmark records its failure (type, message) and the run goes on; a sub-benchmark that would not fit the
time left is skipped with that reason; the stage's JSON is rewritten after every sub-benchmark, so a killed stage
keeps what it measured. Qwen2.5-VL's 7B shape is listed as skipped until the registry has it.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.85")

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # one command from a checkout, installed or not

BUDGET_S = 450  # whole run; the limit is 8 minutes
STAGE_SHARE = {"env": 0.08, "jax": 0.6, "torch": 0.28}  # of the budget; report takes seconds
PLANS = [f"{m}@{k}:{keep}" for keep in (64, 144) for m, k in (("latesim", 2), ("fastv", 2), ("visionzip", 0))]
NUM_TEXT = (36, 44)  # text tokens per prompt: 576 visual + ~40 text, bucketed to L = 640
BUCKET = 64
# --quick (the CI test): the sub-benchmarks that keep every stage's code path alive, nothing repeated
QUICK = {"versions", "jax_devices", "torch_devices", "qwen2_5_vl_lookup", "matmul_peak", "init_random_weights",
         "prefill_b8_none", f"prefill_b8_{PLANS[0]}", "attention_xla", "attention_pallas", "prefill_b8"}
TARGETS = {"prefill_vs_torch_b8": 1.3, "mfu_b8": 0.55, "bound_efficiency": 0.85}


# ------------------------------------------------------------------------------------------ shared helpers


class Deadline:
  def __init__(self, seconds: float):
    self.end = time.monotonic() + seconds

  def left(self) -> float:
    return self.end - time.monotonic()


class Record:
  """One stage's results: sub-benchmarks by name, rewritten to disk after each so a killed stage keeps them."""

  def __init__(self, path: Path, stage: str, meta: dict, only: set[str] | None = None):
    self.path, self.data = path, {"stage": stage, "meta": meta, "results": {}, "skipped": {}, "failed": {}}
    self.only = only
    self.save()

  def save(self) -> None:
    tmp = self.path.with_suffix(".tmp")
    tmp.write_text(json.dumps(self.data, indent=1, default=str))
    tmp.replace(self.path)

  def run(self, name: str, fn: Callable[[], dict], deadline: Deadline, need_s: float) -> dict | None:
    """Run one sub-benchmark unless under `need_s` seconds are left; record its result, skip or failure."""
    if self.only is not None and name not in self.only:
      self.skip(name, "--quick")
      return None
    if deadline.left() < need_s:
      self.data["skipped"][name] = f"time budget: {deadline.left():.0f} s left, needs ~{need_s:.0f} s"
      self.save()
      return None
    start = time.monotonic()
    try:
      out = fn()
      self.data["results"][name] = {**out, "wall_s": round(time.monotonic() - start, 1)}
    except Exception as e:  # recorded, never fatal: the next sub-benchmark still runs
      self.data["failed"][name] = {"error": f"{type(e).__name__}: {str(e)[:800]}",
                                   "traceback": traceback.format_exc()[-3000:]}
      out = None
    print(f"[{self.data['stage']}] {name}: {'ok' if out is not None else 'FAILED'} "
          f"({time.monotonic() - start:.1f} s, {deadline.left():.0f} s left)", flush=True)
    self.save()
    return out

  def skip(self, name: str, reason: str) -> None:
    self.data["skipped"][name] = reason
    self.save()


def spread(times_ms: list[float]) -> dict:
  return {"min_ms": min(times_ms), "median_ms": statistics.median(times_ms), "max_ms": max(times_ms),
          "runs_ms": [round(t, 3) for t in times_ms]}


def time_calls(call: Callable[[], Any], sync: Callable[[Any], Any], runs: int) -> dict:
  """First call (compile + run), one more warm-up, then `runs` timed calls, each synchronised."""
  start = time.perf_counter()
  sync(call())
  first_s = time.perf_counter() - start
  sync(call())
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    sync(call())
    times.append((time.perf_counter() - start) * 1e3)
  return {"first_call_s": first_s, **spread(times)}


def version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def model_config(dry_run: bool):
  """LLaVA-1.5-7B's shape; the dry run keeps its sequence (576 visual tokens, L = 640) at tiny widths."""
  from jaxprune.models import registry
  cfg = registry.LLAVA_15_7B
  if not dry_run:
    return cfg
  text = dataclasses.replace(cfg.text, hidden_size=64, intermediate_size=128, num_layers=3, num_heads=4,
                             num_kv_heads=4, head_dim=16)
  vision = dataclasses.replace(cfg.vision, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2,
                               image_size=224)  # 256 visual tokens: keep 64 and 144 still prune
  return dataclasses.replace(cfg, text=text, vision=vision)


def plans(dry_run: bool) -> list[str]:
  """Every method x keep; the dry run takes one (the same code path, a sixth of the compiles)."""
  return PLANS[:1] if dry_run else PLANS


def make_batch(cfg, batch: int, seed: int = 0):
  """bos + system tokens, the image placeholders, a question; lengths differ so left padding is real."""
  from jaxprune.generate import pad_batch
  rng = np.random.RandomState(seed)
  nv = (cfg.vision.image_size // cfg.vision.patch_size) ** 2
  high = min(cfg.text.vocab_size, cfg.image_token_id)
  prompts, spans = [], []
  for _ in range(batch):
    n_text = rng.randint(NUM_TEXT[0], NUM_TEXT[1] + 1)
    before = [1] + rng.randint(3, high, 4).tolist()
    question = rng.randint(3, high, n_text - len(before)).tolist()
    prompts.append(before + [cfg.image_token_id] * nv + question)
    spans.append((len(before) + nv, len(before) + nv + len(question)))
  side = cfg.vision.image_size
  pixels = rng.randn(batch, 3, side, side).astype(np.float32)
  return pad_batch(prompts, pad_id=cfg.text.pad_token_id or 0, multiple=BUCKET, query_spans=spans, pixels=pixels)


# ------------------------------------------------------------------------------------------ stages


def stage_env(args, record: Record, deadline: Deadline) -> None:
  def versions():
    out = {p: version(p) for p in ("jax", "jaxlib", "flax", "torch", "transformers", "numpy")}
    out["python"] = platform.python_version()
    for p in ("jax-cuda13-plugin", "jax-cuda12-plugin", "jax-cuda13-pjrt", "jax-cuda12-pjrt"):
      if version(p):
        out[p] = version(p)
    return out
  record.run("versions", versions, deadline, 0)

  def jax_devices():
    import jax
    devices = jax.devices()
    out = {"backend": jax.default_backend(), "devices": [str(d) for d in devices],
           "device_kind": devices[0].device_kind, "count": len(devices)}
    try:
      from jax._src.lib import cuda_versions
      out["cudnn"] = cuda_versions.cudnn_get_version() if cuda_versions else None
    except Exception as e:
      out["cudnn"] = f"unknown ({type(e).__name__})"
    from jaxprune.models import attention
    out["pallas_kernels"] = {k: v or "available" for k, v in attention.pallas_kernels().items()}
    return out
  record.run("jax_devices", jax_devices, deadline, 0)

  def torch_devices():
    import torch
    out = {"cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda}
    if torch.cuda.is_available():
      out.update(name=torch.cuda.get_device_name(), capability=list(torch.cuda.get_device_capability()),
                 cudnn=torch.backends.cudnn.version())
    return out
  record.run("torch_devices", torch_devices, deadline, 0)

  def qwen_shape():
    from jaxprune.models import registry
    names = [n for n in getattr(registry, "SHAPES", {}) if "qwen" in n.lower() and "7b" in n.lower()]
    reason = (f"{names[0]} is in the registry, but this script builds LLaVA inputs only: add its prompt builder"
              if names else "Qwen2.5-VL 7B is not in jaxprune.models.registry.SHAPES yet")
    record.skip("qwen2_5_vl_7b", reason)
    return {"registry_names": names}
  record.run("qwen2_5_vl_lookup", qwen_shape, deadline, 0)


def stage_jax(args, record: Record, deadline: Deadline) -> None:
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from jaxprune import cost
  from jaxprune.generate import greedy_decode, prefill
  from jaxprune.models import attention
  from jaxprune.models.llava import Llava
  from jaxprune.prune.pipeline import Pruner

  dtype = jnp.dtype(args.dtype)
  cfg = model_config(args.dry_run)
  sync = jax.block_until_ready
  if not args.dry_run:  # a rerun on the same box skips the 7B compiles
    jax.config.update("jax_compilation_cache_dir", "/tmp/jaxprune_gpu_check_cache")

  def peak():
    n = 8192 if not args.dry_run else 512
    a = jnp.asarray(np.random.RandomState(0).randn(n, n), dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    t = time_calls(lambda: matmul(a, a), sync, args.runs)
    return {**t, "n": n, "dtype": args.dtype, "tflops": 2 * n ** 3 / (t["median_ms"] / 1e3) / 1e12}
  peak_out = record.run("matmul_peak", peak, deadline, 10)

  def build():
    start = time.perf_counter()
    make = lambda: Llava(cfg, dtype=dtype, rngs=nnx.Rngs(0))
    graphdef = nnx.graphdef(nnx.eval_shape(make))
    state = sync(jax.jit(lambda: nnx.state(make()))())  # one compiled init: no per-op dispatch, no fp32 copy
    return {"graphdef": graphdef, "state": state, "init_s": time.perf_counter() - start,
            "weight_bytes": sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))}
  built: dict = {}
  out = record.run("init_random_weights", lambda: (built.update(build()) or
                                                   {k: built[k] for k in ("init_s", "weight_bytes")}), deadline, 30)
  if out is None:
    return
  graphdef, state = built["graphdef"], built["state"]
  batches = {b: make_batch(cfg, b) for b in (8, 1)}
  record.data["meta"].update(bucketed_length=int(batches[8].ids.shape[1]),
                             prompt_lengths_b8=batches[8].valid.sum(1).tolist(), dtype=args.dtype,
                             decoder_layers=cfg.text.num_layers, hidden_size=cfg.text.hidden_size)

  def arrays(b):
    batch = batches[b]
    return tuple(jax.device_put(x) for x in (batch.ids, batch.valid, batch.pixels, batch.query))

  compiled_prefill: dict[str, Callable] = {}

  def prefill_fn(label="auto"):  # one jit per attention choice: the choice is read while tracing
    def run(state, ids, valid, pixels, query, pruner):
      model = nnx.merge(graphdef, state)
      first, cache, _, _ = prefill(model, (ids, valid, pixels, query), extra_slots=args.decode_steps,
                                   prune_points_fn=pruner)
      return first, cache
    return compiled_prefill.setdefault(label, jax.jit(run, static_argnums=5))

  def time_prefill(b, plan=None, label=None):
    pruner = Pruner.build(plan, cfg) if plan else None
    stages = [(s.layer, s.keep) for s in pruner.plan.stages] if pruner else []
    length = batches[b].ids.shape[1]
    fn, inputs = prefill_fn(label or "auto"), arrays(b)
    t = time_calls(lambda: fn(state, *inputs, pruner), sync, args.runs)
    flops = cost.prefill_flops(cfg, length, stages, batch=b)
    out = {**t, "batch": b, "plan": plan or "none", "attention": label or "auto", "flops": flops,
           "tflops": flops / (t["median_ms"] / 1e3) / 1e12}
    if peak_out:
      out["mfu"] = out["tflops"] / peak_out["tflops"]
    return out

  # ---- attention implementations alone at the decoder's prefill shape (seconds: before the long compiles)
  text = cfg.text
  b8 = batches[8]
  t_len = -(-b8.ids.shape[1] // 128) * 128  # L = 640 on the real shape; more left padding if L is no 128-multiple
  pad = t_len - b8.ids.shape[1]
  n = 1 if args.dry_run else 8  # dry run: Pallas interprets on CPU, one grid step at a time
  valid = np.pad(b8.valid[:n], ((0, 0), (pad, 0)))  # [n, T]
  rng = np.random.RandomState(1)
  q = jnp.asarray(rng.randn(n, t_len, text.num_heads, text.head_dim), dtype)
  k, v = (jnp.asarray(rng.randn(n, t_len, text.num_kv_heads, text.head_dim), dtype) for _ in range(2))
  mask = jnp.asarray(np.tril(np.ones((t_len, t_len), bool))[None, None] & valid[:, None, None, :])
  on_gpu = jax.default_backend() == "gpu"
  kernels = ["xla", "cudnn", "pallas"] if on_gpu else ["xla", "blocked", "pallas"]
  if not on_gpu:
    record.skip("attention_cudnn", "cuDNN needs a GPU (dry run)")
  reference: list[np.ndarray] = []

  def time_attention(name):
    if not reference:  # jax.nn.dot_product_attention's XLA path: what every kernel must equal
      xla = jax.jit(lambda q, k, v, m: jax.nn.dot_product_attention(q, k, v, mask=m, implementation="xla"))
      reference.append(np.asarray(xla(q, k, v, mask), np.float32))
    attention.set_implementation(name)
    try:
      fn = jax.jit(lambda q, k, v, m: attention.attend(q, k, v, m, causal_prefix=True))
      path = attention.choose(q, k, mask, causal_prefix=True)
      last = {}

      def call():  # keeps the last output to check (a separate checking call costs minutes when interpreted)
        last["out"] = fn(q, k, v, mask)
        return last["out"]
      t = time_calls(call, sync, args.runs)
      got = np.asarray(last["out"], np.float32)
    finally:
      attention.set_implementation("auto")
    # rows with a visible key; padding rows differ by design (attention.py)
    return {**t, "path": path, "max_abs_diff_vs_xla": float(np.abs(got - reference[0])[valid].max()),
            "shape": [n, t_len, text.num_heads, text.num_kv_heads, text.head_dim]}
  for name in kernels:
    record.run(f"attention_{name}", lambda name=name: time_attention(name), deadline, 10)

  compile_need = 15 if args.dry_run else 60

  def time_pruned(plan):
    out = time_prefill(8, plan)
    if base:  # achieved speedup over unpruned, against the analytic FLOPs ratio
      out.update(speedup=base["median_ms"] / out["median_ms"], flops_ratio=base["flops"] / out["flops"])
      out["bound_efficiency"] = out["speedup"] / out["flops_ratio"]
    return out
  base = record.run("prefill_b8_none", lambda: time_prefill(8), deadline, compile_need)
  for plan in plans(args.dry_run):
    record.run(f"prefill_b8_{plan}", lambda plan=plan: time_pruned(plan), deadline, compile_need)
  record.run("prefill_b1_none", lambda: time_prefill(1), deadline, compile_need)

  def time_decode(b):
    fn, inputs = prefill_fn(), arrays(b)
    first, cache = sync(fn(state, *inputs, None))
    decode = jax.jit(lambda state, first, cache: greedy_decode(
        nnx.merge(graphdef, state).language_model, first, cache, max_new_tokens=args.decode_steps + 1, eos_ids=(),
        pad_id=0, keep_logits=False)[0])
    t = time_calls(lambda: decode(state, first, cache), sync, args.runs)
    return {**t, "batch": b, "steps": args.decode_steps, "ms_per_step": t["median_ms"] / args.decode_steps}
  for b in (1, 8):
    record.run(f"decode_b{b}", lambda b=b: time_decode(b), deadline, 2 * compile_need)

  def prefill_with(name):
    attention.set_implementation(name)
    try:
      return time_prefill(8, label=name)
    finally:
      attention.set_implementation("auto")

  # ---- the whole unpruned prefill with each attention implementation, while the budget lasts
  for name in list(kernels)[:1] if args.dry_run else kernels:  # dry run: one (Pallas interprets slowly on CPU)
    record.run(f"prefill_b8_attention_{name}", lambda name=name: prefill_with(name), deadline, compile_need)


def stage_torch(args, record: Record, deadline: Deadline) -> None:
  import torch
  from transformers import LlavaConfig as HFLlavaConfig
  from transformers import LlavaForConditionalGeneration

  cfg = model_config(args.dry_run)
  on_gpu = torch.cuda.is_available()
  device = "cuda" if on_gpu else "cpu"
  sync = (lambda _: torch.cuda.synchronize()) if on_gpu else (lambda _: None)
  tdtype = getattr(torch, args.dtype)

  def build():
    t, vis = cfg.text, cfg.vision
    nv = (vis.image_size // vis.patch_size) ** 2
    hf_cfg = HFLlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=vis.hidden_size,
                           intermediate_size=vis.intermediate_size, num_hidden_layers=vis.num_layers,
                           num_attention_heads=vis.num_heads, image_size=vis.image_size, patch_size=vis.patch_size),
        text_config=dict(model_type="llama", vocab_size=t.vocab_size, hidden_size=t.hidden_size,
                         intermediate_size=t.intermediate_size, num_hidden_layers=t.num_layers,
                         num_attention_heads=t.num_heads, num_key_value_heads=t.num_kv_heads, head_dim=t.head_dim,
                         rms_norm_eps=t.rms_norm_eps, rope_theta=t.rope_theta,
                         max_position_embeddings=t.max_position_embeddings, pad_token_id=0),
        image_token_index=cfg.image_token_id, image_seq_length=nv, tie_word_embeddings=False)
    start = time.perf_counter()
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(tdtype)  # init straight in bf16 on the device: a 7B never sees fp32
    try:
      with torch.device(device):
        model = LlavaForConditionalGeneration(hf_cfg)
    finally:
      torch.set_default_dtype(default)
    model.set_attn_implementation("sdpa")
    built["model"] = model.eval()
    return {"init_s": time.perf_counter() - start, "attn": model.config.text_config._attn_implementation}
  built: dict = {}
  if record.run("init_random_weights", build, deadline, 30) is None:
    return
  hf = built["model"]

  def tensors(b):
    batch = make_batch(cfg, b)
    ids = torch.as_tensor(batch.ids, dtype=torch.long, device=device)
    mask = torch.as_tensor(batch.valid, dtype=torch.long, device=device)
    pos = (mask.cumsum(1) - 1).clamp(min=0)  # left padding numbered as jaxprune and HF generate do
    pixels = torch.as_tensor(batch.pixels, device=device).to(tdtype)
    return ids, mask, pos, pixels

  @torch.inference_mode()
  def run_prefill(ids, mask, pos, pixels):
    out = hf(input_ids=ids, attention_mask=mask, position_ids=pos, pixel_values=pixels, use_cache=True,
             logits_to_keep=1)
    return out.logits[:, -1], out.past_key_values

  @torch.inference_mode()
  def run_decode(first, cache, mask, next_pos):
    token = first.argmax(-1)
    ones = torch.ones((mask.shape[0], 1), dtype=mask.dtype, device=mask.device)
    for i in range(args.decode_steps):
      mask = torch.cat([mask, ones], dim=1)
      logits = hf(input_ids=token[:, None], attention_mask=mask, position_ids=(next_pos + i)[:, None],
                  past_key_values=cache, use_cache=True).logits[:, -1]
      token = logits.argmax(-1)
    return token

  def time_prefill(b):
    inputs = tensors(b)
    return {**time_calls(lambda: run_prefill(*inputs), sync, args.runs), "batch": b}

  def time_decode(b):
    ids, mask, pos, pixels = inputs = tensors(b)
    times = []
    for _ in range(args.runs + 2):  # a fresh prefill cache per run (untimed); the first two are warm-up
      first, cache = run_prefill(*inputs)
      sync(None)
      start = time.perf_counter()
      run_decode(first, cache, mask, mask.sum(1))
      sync(None)
      times.append((time.perf_counter() - start) * 1e3)
    out = {"first_call_s": times[0] / 1e3, **spread(times[2:]), "batch": b, "steps": args.decode_steps}
    out["ms_per_step"] = out["median_ms"] / args.decode_steps
    return out

  for b in (8, 1):
    record.run(f"prefill_b{b}", lambda b=b: time_prefill(b), deadline, 10)
  for b in (1, 8):
    record.run(f"decode_b{b}", lambda b=b: time_decode(b), deadline, 10)


STAGES = {"env": stage_env, "jax": stage_jax, "torch": stage_torch}


# ------------------------------------------------------------------------------------------ report


def build_report(stages: dict[str, dict], meta: dict) -> tuple[dict, list[str]]:
  """Merge stage records; compute the issue's targets (PASS / FAIL / not measured, with why)."""
  jax_r = stages.get("jax", {}).get("results", {})
  torch_r = stages.get("torch", {}).get("results", {})
  targets = []

  def target(name, measured, goal, fmt, missing):
    result = "not measured" if measured is None else ("PASS" if measured >= goal else "FAIL")
    targets.append({"name": name, "measured": measured, "target": goal, "op": ">=", "result": result,
                    "fmt": fmt, "why_missing": None if measured is not None else missing})

  jb8, tb8 = jax_r.get("prefill_b8_none"), torch_r.get("prefill_b8")
  target("unpruned prefill speed vs transformers SDPA, batch 8", tb8["median_ms"] / jb8["median_ms"]
         if jb8 and tb8 else None, TARGETS["prefill_vs_torch_b8"], "{:.2f}x",
         "needs jax prefill_b8_none and torch prefill_b8")
  target("unpruned prefill MFU, batch 8", (jb8 or {}).get("mfu"), TARGETS["mfu_b8"], "{:.1%}",
         "needs jax prefill_b8_none and matmul_peak")
  for plan in plans(meta["dry_run"]):
    r = jax_r.get(f"prefill_b8_{plan}")
    target(f"pruned speedup / FLOPs ratio, {plan}", (r or {}).get("bound_efficiency"), TARGETS["bound_efficiency"],
           "{:.2f}", f"needs prefill_b8_{plan} and prefill_b8_none")
  comparisons = []
  for name, jkey, tkey in (("prefill b8", "prefill_b8_none", "prefill_b8"), ("prefill b1", "prefill_b1_none",
                           "prefill_b1"), ("decode b1", "decode_b1", "decode_b1"), ("decode b8", "decode_b8",
                                                                                    "decode_b8")):
    j, t = jax_r.get(jkey), torch_r.get(tkey)
    comparisons.append({"name": name, "jax": j and {k: j[k] for k in ("min_ms", "median_ms", "max_ms")},
                        "torch": t and {k: t[k] for k in ("min_ms", "median_ms", "max_ms")},
                        "jax_speed_vs_torch": t["median_ms"] / j["median_ms"] if j and t else None})
  skipped = {f"{s}/{k}": v for s, rec in stages.items() for k, v in rec.get("skipped", {}).items()}
  failed = {f"{s}/{k}": v["error"] for s, rec in stages.items() for k, v in rec.get("failed", {}).items()}
  skipped.update(meta.pop("skipped", {}))
  report = {**meta, "targets": [{k: v for k, v in t.items() if k != "fmt"} for t in targets],
            "comparisons": comparisons, "skipped": skipped, "failed": failed, "stages": stages}
  return report, render(report, targets, jax_r)


def render(report: dict, targets: list[dict], jax_r: dict) -> list[str]:
  ms = lambda r: "-" if not r else f"{r['median_ms']:.2f} ({r['min_ms']:.2f}-{r['max_ms']:.2f})"
  env = report["stages"].get("env", {}).get("results", {})
  versions = env.get("versions", {})
  dev = env.get("jax_devices", {})
  lines = [f"# GPU check{' (CPU dry run: tiny widths, numbers mean nothing)' if report['dry_run'] else ''}", "",
           f"- {report['date']}, {dev.get('device_kind', '?')} x{dev.get('count', '?')} (jax backend "
           f"{dev.get('backend', '?')}, cuDNN {dev.get('cudnn', '?')}); torch device "
           f"{env.get('torch_devices', {}).get('name', 'cpu')}",
           "- " + ", ".join(f"{k} {v}" for k, v in versions.items() if v),
           f"- model: {report['model']}, random {report['dtype']} weights (jaxprune and transformers each their own: "
           "a speed comparison, not a parity check); L = "
           f"{report['stages'].get('jax', {}).get('meta', {}).get('bucketed_length', '?')}; "
           f"ms = median (min-max) of {report['runs']} runs after warm-up; total wall {report['wall_s']:.0f} s "
           f"of a {report['budget_s']} s budget",
           "", "## Targets", "", "| target | measured | goal | result |", "|---|---|---|---|"]
  for t in targets:
    measured = "-" if t["measured"] is None else t["fmt"].format(t["measured"])
    result = t["result"] if t["measured"] is not None else f"not measured ({t['why_missing']})"
    lines.append(f"| {t['name']} | {measured} | >= {t['fmt'].format(t['target'])} | {result} |")
  lines += ["", "## jaxprune vs transformers SDPA", "", "| what | jaxprune ms | transformers ms | jaxprune speed |",
            "|---|---|---|---|"]
  for c in report["comparisons"]:
    speed = "-" if c["jax_speed_vs_torch"] is None else f"{c['jax_speed_vs_torch']:.2f}x"
    lines.append(f"| {c['name']} | {ms(c['jax'])} | {ms(c['torch'])} | {speed} |")
  lines += ["", "## jaxprune prefill (batch 8) and attention", "",
            "| sub-benchmark | ms | TFLOP/s | MFU | speedup | FLOPs ratio | compile s |", "|---|---|---|---|---|---|---|"]
  f = lambda r, k, spec: "-" if r.get(k) is None else spec.format(r[k])
  for name, r in jax_r.items():
    if name.startswith(("prefill", "attention", "matmul")):
      lines.append(f"| {name}{' (' + r['path'] + ')' if 'path' in r else ''} | {ms(r)} | {f(r, 'tflops', '{:.3g}')} | "
                   f"{f(r, 'mfu', '{:.1%}')} | {f(r, 'speedup', '{:.2f}x')} | {f(r, 'flops_ratio', '{:.2f}x')} | "
                   f"{f(r, 'first_call_s', '{:.1f}')} |")
  lines += ["", "## Skipped and failed", ""]
  lines += [f"- skipped {k}: {v}" for k, v in report["skipped"].items()] or ["- nothing skipped"]
  lines += [f"- FAILED {k}: {v}" for k, v in report["failed"].items()] or ["- nothing failed"]
  return lines


# ------------------------------------------------------------------------------------------ driver


def drive(args) -> int:
  """Run every stage in its own process under its share of the budget, then write the report."""
  start = time.monotonic()
  out_dir = Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  meta = {"benchmark": "gpu_check", "date": datetime.datetime.now().isoformat(timespec="seconds"),
          "dry_run": args.dry_run, "budget_s": args.budget_s, "runs": args.runs, "dtype": args.dtype,
          "decode_steps": args.decode_steps, "node": platform.node(), "model": "LLaVA-1.5-7B shape"
          + (" (dry run: widths 64/32, 3+2 layers, 224 px)" if args.dry_run else ""), "plans": plans(args.dry_run), "skipped": {}}
  stages: dict[str, dict] = {}
  for name in args.stages.split(","):
    left = args.budget_s - (time.monotonic() - start) - 5
    limit = min(left, args.budget_s * STAGE_SHARE[name])
    path = out_dir / f"gpu_check_{name}.json"
    path.unlink(missing_ok=True)
    if limit < 5:
      meta["skipped"][name] = f"time budget: {left:.0f} s left"
      continue
    if name != "env" and not args.dry_run and not gpu_ready(stages):
      meta["skipped"][name] = "no GPU visible to jax and torch (see env); use --dry-run on a CPU machine"
      continue
    cmd = [sys.executable, __file__, "--stage", name, "--stage-seconds", f"{limit - 5:.0f}", "--out-dir", str(out_dir),
           "--runs", str(args.runs), "--decode-steps", str(args.decode_steps), "--dtype", args.dtype]
    cmd += ["--dry-run"] if args.dry_run else []
    cmd += ["--quick"] if args.quick else []
    print(f"== stage {name} (limit {limit:.0f} s)", flush=True)
    try:
      proc = subprocess.run(cmd, timeout=limit)
      status = f"exit {proc.returncode}"
    except subprocess.TimeoutExpired:
      status = f"killed at its {limit:.0f} s limit; partial results kept"
    stages[name] = json.loads(path.read_text()) if path.exists() else {"results": {}, "skipped": {}, "failed": {}}
    stages[name]["status"] = status
  meta["wall_s"] = time.monotonic() - start
  report, lines = build_report(stages, meta)
  (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
  (out_dir / "gpu_check.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))
  print(f"wrote {out_dir / 'gpu_check.json'} and gpu_check.md", flush=True)
  if any(str(reason).startswith("no GPU") for reason in report["skipped"].values()):
    print("gpu_check: no GPU visible to jax and torch, nothing measured (on a CPU machine: --dry-run)", file=sys.stderr)
    return 2
  return 0


def gpu_ready(stages: dict) -> bool:
  env = stages.get("env", {}).get("results", {})
  return env.get("jax_devices", {}).get("backend") == "gpu" and env.get("torch_devices", {}).get("cuda_available")


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--dry-run", action="store_true", help="tiny widths on any machine (CI keeps this script working)")
  p.add_argument("--out-dir", default=None, help="default: evals/bench (GPU) or out/gpu_check_dryrun (dry run)")
  p.add_argument("--budget-s", type=float, default=BUDGET_S)
  p.add_argument("--runs", type=int, default=None, help="timed runs per sub-benchmark (default 10; dry run 2)")
  p.add_argument("--decode-steps", type=int, default=None, help="default 32; dry run 4")
  p.add_argument("--dtype", default=None, help="default bfloat16; dry run float32")
  p.add_argument("--stages", default="env,jax,torch")
  p.add_argument("--quick", action="store_true", help="one of each code path only (the CI test's dry run)")
  p.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)  # internal: one stage's process
  p.add_argument("--stage-seconds", type=float, default=BUDGET_S, help=argparse.SUPPRESS)
  args = p.parse_args()
  bad = [s for s in args.stages.split(",") if s not in STAGES]
  if bad:
    p.error(f"--stages: unknown stage {bad[0]!r} (expected some of {', '.join(STAGES)})")
  args.dtype = args.dtype or ("float32" if args.dry_run else "bfloat16")  # torch's CPU bf16 is slow
  args.runs = args.runs or (2 if args.dry_run else 10)
  args.decode_steps = args.decode_steps or (4 if args.dry_run else 32)
  args.out_dir = args.out_dir or ("out/gpu_check_dryrun" if args.dry_run else "evals/bench")
  if args.stage is None:
    return drive(args)
  if args.stage == "jax" and args.dry_run:
    import jax
    jax.config.update("jax_platforms", "cpu")
  deadline = Deadline(args.stage_seconds)
  record = Record(Path(args.out_dir) / f"gpu_check_{args.stage}.json", args.stage, {"pid": os.getpid()},
                  QUICK if args.quick else None)
  try:
    STAGES[args.stage](args, record, deadline)
  except Exception as e:  # an import or setup failure outside any sub-benchmark: say so in the stage's record
    record.data["failed"]["stage"] = {"error": f"{type(e).__name__}: {str(e)[:800]}",
                                      "traceback": traceback.format_exc()[-3000:]}
    record.save()
    raise
  return 0


if __name__ == "__main__":
  sys.exit(main())
