"""jaxprune vs Hugging Face PyTorch, pruned vs unpruned vs the FLOPs bound: prefill and decode timings.

    python benchmarks/prefill.py --config cpu-small [--runs 10] [--decode-steps 16]
    python benchmarks/prefill.py --config llava-7b          # a GPU box (refuses without one unless --force)

One model config, one batch. A transformers `LlavaForConditionalGeneration` is built with random init from the
config in the run's dtype (`attn_implementation="sdpa"`), and its state_dict is converted into jaxprune with
`jaxprune.convert.hf.fill_state` (LLaVA family), so both frameworks run identical weights on identical inputs:
the same left-padded [B, L] batch (L bucketed to a multiple of 64), with explicit position ids on the HF side
so its logits match (the max |diff| of the first-step logits is printed as a check).

What is timed (median of `--runs` after a compile/warm-up call and one more warm-up call, with min and max
reported beside it; runs are taken in interleaved rounds over all rows so that load from other processes on a
shared machine hits every row alike; on CPU each round times every row unpinned, then pinned to one core, see below):
- prefill: HF = one forward over the prompt (`use_cache=True`, `logits_to_keep=1`); jaxprune = one jitted
  prefill (vision tower, projector, merge, decoder with the plan's prune points, last-position logits, cache).
- decode: `--decode-steps` N cached steps starting from the prefill's logits. HF = a manual greedy loop with
  `past_key_values` (not `generate`), on a fresh copy of the prefill cache each run (the copy is not timed);
  jaxprune = one jitted `greedy_decode` (N `decode` calls in a `while_loop`, cache not donated, so XLA copies it
  once per call).
- scoring + selection: each plan's prune point (scores, top-k/merge, gather of every Tokens field) jitted on its
  own over the real Tokens entering layer K (and, for FastV, the real post-RoPE q/k of layer K-1), as
  benchmarks/prune_overhead.py does; its share is relative to the unpruned jaxprune prefill.
Compile time = first call minus the steady-state median (for torch: first-call overhead, no compile).
All timings are device-synchronised (`jax.block_until_ready`; torch CPU is synchronous, CUDA is synchronised).

Memory is labelled by what was measured: on GPU, `torch.cuda.max_memory_allocated` and jax's process-wide
`peak_bytes_in_use` (both include weights); on CPU, the peak RSS above the pre-call RSS during one steady-state
call (Linux `clear_refs`/`VmHWM`; allocator caching can hide reuse). Per jaxprune program the compiler's
`memory_analysis()` temp bytes are reported too. FLOPs come from `jaxprune.cost.prefill_flops` (vision included,
lm_head on the last position) at the bucketed length. MFU is reported against three peaks, each timed in the same
rounds as the prefills: XLA's own large jitted matmul in the run's dtype (`--peak-tflops` replaces it), a vendor BLAS
matmul (numpy's BLAS in float32 on CPU, torch's cuBLAS in the run's dtype on GPU; the MFU target reads this one),
and on CPU the nominal rate of the cores from `lscpu` (physical cores x clock x vector lanes x 2 for FMA x 2 FMA
units per core, an assumption that is printed). Ratios are measured in one run: compare within a run.

On a shared CPU, torch's OpenMP threads degrade far more than XLA's thread pool when another process takes a
core (a [4, 576] x [576, 1536] matmul: 16 ms with 2 threads vs 0.3 ms with 1 under load), which inflates
jaxprune/torch, above all for decode. So on CPU (`--pin both`, the default there) every round runs each row twice:
unpinned (all cores, torch's own thread count) and pinned (every thread of the process on one core, torch at one
thread), both in the same round so both see the same load; the unpinned numbers keep the meaning they always had
(prefill_ms, targets), the pinned ones (per-core kernel efficiency) sit beside them under "pinned".
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the GPU with jax in this process

import argparse
import copy
import dataclasses
import datetime
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # one command from a checkout, installed or not
from jaxprune import cost
from jaxprune.convert.hf import fill_state
from jaxprune.core.tokens import ModelInputs
from jaxprune.generate import Batch, greedy_decode, pad_batch, prefill
from jaxprune.models import attention, registry
from jaxprune.models.llava import LlavaConfig
from jaxprune.prune.pipeline import Pruner
from jaxprune.prune.plan import PrunePlan

PLANS = ["latesim@2:64", "latesim@16:64", "fastv@2:64", "visionzip@0:64", "divprune@0:64"]
NUM_TEXT = (36, 44)  # text tokens per prompt (bos + system before the image, question after): L ~ 620 -> 640
BUCKET = 64


@dataclasses.dataclass(frozen=True)
class Spec:
  """A benchmark config: HF sub-config dicts plus the batch, dtype and where it is meant to run."""

  text: dict
  vision: dict
  image_token_id: int
  tie_word_embeddings: bool
  batch: int
  dtype: str
  device: str  # "cpu" or "gpu"
  jax_torch_target: float  # jaxprune unpruned prefill speed / HF PyTorch's
  mfu_target: float | None  # prefill MFU target (GPU only)


CONFIGS: dict[str, Spec] = {
    # SmolLM2-135M-sized decoder + CLIP-B/14-336-sized tower.
    "cpu-small": Spec(
        text=dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                  num_attention_heads=9, num_key_value_heads=3, rms_norm_eps=1e-5, rope_theta=100000.0,
                  max_position_embeddings=8192, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                  pad_token_id=0),
        vision=dict(model_type="clip_vision_model", hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                    num_attention_heads=12, image_size=336, patch_size=14),
        image_token_id=49151, tie_word_embeddings=True, batch=4, dtype="float32", device="cpu",
        jax_torch_target=1.0, mfu_target=None),
    # LLaVA-1.5-7B: Llama-2-7B decoder + CLIP-L/14-336 tower.
    "llava-7b": Spec(
        text=dict(model_type="llama", vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, rms_norm_eps=1e-5, rope_theta=10000.0,
                  max_position_embeddings=4096, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                  pad_token_id=0),
        vision=dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                    num_attention_heads=16, image_size=336, patch_size=14),
        image_token_id=32000, tie_word_embeddings=False, batch=8, dtype="bfloat16", device="gpu",
        jax_torch_target=1.3, mfu_target=0.55),
}
LLAVA_FAMILY = registry.FAMILIES["LlavaForConditionalGeneration"]
BOUND_TARGET = 0.85  # pruned prefill speedup / analytic FLOPs speedup
OVERHEAD_TARGET = 0.02  # scoring + selection time / unpruned prefill time


# ------------------------------------------------------------------------------------------ measuring


class Timer:
  """First-call and steady-state times of one callable; `setup` makes fresh untimed arguments per call."""

  def __init__(self, fn: Callable, sync: Callable, setup: Callable[[], tuple] = tuple):
    self.fn, self.sync, self.setup = fn, sync, setup
    self.first_s: float | None = None
    self.times_ms: list[float] = []  # unpinned runs (the headline numbers)
    self.pinned_ms: list[float] = []
    self.result: Any = None

  def call(self) -> float:
    args = self.setup()
    self.sync(args)
    start = time.perf_counter()
    self.result = self.fn(*args)
    self.sync(self.result)
    return time.perf_counter() - start

  def warm_up(self) -> None:
    self.first_s = self.call()  # jax: trace + compile + run
    self.call()

  def run_once(self, pinned: bool = False) -> None:
    (self.pinned_ms if pinned else self.times_ms).append(self.call() * 1e3)

  def spread(self, pinned: bool = False) -> dict:
    times = self.pinned_ms if pinned else self.times_ms
    return {"min_ms": min(times), "median_ms": statistics.median(times), "max_ms": max(times)}

  @property
  def median_ms(self) -> float:
    return statistics.median(self.times_ms)

  @property
  def compile_s(self) -> float:
    return max(0.0, self.first_s - self.median_ms / 1e3)


class Pinning:
  """Moves every thread of this process (XLA's pool, torch's OpenMP threads) onto one core and torch to one
  thread, and back. Linux only (per-thread affinity through /proc/self/task)."""

  def __init__(self, torch_module):
    self.torch = torch_module
    self.all_cpus = os.sched_getaffinity(0)
    self.core = max(self.all_cpus)  # as `taskset -c 1` on a 2-core machine
    self.threads = torch_module.get_num_threads()

  def _set(self, cpus: set[int]) -> None:
    for tid in os.listdir("/proc/self/task"):
      try:
        os.sched_setaffinity(int(tid), cpus)
      except OSError:  # a thread that just exited
        pass

  def __enter__(self):
    self._set({self.core})
    self.torch.set_num_threads(1)
    return self

  def __exit__(self, *exc):
    self.torch.set_num_threads(self.threads)
    self._set(self.all_cpus)


def _status_kib(field: str) -> int | None:
  try:
    for line in Path("/proc/self/status").read_text().splitlines():
      if line.startswith(field + ":"):
        return int(line.split()[1])
  except OSError:
    pass
  return None


def host_peak_delta(call: Callable[[], Any]) -> tuple[int | None, str]:
  """Peak RSS above the pre-call RSS during `call` (Linux resets the high-water mark via clear_refs)."""
  try:
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    call()
    peak = _status_kib("VmHWM")
    return max(0, peak - before) * 1024, "host peak RSS above pre-call RSS (VmHWM)"
  except OSError:  # no procfs: the process high-water mark only moves when this call sets a new one
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    call()
    return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024, "ru_maxrss increase"


def peak_matmul_timer(dtype: jnp.dtype, on_gpu: bool) -> tuple[Timer, int]:
  """A large jitted square matmul in `dtype`: (timer, matrix size n; 2 n^3 FLOPs a call). Timed in the same
  rounds as the rest, so the peak it measures sees the same load from other processes as the prefills."""
  n = 8192 if on_gpu else 2048
  a = jnp.asarray(np.random.RandomState(0).randn(n, n), dtype)
  return Timer(jax.jit(lambda x, y: x @ y), jax.block_until_ready, lambda: (a, a)), n


def blas_matmul_timer(dtype: str, on_gpu: bool, torch_module) -> tuple[Timer, int, str]:
  """A large square matmul by the vendor BLAS, outside XLA: (timer, n, label). GPU: torch (cuBLAS) in `dtype`;
  CPU: numpy's BLAS in float32 (it has no bfloat16 kernels) on every core it uses."""
  if on_gpu:
    n = 8192
    a = torch_module.randn(n, n, device="cuda", dtype=getattr(torch_module, dtype))
    sync = lambda _: torch_module.cuda.synchronize()
    return Timer(torch_module.matmul, sync, lambda: (a, a)), n, f"torch cuBLAS {n}x{n} {dtype} matmul"
  n = 2048
  a = np.random.RandomState(0).randn(n, n).astype(np.float32)
  try:
    blas = np.__config__.CONFIG["Build Dependencies"]["blas"]["name"]
  except (AttributeError, KeyError, TypeError):
    blas = "BLAS"
  return Timer(np.matmul, lambda _: None, lambda: (a, a)), n, f"numpy ({blas}) {n}x{n} float32 matmul"


def lscpu() -> dict[str, str]:
  """`lscpu`'s fields ({} where it is missing)."""
  try:
    text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
  except (OSError, subprocess.SubprocessError):
    return {}
  return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v.strip()}


def _cpuinfo(field: str) -> str | None:
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith(field):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return None


def cpu_name() -> str:
  """lscpu's model name (else /proc/cpuinfo's, else what platform says)."""
  return lscpu().get("Model name") or _cpuinfo("model name") or platform.processor() or platform.machine()


def nominal_cpu_peak(dtype: str) -> tuple[float | None, str]:
  """The datasheet rate of the cores this process may use, from lscpu: (TFLOP/s or None, how it was computed)."""
  info = lscpu()
  flags = set(info.get("Flags", "").split())
  mhz = info.get("CPU max MHz") or info.get("CPU MHz") or _cpuinfo("cpu MHz")
  bits = 512 if "avx512f" in flags else 256 if "avx2" in flags or "avx" in flags else 128 if flags & {
      "sse2", "asimd"} else None
  if not mhz or bits is None:
    return None, f"unknown (lscpu gives no {'clock' if not mhz else 'vector width'})"
  lanes = bits // 32 * (2 if dtype == "bfloat16" and "avx512_bf16" in flags else 1)
  fma = 2 if flags & {"fma", "avx512f", "asimd"} else 1  # a fused multiply-add counts 2 FLOPs
  units = 2  # FMA units per core: not in lscpu; 2 on current x86 server cores (some parts have 1)
  threads = max(1, int(info.get("Thread(s) per core", "1") or 1))
  cores = max(1, len(os.sched_getaffinity(0)) // threads)
  tflops = cores * float(mhz) * 1e6 * lanes * fma * units / 1e12
  return tflops, (f"lscpu: {cores} core(s) x {float(mhz):.0f} MHz x {lanes} {dtype} lanes ({bits}-bit) x {fma} (FMA) "
                  f"x {units} FMA units/core (assumed)")


# ------------------------------------------------------------------------------------------ models, inputs


def build_hf(spec: Spec, text: dict, torch_device: str):
  """A random-init transformers LLaVA in the run's dtype, sdpa attention, eval mode."""
  import torch
  from transformers import LlavaConfig as HFLlavaConfig
  from transformers import LlavaForConditionalGeneration
  num_visual = (spec.vision["image_size"] // spec.vision["patch_size"]) ** 2
  hf_cfg = HFLlavaConfig(vision_config=dict(spec.vision), text_config=text, image_token_index=spec.image_token_id,
                         image_seq_length=num_visual, tie_word_embeddings=spec.tie_word_embeddings)
  torch.manual_seed(0)
  default = torch.get_default_dtype()
  torch.set_default_dtype(getattr(torch, spec.dtype))  # init straight in the run's dtype (a 7B never sees fp32)
  try:
    with torch.device(torch_device):
      hf = LlavaForConditionalGeneration(hf_cfg)
  finally:
    torch.set_default_dtype(default)
  hf.set_attn_implementation("sdpa")
  return hf.eval()


def torch_tensors(hf):
  """HF state_dict as NumPy, one tensor at a time (bf16 reinterpreted bit-for-bit through ml_dtypes)."""
  import torch
  for key, t in hf.state_dict().items():
    t = t.detach().to("cpu")
    if t.dtype == torch.bfloat16:
      yield key, t.view(torch.int16).numpy().view(jnp.bfloat16)
    else:
      yield key, t.numpy()


def make_batch(cfg: LlavaConfig, batch: int, seed: int) -> Batch:
  """bos + a few system tokens, Nv image placeholders, a question; lengths differ so left padding is real."""
  rng = np.random.RandomState(seed)
  nv, v = cfg.num_image_tokens, cfg.text.vocab_size
  high = min(v, cfg.image_token_id) if cfg.image_token_id > 3 else v
  prompts, spans = [], []
  for _ in range(batch):
    n_text = rng.randint(NUM_TEXT[0], NUM_TEXT[1] + 1)
    before = [1] + rng.randint(3, high, 4).tolist()
    question = rng.randint(3, high, n_text - len(before)).tolist()
    prompts.append(before + [cfg.image_token_id] * nv + question)
    spans.append((len(before) + nv, len(before) + nv + len(question)))
  side = cfg.vision.image_size
  pixels = rng.randn(batch, cfg.vision.num_channels, side, side).astype(np.float32)
  return pad_batch(prompts, pad_id=cfg.text.pad_token_id or 0, multiple=BUCKET, query_spans=spans, pixels=pixels)


def clamp_plan(text: str, num_layers: int) -> tuple[PrunePlan, str | None]:
  """Small (--layers) configs: a stage at or past the last layer moves to the last layer, with a note."""
  plan = PrunePlan.parse(text)
  stages = tuple(dataclasses.replace(s, layer=min(s.layer, num_layers - 1)) for s in plan.stages)
  note = None if stages == plan.stages else f"{text} clamped to layer {num_layers - 1} ({num_layers} layers)"
  return dataclasses.replace(plan, stages=stages), note


# ------------------------------------------------------------------------------------------ benchmark


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", choices=sorted(CONFIGS), default="cpu-small")
  parser.add_argument("--runs", type=int, default=10)
  parser.add_argument("--decode-steps", type=int, default=16)
  parser.add_argument("--batch", type=int, default=None, help="override the config's batch")
  parser.add_argument("--layers", type=int, default=None, help="override decoder layers (quick checks only)")
  parser.add_argument("--plans", default=",".join(PLANS), help="comma-separated plans")
  parser.add_argument("--peak-tflops", type=float, default=None,
                      help="device peak for MFU (default: measured with a large jitted matmul)")
  parser.add_argument("--out-dir", default="evals/bench")
  parser.add_argument("--force", action="store_true", help="run a GPU config without a GPU")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--torch-threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
  parser.add_argument("--pin", choices=["both", "off"], default=None,
                      help="CPU: time every round unpinned and pinned to one core (both, the CPU default) or "
                           "unpinned only (off, the GPU default)")
  parser.add_argument("--attention", default="auto", choices=["auto", *filter(None, attention.IMPLEMENTATIONS)],
                      help="jaxprune attention path (jaxprune.models.attention); auto: query blocks on CPU, "
                           "jax.nn.dot_product_attention's choice on GPU")
  args = parser.parse_args()
  spec = CONFIGS[args.config]

  import torch
  on_gpu = spec.device == "gpu"
  if on_gpu and not (torch.cuda.is_available() and jax.default_backend() == "gpu"):
    if not args.force:
      raise SystemExit(f"--config {args.config} needs a GPU visible to both jax and torch (found jax "
                       f"{jax.default_backend()}, torch cuda={torch.cuda.is_available()}); pass --force to run anyway")
    on_gpu = False
  if not on_gpu:  # cpu configs stay on the CPU even on a GPU box
    jax.config.update("jax_default_device", jax.devices("cpu")[0])
  attention.set_implementation("blocked" if args.attention == "auto" and not on_gpu else args.attention)
  torch_device = "cuda" if on_gpu else "cpu"
  pin = args.pin or ("off" if on_gpu or not Path("/proc/self/task").is_dir() else "both")
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  dtype = jnp.dtype(spec.dtype)
  batch_size = args.batch or spec.batch
  n_steps = args.decode_steps
  text = dict(spec.text, num_hidden_layers=args.layers or spec.text["num_hidden_layers"])

  def torch_sync(_=None) -> None:
    if on_gpu:
      torch.cuda.synchronize()

  # ---- identical weights: HF random init -> fill_state
  t0 = time.perf_counter()
  hf = build_hf(spec, text, torch_device)
  cfg: LlavaConfig = LLAVA_FAMILY.config_from_hf(hf.config.to_dict())
  model = fill_state(LLAVA_FAMILY, cfg, torch_tensors(hf), dtype, "hf-random-init")
  graphdef, state = nnx.split(model)
  del model
  print(f"built HF + converted to jaxprune in {time.perf_counter() - t0:.1f} s "
        f"(attn: {hf.config.text_config._attn_implementation})", flush=True)

  batch = make_batch(cfg, batch_size, args.seed)
  b, length = batch.ids.shape
  nv = cfg.num_image_tokens
  ids, valid, pixels, query = (jax.device_put(x) for x in (batch.ids, batch.valid, batch.pixels, batch.query))
  t_ids = torch.as_tensor(batch.ids, dtype=torch.long, device=torch_device)
  t_mask = torch.as_tensor(batch.valid, dtype=torch.long, device=torch_device)
  t_pos = (t_mask.cumsum(1) - 1).clamp(min=0)  # as jaxprune (and HF generate) number left-padded prompts
  t_pixels = torch.as_tensor(batch.pixels, device=torch_device).to(getattr(torch, spec.dtype))
  t_next_pos = t_mask.sum(1)

  # ---- HF PyTorch
  @torch.inference_mode()
  def hf_prefill():
    out = hf(input_ids=t_ids, attention_mask=t_mask, position_ids=t_pos, pixel_values=t_pixels, use_cache=True,
             logits_to_keep=1)
    return out.logits[:, -1], out.past_key_values

  @torch.inference_mode()
  def hf_decode(first_logits, cache):
    token, mask, out = first_logits.argmax(-1), t_mask, [first_logits.argmax(-1)]
    ones = torch.ones((b, 1), dtype=mask.dtype, device=mask.device)
    for i in range(n_steps):
      mask = torch.cat([mask, ones], dim=1)
      logits = hf(input_ids=token[:, None], attention_mask=mask, position_ids=(t_next_pos + i)[:, None],
                  past_key_values=cache, use_cache=True).logits[:, -1]
      token = logits.argmax(-1)
      out.append(token)
    return torch.stack(out, 1)

  # ---- jaxprune
  def jax_prefill(state, ids, valid, pixels, query, pruner):
    model = nnx.merge(graphdef, state)
    first, cache, _, _ = prefill(model, (ids, valid, pixels, query), extra_slots=n_steps, prune_points_fn=pruner)
    return first, cache

  def jax_decode(state, first, cache):
    lm = nnx.merge(graphdef, state).language_model
    # N + 1 emitted tokens = the prefill's argmax + N decode steps; no EOS, so exactly N steps run.
    out, _, _ = greedy_decode(lm, first, cache, max_new_tokens=n_steps + 1, eos_ids=(), pad_id=0, keep_logits=False)
    return out

  def entering(state, ids, valid, pixels, query, layer):
    """Tokens entering decoder layer `layer`, the vision outputs, and layer-1's q/k (what prune points see)."""
    model = nnx.merge(graphdef, state)
    tokens, vision = model.input_tokens(ModelInputs(ids=ids, valid=valid, query=query, pixels=pixels))
    if layer == 0:
      return tokens, vision, None
    seen = {}
    capture = lambda t, trace: seen.update(tokens=t, trace=trace) or t  # identity point; layers >= K are dead code
    model.language_model.prefill(tokens, extra_slots=0, prune_points={layer: capture})
    return seen["tokens"], vision, seen["trace"]

  def score_and_select(state, tokens, vision, trace, pruner):
    model = nnx.merge(graphdef, state)
    layer = pruner.plan.stages[0].layer
    return pruner(model, tokens, vision)[layer](tokens, trace)

  prefill_jit = jax.jit(jax_prefill, static_argnums=5)
  decode_jit = jax.jit(jax_decode)
  entering_jit = jax.jit(entering, static_argnums=5)
  score_jit = jax.jit(score_and_select, static_argnums=4)
  args_in = (state, ids, valid, pixels, query)

  base_flops = cost.prefill_flops(cfg, length, (), batch=b)
  rows: list[dict] = [{"system": "torch-hf", "plan": "none", "stages": [], "flops": base_flops}]
  notes = []
  for text_plan in ["none"] + [p for p in args.plans.split(",") if p]:
    row = {"system": "jaxprune", "plan": text_plan, "stages": [], "pruner": None, "flops": base_flops}
    if text_plan != "none":
      plan, note = clamp_plan(text_plan, cfg.text.num_layers)
      notes += [note] if note else []
      pruner = Pruner.build(plan, cfg)
      row.update(plan=str(pruner.plan), pruner=pruner, stages=[(s.layer, s.keep) for s in pruner.plan.stages])
      row["flops"] = cost.prefill_flops(cfg, length, row["stages"], batch=b)
    rows.append(row)

  # Timers: torch decode copies the prefill cache per run (untimed), jax decode reads the prefill's output.
  hf_first, hf_cache = hf_prefill()
  rows[0]["timers"] = {"prefill": Timer(hf_prefill, torch_sync),
                       "decode": Timer(hf_decode, torch_sync, lambda: (hf_first, copy.deepcopy(hf_cache)))}
  for row in rows[1:]:
    pre = Timer(prefill_jit, jax.block_until_ready, lambda row=row: (*args_in, row["pruner"]))
    pre.warm_up()
    first, cache = pre.result
    row["kv_bytes"] = cache.nbytes
    row["timers"] = {"prefill": pre, "decode": Timer(decode_jit, jax.block_until_ready,
                                                     lambda first=first, cache=cache: (state, first, cache))}
    if row["pruner"] is not None:
      stage = row["pruner"].plan.stages[0]
      tokens, vision, trace = jax.block_until_ready(entering_jit(*args_in, stage.layer))
      row["timers"]["score"] = Timer(score_jit, jax.block_until_ready,
                                     lambda p=row["pruner"], t=tokens, v=vision, tr=trace: (state, t, v, tr, p))
    analysis = prefill_jit.lower(*args_in, row["pruner"]).compile().memory_analysis()
    row["xla_temp_bytes"] = getattr(analysis, "temp_size_in_bytes", None)
    print(f"compiled {row['plan']}", flush=True)

  # ---- sanity: identical weights give matching first-step logits
  jax_first = np.asarray(rows[1]["timers"]["prefill"].result[0])
  logits_diff = float(np.abs(jax_first - hf_first.float().cpu().numpy()).max())
  print(f"max |logits(jaxprune) - logits(HF)| at the last prompt position: {logits_diff:.3g}", flush=True)

  # ---- warm-up everything, then round-robin timed runs
  timers = [t for row in rows for t in row["timers"].values()]
  peak_timer, peak_n = peak_matmul_timer(dtype, on_gpu)
  if args.peak_tflops is None:
    timers.append(peak_timer)
  blas_timer, blas_n, blas_label = blas_matmul_timer(spec.dtype, on_gpu, torch)
  timers.append(blas_timer)
  load = [os.getloadavg()]
  for t in timers:
    if t.first_s is None:
      t.warm_up()
  pin_modes = [False, True] if pin == "both" else [False]
  pinning = Pinning(torch) if pin == "both" else None
  for r in range(args.runs):
    start = time.perf_counter()
    for pinned in pin_modes:  # both modes in every round: they see the same load
      if pinned:
        with pinning:
          for t in timers:
            t.run_once(pinned=True)
      else:
        for t in timers:
          t.run_once()
    load.append(os.getloadavg())
    print(f"round {r + 1}/{args.runs}: {time.perf_counter() - start:.1f} s, load {load[-1][0]:.1f}", flush=True)
  hf_tokens = rows[0]["timers"]["decode"].result.cpu().numpy()
  jax_tokens = np.asarray(rows[1]["timers"]["decode"].result)
  token_agreement = float((hf_tokens == jax_tokens).mean())

  # ---- memory
  if on_gpu:
    torch.cuda.reset_peak_memory_stats()
    hf_prefill()
    torch_sync()
    rows[0]["peak_bytes"], rows[0]["peak_label"] = torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
    stats = jax.devices()[0].memory_stats() or {}
    for row in rows[1:]:  # jax has no peak reset: process-wide peak (incl. weights) after all rows ran
      row["peak_bytes"], row["peak_label"] = stats.get("peak_bytes_in_use"), "jax peak_bytes_in_use (process-wide)"
  else:
    rows[0]["peak_bytes"], rows[0]["peak_label"] = host_peak_delta(hf_prefill)
    for row in rows[1:]:
      t = row["timers"]["prefill"]
      row["peak_bytes"], row["peak_label"] = host_peak_delta(lambda t=t: jax.block_until_ready(t.fn(*t.setup())))
  rows[0]["kv_bytes"] = sum(x.numel() * x.element_size() for layer in hf_cache.layers
                            for x in (layer.keys, layer.values))
  weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))

  # ---- peak rate for MFU
  peak_tflops = args.peak_tflops or 2 * peak_n**3 / (peak_timer.median_ms / 1e3) / 1e12
  peak_source = ("--peak-tflops" if args.peak_tflops else
                 f"measured: jitted {peak_n}x{peak_n} {spec.dtype} matmul, timed in the same rounds")
  blas_tflops = 2 * blas_n**3 / (blas_timer.median_ms / 1e3) / 1e12
  nominal_tflops, nominal_source = (None, "not computed on GPU") if on_gpu else nominal_cpu_peak(spec.dtype)

  # ---- ratios
  torch_row, base = rows[0], rows[1]
  tp, td = torch_row["timers"]["prefill"].median_ms, torch_row["timers"]["decode"].median_ms
  bp = base["timers"]["prefill"].median_ms
  if pinning:  # the same three references, pinned
    tp1, td1 = (torch_row["timers"][w].spread(pinned=True)["median_ms"] for w in ("prefill", "decode"))
    bp1 = base["timers"]["prefill"].spread(pinned=True)["median_ms"]
  results = []
  for row in rows:
    tm = row.pop("timers")
    row.pop("pruner", None)
    pre, dec = tm["prefill"].median_ms, tm["decode"].median_ms
    out = {k: v for k, v in row.items()}
    out.update(prefill_ms=pre, decode_ms=dec, prefill_runs_ms=tm["prefill"].times_ms,
               decode_runs_ms=tm["decode"].times_ms, prefill_compile_s=tm["prefill"].compile_s,
               decode_compile_s=tm["decode"].compile_s, prefill_vs_torch=tp / pre, decode_vs_torch=td / dec,
               mfu=row["flops"] / (pre / 1e3) / (peak_tflops * 1e12),
               mfu_blas=row["flops"] / (pre / 1e3) / (blas_tflops * 1e12),
               mfu_nominal=row["flops"] / (pre / 1e3) / (nominal_tflops * 1e12) if nominal_tflops else None)
    for what in ("prefill", "decode"):  # the spread of the unpinned runs beside their median
      spread = tm[what].spread()
      out.update({f"{what}_min_ms": spread["min_ms"], f"{what}_max_ms": spread["max_ms"]})
    if tm["prefill"].pinned_ms:  # the same rounds, every thread on one core
      pinned = {f"{what}_{k}": v for what in ("prefill", "decode") for k, v in tm[what].spread(pinned=True).items()}
      pinned.update(prefill_vs_torch=tp1 / pinned["prefill_median_ms"], decode_vs_torch=td1 / pinned["decode_median_ms"],
                    prefill_runs_ms=tm["prefill"].pinned_ms, decode_runs_ms=tm["decode"].pinned_ms)
      if row["system"] == "jaxprune":
        pinned["bound_efficiency"] = (bp1 / pinned["prefill_median_ms"]) / (base["flops"] / row["flops"])
      out["pinned"] = pinned
    if row["system"] == "jaxprune":
      out["kv_bytes_analytic"] = cost.kv_cache_bytes(cfg, length, row["stages"], max_new_tokens=n_steps, batch=b,
                                                     bytes_per_element=dtype.itemsize)
      out["time_ratio"] = pre / bp
      out["flops_ratio"] = row["flops"] / base["flops"]
      out["bound_efficiency"] = (bp / pre) / (base["flops"] / row["flops"])  # achieved speedup / FLOPs speedup
    else:
      out["kv_bytes_analytic"] = cost.kv_cache_bytes(cfg, length, (), batch=b, bytes_per_element=dtype.itemsize)
    if "score" in tm:
      out["score_select_ms"] = tm["score"].median_ms
      out["score_share_of_unpruned"] = tm["score"].median_ms / bp
    results.append(out)

  targets = [{"name": "jaxprune/torch unpruned prefill speed", "measured": results[1]["prefill_vs_torch"],
              "target": spec.jax_torch_target, "op": ">=", "fmt": "{:.2f}x"}]
  for r in results[2:]:
    targets.append({"name": f"speedup/FLOPs bound {r['plan']}", "measured": r["bound_efficiency"],
                    "target": BOUND_TARGET, "op": ">=", "fmt": "{:.2f}"})
  for r in results[2:]:
    targets.append({"name": f"score+select share {r['plan']}", "measured": r["score_share_of_unpruned"],
                    "target": OVERHEAD_TARGET, "op": "<=", "fmt": "{:.2%}"})
  if spec.mfu_target is not None:
    targets.append({"name": "jaxprune unpruned prefill MFU (vs BLAS matmul)", "measured": results[1]["mfu_blas"],
                    "target": spec.mfu_target, "op": ">=", "fmt": "{:.1%}"})
  for t in targets:
    ok = t["measured"] >= t["target"] if t["op"] == ">=" else t["measured"] <= t["target"]
    t["result"] = "PASS" if ok else "FAIL"

  # ---- print + write
  meta = {
      "benchmark": "prefill", "config": args.config, "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "machine": platform.machine(), "node": platform.node(), "processor": cpu_name(), "cpu_count": os.cpu_count(),
      "device": str(jax.devices()[0]), "device_kind": jax.devices()[0].device_kind,
      "torch_device": torch.cuda.get_device_name() if on_gpu else "cpu", "torch_threads": torch.get_num_threads(),
      "python": platform.python_version(), "jax": jax.__version__, "flax": __import__("flax").__version__,
      "torch": torch.__version__, "transformers": __import__("transformers").__version__,
      "dtype": spec.dtype, "batch": b, "prompt_lengths": batch.valid.sum(1).tolist(), "bucketed_length": length,
      "num_visual": nv, "decoder_layers": cfg.text.num_layers, "vision_layers_used": cfg.vision_layers_used,
      "decode_steps": n_steps, "runs": args.runs, "attention": args.attention, "peak_tflops": peak_tflops,
      "peak_source": peak_source, "blas_peak_tflops": blas_tflops, "blas_peak_source": f"measured: {blas_label}, "
      "timed in the same rounds", "nominal_peak_tflops": nominal_tflops, "nominal_peak_source": nominal_source,
      "weight_bytes": weight_bytes, "logits_max_abs_diff_vs_hf": logits_diff,
      "decode_token_agreement_vs_hf": token_agreement, "notes": notes,
      "loadavg_1min_per_round": [round(x[0], 2) for x in load],
      "pin": pin, "pinned_core": pinning.core if pinning else None,
  }
  lines = render(meta, results, targets)
  print("\n".join(lines))
  out_dir = Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / f"prefill_{args.config}.json").write_text(json.dumps(
      {**meta, "rows": results, "targets": [{k: v for k, v in t.items() if k != "fmt"} for t in targets]}, indent=2))
  (out_dir / f"prefill_{args.config}.md").write_text("\n".join(render(meta, results, targets, markdown=True)) + "\n")
  print(f"wrote {out_dir / f'prefill_{args.config}.json'} and .md")


def render(meta: dict, rows: list[dict], targets: list[dict], *, markdown: bool = False) -> list[str]:
  """One table of ratios (rows: systems x plans), then the targets with measured value and PASS/FAIL."""
  mib = lambda x: "-" if x is None else f"{x / 2**20:.0f}"
  pct = lambda x: "-" if x is None else f"{100 * x:.2f}%"
  spread = lambda r, what: f"{r[what + '_ms']:.1f} ({r[what + '_min_ms']:.1f}-{r[what + '_max_ms']:.1f})"
  pinned = "pinned" in rows[0]
  head = ["system", "plan", "prefill ms (min-max)", "decode ms (min-max)", "compile s", "prefill vs torch",
          "decode vs torch", *(["pinned: prefill ms", "prefill vs torch", "decode vs torch"] if pinned else []),
          "time/unpruned", "FLOPs/unpruned", "speedup/bound", "score+select", "MFU", "KV MiB (meas/analytic)",
          "peak MiB", "XLA temp MiB"]
  head[head.index("MFU")] = "MFU vs XLA/BLAS/nominal"
  body = []
  for r in rows:
    bound = r.get("bound_efficiency")
    body.append([
        r["system"], r["plan"], spread(r, "prefill"), spread(r, "decode"),
        f"{r['prefill_compile_s']:.1f}/{r['decode_compile_s']:.1f}", f"{r['prefill_vs_torch']:.2f}x",
        f"{r['decode_vs_torch']:.2f}x",
        *([spread({k.replace("_median", ""): v for k, v in r["pinned"].items()}, "prefill"),
           f"{r['pinned']['prefill_vs_torch']:.2f}x", f"{r['pinned']['decode_vs_torch']:.2f}x"] if pinned else []),
        f"{r['time_ratio']:.3f}" if "time_ratio" in r else "-",
        f"{r['flops_ratio']:.3f}" if "flops_ratio" in r else "-",
        "-" if bound is None or r["plan"] == "none" else f"{bound:.2f} {'PASS' if bound >= BOUND_TARGET else 'FAIL'}",
        pct(r.get("score_share_of_unpruned")), "/".join("-" if r.get(k) is None else f"{100 * r[k]:.1f}%"
                                                        for k in ("mfu", "mfu_blas", "mfu_nominal")),
        f"{mib(r['kv_bytes'])}/{mib(r['kv_bytes_analytic'])}", mib(r.get("peak_bytes")), mib(r.get("xla_temp_bytes")),
    ])
  title = (f"prefill benchmark {meta['config']}: batch {meta['batch']}, L={meta['bucketed_length']} "
           f"({meta['num_visual']} visual), {meta['dtype']}, {meta['decoder_layers']} decoder layers, "
           f"{meta['decode_steps']} decode steps, median (min-max) of {meta['runs']} interleaved rounds"
           f"{', unpinned and pinned to core ' + str(meta['pinned_core']) if meta.get('pinned_core') is not None else ''}"
           f", attention {meta.get('attention', 'auto')}, "
           f"{meta['device_kind']} / torch "
           f"{meta['torch_device']} ({meta['torch_threads']} threads) ({meta['processor']}, {meta['cpu_count']} cores, "
           f"1-min load {min(meta['loadavg_1min_per_round']):.1f}-{max(meta['loadavg_1min_per_round']):.1f}), "
           f"{meta['date']}")
  info = [f"jax {meta['jax']}, flax {meta['flax']}, torch {meta['torch']}, transformers {meta['transformers']}; "
          f"peak {meta['peak_tflops']:.3g} TFLOP/s ({meta['peak_source']}); "
          f"logits max|diff| vs HF {meta['logits_max_abs_diff_vs_hf']:.2g}, decode tokens agreeing with HF "
          f"{100 * meta['decode_token_agreement_vs_hf']:.0f}%",
          f"peak memory: torch = {rows[0]['peak_label']}; jaxprune = {rows[1]['peak_label']}; "
          f"jaxprune weights {meta['weight_bytes'] / 2**20:.0f} MiB",
          "prefill/decode vs torch = torch time / this row's time (decode vs torch's unpruned decode); "
          "speedup/bound = (unpruned/pruned time) / (unpruned/pruned FLOPs); score+select share of unpruned prefill; "
          "compile s = first call - median (prefill/decode; ~0 where an earlier row's program had the same shapes)"]
  nominal = meta.get("nominal_peak_tflops")
  info.append(f"MFU peaks: XLA matmul {meta['peak_tflops']:.3g} TFLOP/s; BLAS {meta['blas_peak_tflops']:.3g} TFLOP/s "
              f"({meta['blas_peak_source']}); nominal {'-' if nominal is None else f'{nominal:.3g}'} TFLOP/s "
              f"({meta['nominal_peak_source']}); CPU model (lscpu): {meta['processor']}")
  info += [f"note: {n}" for n in meta["notes"]]
  theader = ["target", "measured", "target", "result"]
  tbody = [[t["name"], t["fmt"].format(t["measured"]),
            f"{t['op']} {t['fmt'].format(t['target'])}", t["result"]] for t in targets]
  if markdown:
    md = lambda cells: "| " + " | ".join(cells) + " |"
    return ([f"# {title}", ""] + [f"- {line}" for line in info] + ["", md(head), md(["---"] * len(head))]
            + [md(r) for r in body] + ["", md(theader), md(["---"] * 4)] + [md(r) for r in tbody])
  widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
  fmt = lambda cells: "  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
  twidths = [max(len(str(x)) for x in col) for col in zip(theader, *tbody)]
  tfmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, twidths))
  return ([title] + info + ["", fmt(head)] + [fmt(r) for r in body] + ["", tfmt(theader)]
          + [tfmt(r) for r in tbody])


if __name__ == "__main__":
  main()
