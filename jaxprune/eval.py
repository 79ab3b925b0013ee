"""python -m jaxprune.eval — accuracy and cost of visual-token pruning plans, on blind-filtered data.

    python -m jaxprune.eval --model llava --tasks datbench:chart --method none,latesim,fastv \\
        --layer 2,16 --keep 64,0.25 --limit 500 --output-path out/chart --drop-blind out/blind/blind_correct.json

`--method/--layer/--keep` lists form a grid (`none` is the unpruned baseline). Every finished batch is
appended to DIR/samples.jsonl and flushed, so rerunning a killed command resumes where it stopped and ends
with the same results.json. `--blind` answers every item with the image removed from the prompt and writes
the ids it got right (DIR/blind_correct.json); `--drop-blind FILE` removes those items from a later run.
With no arguments it runs the offline demo on the shipped easy-VQA model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

DEMO_ARGS = ["--model", "llava-easyvqa", "--tasks", "easyvqa", "--method",
             "none,latesim@1,fastv@1,clsattn@0,embedsim@0,divprune@0,visionzip@0,random@0,random@1,uniform@0",
             "--keep", "8,16,32", "--limit", "300", "--output-path", "out/demo"]
BLIND, NONE = "blind", "none"
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


class EvalError(ValueError):
  """A bad flag or input; main() prints it as one line."""


# ------------------------------------------------------------------------------------------- arguments


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m jaxprune.eval", description=__doc__.splitlines()[0])
  p.add_argument("--model", default="llava-easyvqa",
                 help="registry name (llava, llava-easyvqa), HF directory, orbax directory, .gguf or hub id")
  p.add_argument("--tasks", default="easyvqa", help="comma list: easyvqa, datbench:<capability>")
  p.add_argument("--method", default=NONE,
                 help="comma list of pruning methods, each optionally with its own layer (fastv@2); "
                      "'none' = unpruned baseline")
  p.add_argument("--layer", default="2", help="comma list of decoder layers K to prune at")
  p.add_argument("--keep", default="64", help="comma list of visual tokens kept per image (int) or ratios (0.25)")
  p.add_argument("--batch-size", type=int, default=8)
  p.add_argument("--limit", type=int, default=None, help="evaluate the first N items of each task")
  p.add_argument("--output-path", default="out/eval")
  p.add_argument("--log-samples", action="store_true", help="also log question, answers and raw output per item")
  p.add_argument("--blind", action="store_true", help="text-only control: the image removed from the prompt")
  p.add_argument("--drop-blind", default=None, metavar="FILE", help="blind_correct.json of an earlier --blind run")
  p.add_argument("--seed", type=int, default=0, help="seed of the `random` method and the bootstrap")
  p.add_argument("--max-new-tokens", type=int, default=16)
  p.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: as stored / bfloat16)")
  p.add_argument("--bucket", type=int, default=64, help="prompt lengths are padded to a multiple of this")
  p.add_argument("--time-batches", type=int, default=3, help="batches per config whose prefill is timed")
  p.add_argument("--data-dir", default=None, help="where prepared tfds data lives")
  p.add_argument("--datbench-dir", default=None, help="local copy of DatBench's parquet files")
  p.add_argument("--mesh", default=None, metavar="data=N,model=M",
                 help="device mesh (default: every device on data, model-sharded only if weights do not fit)")
  p.add_argument("--distributed", action="store_true", help="multi-host: call jax.distributed.initialize()")
  p.add_argument("--no-plots", action="store_true")
  args = p.parse_args(argv)
  if args.batch_size < 1:
    raise EvalError(f"--batch-size {args.batch_size}: must be >= 1")
  if args.limit is not None and args.limit < 1:
    raise EvalError(f"--limit {args.limit}: must be >= 1")
  return args


def _split(text: str) -> list[str]:
  return [t.strip() for t in text.split(",") if t.strip()]


def _parse_keeps(text: str) -> list[int | float]:
  keeps = []
  for item in _split(text):
    try:
      keep = float(item) if "." in item else int(item)
    except ValueError:
      raise EvalError(f"--keep {item}: not a number") from None
    if keep <= 0 or (isinstance(keep, float) and keep >= 1):
      raise EvalError(f"--keep {item}: keep at least 1 visual token (an integer), or a ratio in (0, 1)")
    keeps.append(keep)
  return keeps


def build_grid(args, cfg) -> tuple[list, list[str]]:
  """-> (plans: None for the baseline, else validated PrunePlans; notes on skipped combinations).

  A `--method` entry may pin its own layer (`fastv@2`), which then replaces the `--layer` list for it.
  """
  from jaxprune.prune.plan import METHODS, PlanError, PrunePlan, Stage
  entries = _split(args.method)
  methods = [(e.split("@")[0], e.split("@")[1] if "@" in e else None) for e in entries]
  unknown = [m for m, _ in methods if m != NONE and m not in METHODS]
  if unknown:
    raise EvalError(f"--method {unknown[0]}: unknown method (known: none, {', '.join(METHODS)})")

  def layers_of(text: str, flag: str) -> list[int]:
    try:
      layers = [int(x) for x in _split(text)]
    except ValueError:
      raise EvalError(f"{flag}{'' if flag.endswith('@') else ' '}{text}: expected comma-separated integers") from None
    sep = "" if flag.endswith("@") else " "
    for layer in layers:
      if not 0 <= layer < cfg.text.num_layers:
        raise EvalError(f"{flag}{sep}{layer}: outside [0, {cfg.text.num_layers}) for this model "
                        f"({cfg.text.num_layers} decoder layers)")
    return layers

  keeps = _parse_keeps(args.keep)
  plans, notes = ([None] if any(m == NONE for m, _ in methods) else []), []
  for method, pinned in ((m, p) for m, p in methods if m != NONE):
    options = (("seed", args.seed),) if method == "random" else ()
    # --layer applies only to methods without a pinned layer, so it is checked only when used
    layers = layers_of(pinned, f"--method {method}@") if pinned is not None else layers_of(args.layer, "--layer")
    valid = 0
    for layer in layers:
      for keep in keeps:
        try:
          plans.append(PrunePlan((Stage(method, layer, keep, options),)).validate(cfg))
          valid += 1
        except PlanError as e:
          if "layer 0" not in str(e):  # only the "signal does not exist at this layer" case is skippable
            raise EvalError(str(e)) from None
          notes.append(f"skipped {method}@{layer}: {str(e).split(': ', 1)[1]}")
    if not valid:
      raise EvalError(f"--method {method}: no valid layer among {layers} ({notes[-1]})")
  if not plans:
    raise EvalError("nothing to evaluate: give --method (none for the unpruned baseline)")
  return plans, notes


# ------------------------------------------------------------------------------------------- records


def _config_key(plan) -> str:
  return NONE if plan is None else str(plan)


class SampleLog:
  """samples.jsonl: one JSON line per (task, config, item), appended and fsynced per batch."""

  def __init__(self, path: Path, writer: bool = True):
    self.path, self.writer = path, writer
    self.records: dict[tuple[str, str, str], dict] = {}
    if path.exists():
      good = 0
      with path.open("rb") as f:
        for line in f:
          try:
            rec = json.loads(line)
          except json.JSONDecodeError:
            break  # a line cut by a kill: drop it and everything after
          self.records[(rec["task"], rec["config"], rec["id"])] = rec
          good += len(line)
      if writer:
        with path.open("r+b") as f:
          f.truncate(good)

  def done(self, task: str, config: str, item_id: str) -> bool:
    return (task, config, item_id) in self.records

  def append(self, records: list[dict]) -> None:
    for rec in records:
      self.records[(rec["task"], rec["config"], rec["id"])] = rec
    if not self.writer:
      return  # every process holds the gathered records; only process 0 writes them
    with self.path.open("a") as f:
      for rec in records:
        f.write(json.dumps(rec) + "\n")
      f.flush()
      os.fsync(f.fileno())


def _bits(mask: np.ndarray) -> str:
  return np.packbits(mask.astype(np.uint8)).tobytes().hex()


def _unbits(text: str, n: int) -> np.ndarray:
  return np.unpackbits(np.frombuffer(bytes.fromhex(text), np.uint8))[:n].astype(bool)


# ------------------------------------------------------------------------------------------- model side


@dataclasses.dataclass
class Runner:
  """Everything needed to answer items: model, tokenizer, image preprocessing, compiled generation."""

  loaded: Any
  tokenizer: Any
  processor: Any
  generator: Any
  bucket: int
  batch_size: int

  @classmethod
  def load(cls, model: str, *, dtype, max_new_tokens: int, bucket: int, batch_size: int, mesh) -> "Runner":
    from transformers import AutoTokenizer
    from jaxprune.convert.hf import load_model
    from jaxprune.generate import Generator
    from jaxprune.models.config import LlavaConfig
    loaded = load_model(model, dtype=dtype, mesh=mesh)
    if not isinstance(loaded.config, LlavaConfig):
      raise EvalError(f"--model {model}: a {loaded.family.name} model has no vision tower; the eval needs a VLM")
    try:
      tokenizer = AutoTokenizer.from_pretrained(str(loaded.path))
    except Exception as e:
      raise EvalError(f"--model {model}: no usable tokenizer files in {loaded.path} ({type(e).__name__})") from None
    try:
      from transformers import AutoImageProcessor
      processor = AutoImageProcessor.from_pretrained(str(loaded.path))
    except Exception:
      processor = None  # fall back to CLIP preprocessing at the tower's resolution
    eos = {tokenizer.eos_token_id, loaded.config.text.eos_token_id} - {None}
    eos = {e for x in eos for e in (x if isinstance(x, tuple) else (x,))}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    generator = Generator(loaded.model, max_new_tokens=max_new_tokens, eos_ids=tuple(sorted(eos)), pad_id=pad,
                          mesh=mesh)
    return cls(loaded, tokenizer, processor, generator, bucket, batch_size)

  @property
  def config(self):
    return self.loaded.config

  def pixels(self, images: list) -> np.ndarray:
    if self.processor is not None:
      return np.asarray(self.processor(images=images, return_tensors="np")["pixel_values"], np.float32)
    size = self.config.vision.image_size
    arrays = [np.asarray(im.resize((size, size)), np.float32) / 255.0 for im in images]
    x = (np.stack(arrays) - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return x.transpose(0, 3, 1, 2)

  def prompt(self, question: str, with_image: bool):
    from jaxprune.prompts import build_prompt
    return build_prompt(self.tokenizer, question, image_token_id=self.config.image_token_id if with_image else None,
                        num_image_tokens=self.config.num_image_tokens)

  def batch(self, prompts, pixels):
    """Pad to the bucket and to a full batch (repeating the first prompt), so shapes stay static."""
    from jaxprune.inputs import image_batch
    fill = self.batch_size - len(prompts)
    prompts = list(prompts) + [prompts[0]] * fill
    if pixels is not None:
      pixels = np.concatenate([pixels, np.repeat(pixels[:1], fill, axis=0)]) if fill else pixels
    return image_batch([p.ids for p in prompts], pixels, image_token_id=self.config.image_token_id,
                       num_image_tokens=self.config.num_image_tokens, pad_id=self.generator.pad_id,
                       multiple=self.bucket, query_spans=[p.question_span for p in prompts])

  def decode(self, tokens: np.ndarray) -> list[str]:
    from jaxprune.generate import trim_at_eos
    return [self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            for ids in trim_at_eos(tokens, self.generator.eos_ids)]

  def time_prefill(self, batch, pruner) -> float:
    """Milliseconds of one synchronised prefill (compiled once per bucket and plan, warmed up first)."""
    import jax
    from flax import nnx
    from jaxprune.generate import prefill
    if not hasattr(self, "_prefill"):
      graphdef = self.generator.graphdef

      def run(state, ids, valid, pixels, query, pruner):
        return prefill(nnx.merge(graphdef, state), (ids, valid, pixels, query), extra_slots=0,
                       prune_points_fn=pruner)[0]
      self._prefill = jax.jit(run, static_argnums=5)
    args = (self.generator.state, *self.generator.device_arrays(batch), pruner)
    jax.block_until_ready(self._prefill(*args))
    start = time.perf_counter()
    jax.block_until_ready(self._prefill(*args))
    return (time.perf_counter() - start) * 1e3


def relevant_cells(image_bytes: bytes, grid: tuple[int, int]) -> np.ndarray:
  """[gh * gw] bool: grid cells that hold any pixel of the easy-VQA shape (differs from the background)."""
  from jaxprune.data import shape_mask
  mask = np.asarray(shape_mask(image_bytes))
  gh, gw = grid
  h, w = mask.shape
  rows = [mask[r * h // gh:(r + 1) * h // gh] for r in range(gh)]
  return np.array([[row[:, c * w // gw:(c + 1) * w // gw].any() for c in range(gw)] for row in rows]).ravel()


# ------------------------------------------------------------------------------------------- the loop


def evaluate_task(runner: Runner, task: str, items: list[tuple[int, dict]], plans: list, log: SampleLog,
                  args, progress) -> None:
  """Answer every pending (config, item) pair, appending each finished batch to the sample log."""
  from jaxprune import cost
  from jaxprune.inputs import InputError, load_image
  from jaxprune.metrics import score_item
  from jaxprune.prune.pipeline import Pruner
  from jaxprune.prune.select import kept_map
  from jaxprune.sharding import to_host
  cfg, nv = runner.config, runner.config.num_image_tokens
  side = cfg.vision.image_size // cfg.vision.patch_size
  itemsize = runner.loaded.model.language_model.embed_tokens.embedding[...].dtype.itemsize  # KV cache dtype
  configs = [BLIND] if args.blind else [_config_key(p) for p in plans]
  for plan, config in zip([None] if args.blind else plans, configs):
    pruner = Pruner(plan, cfg) if plan is not None else None
    stages = [] if plan is None else [(s.layer, s.keep) for s in plan.stages]
    pending = [(i, it) for i, it in items if not log.done(task, config, it["id"])]
    progress.update(len(items) - len(pending))
    timed = sum(1 for r in log.records.values() if r["task"] == task and r["config"] == config
                and r.get("batch_prefill_ms") is not None)
    for start in range(0, len(pending), args.batch_size):
      chunk = pending[start:start + args.batch_size]
      records, ok, prompts, images = [], [], [], []
      for index, item in chunk:
        rec = {"task": task, "config": config, "id": item["id"], "index": index, "eval_mode": item["eval_mode"],
               "failed": None}
        try:
          if not args.blind:
            images.append(load_image(item["image"], name=f"{task} item {item['id']}"))
          prompts.append(runner.prompt(item.get("prompt") or item["question"], with_image=not args.blind))
          ok.append((rec, item))
        except InputError as e:
          rec.update(failed=str(e), score=0.0, correct=False)
        records.append(rec)
      if ok:
        pixels = runner.pixels(images) if images else None
        batch = runner.batch(prompts, pixels)
        out = runner.generator(batch, prune_points_fn=pruner)
        answers = runner.decode(to_host(out["tokens"])[:len(ok)])  # padding items never reach the results
        maps = to_host(kept_map(out["kept"], nv))[:len(ok)] if pixels is not None else None
        batch_ms = None
        if timed < args.time_batches:
          batch_ms, timed = runner.time_prefill(batch, pruner), timed + 1
        for j, ((rec, item), answer, prompt) in enumerate(zip(ok, answers, prompts)):
          scored = score_item(answer, item["all_answers"] or [item["answer"]], item["source"],
                              item.get("choices") or None)
          length = len(prompt.ids)
          if args.blind:
            flops, kv = cost.prefill_flops(cfg.text, length), cost.kv_cache_bytes(
                cfg.text, length, max_new_tokens=args.max_new_tokens, bytes_per_element=itemsize)
          else:
            flops = cost.prefill_flops(cfg, length, stages, num_visual=nv)
            kv = cost.kv_cache_bytes(cfg, length, stages, num_visual=nv, max_new_tokens=args.max_new_tokens,
                                     bytes_per_element=itemsize)
          rec.update(score=scored.score, correct=scored.correct, metric=scored.metric, fallback=scored.fallback,
                     prediction=scored.extracted, prompt_len=length, flops=flops, kv_bytes=kv,
                     batch_prefill_ms=batch_ms if j == 0 else None)
          if maps is not None:
            rec["kept"] = _bits(maps[j])
            if task == "easyvqa" and nv == side * side and item["image"]:
              relevant = relevant_cells(item["image"], (side, side))
              rec["recall"] = float((maps[j] & relevant).sum() / max(relevant.sum(), 1))
          if args.log_samples:
            rec.update(question=item["question"], answers=item["all_answers"] or [item["answer"]], output=answer)
      log.append(records)
      progress.update(len(chunk))


def summarise(task: str, config: str, records: list[dict], n_total: int, nv: int, seed: int) -> dict:
  from jaxprune.metrics import bootstrap_ci
  from jaxprune.prune.plan import PrunePlan
  records = sorted(records, key=lambda r: r["index"])
  scored = [r for r in records if not r["failed"]]
  scores = [r["score"] for r in scored]
  low, high = bootstrap_ci(scores, seed=seed)
  mean = lambda key: float(np.mean([r[key] for r in scored])) if scored else None
  timings = [r["batch_prefill_ms"] for r in records if r.get("batch_prefill_ms") is not None]
  maps = [_unbits(r["kept"], nv) for r in scored if r.get("kept")]
  recalls = [r["recall"] for r in scored if r.get("recall") is not None]
  direct = [r["score"] for r in scored if r["eval_mode"] != "judge"]
  if config in (NONE, BLIND):
    method, layer, keep = config, None, (nv if config == NONE else 0)
  else:
    stage = PrunePlan.parse(config).stages[-1]
    method, layer, keep = stage.method, stage.layer, stage.keep
  return {
      "task": task, "method": method, "layer": layer, "keep": keep, "plan": config,
      "n": len(scored), "n_total": n_total, "n_failed": len(records) - len(scored),
      "n_judge": sum(r["eval_mode"] == "judge" for r in scored),
      "n_fallback": sum(bool(r.get("fallback")) for r in scored),
      "accuracy": float(np.mean(scores)) if scores else None,
      "accuracy_direct": float(np.mean(direct)) if direct else None,
      "ci_low": None if not scores else float(low), "ci_high": None if not scores else float(high),
      "flops": mean("flops"), "prefill_ms": statistics.median(timings) if timings else None,
      "kv_bytes": mean("kv_bytes"),
      "kept_map": [round(float(x), 4) for x in np.mean(maps, axis=0)] if maps else None,
      "relevance_recall": float(np.mean(recalls)) if recalls else None,
  }


def run(args) -> dict:
  from tqdm import tqdm
  from jaxprune.data import known_tasks, load_task
  tasks = _split(args.tasks)
  for task in tasks:
    if task not in known_tasks():
      kind = "capability" if task.startswith("datbench:") else "task"
      raise EvalError(f"--tasks {task}: unknown {kind} (known: {', '.join(known_tasks())})")
  out = Path(args.output_path)
  try:
    out.mkdir(parents=True, exist_ok=True)
    probe = out / ".write_test"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise EvalError(f"--output-path {out}: not writable ({e.strerror or type(e).__name__})") from None
  drop = set()
  if args.drop_blind:
    try:
      drop_file = json.loads(Path(args.drop_blind).read_text())
    except (OSError, json.JSONDecodeError) as e:
      raise EvalError(f"--drop-blind {args.drop_blind}: cannot read ({type(e).__name__})") from None
    drop = {(task, i) for task, ids in drop_file.get("correct", {}).items() for i in ids}

  import jax
  from jaxprune.sharding import auto_mesh_sizes, make_mesh, parse_mesh
  try:
    sizes = parse_mesh(args.mesh, jax.device_count()) if args.mesh else auto_mesh_sizes(args.model, args.dtype)
  except ValueError as e:
    raise EvalError(str(e)) from None
  if args.batch_size % sizes["data"]:
    rounded = -(-args.batch_size // sizes["data"]) * sizes["data"]
    print(f"note: --batch-size {args.batch_size} rounded up to {rounded} to divide over {sizes['data']} data "
          f"shards (padding items are masked out)", file=sys.stderr)
    args.batch_size = rounded
  mesh = make_mesh(sizes)
  runner = Runner.load(args.model, dtype=args.dtype, max_new_tokens=args.max_new_tokens, bucket=args.bucket,
                       batch_size=args.batch_size, mesh=mesh)
  plans, notes = build_grid(args, runner.config)
  for note in notes:
    print(f"note: {note}", file=sys.stderr)
  header = {"model": args.model, "weights": weights_fingerprint(runner.loaded.path), "dtype": args.dtype,
            "max_new_tokens": args.max_new_tokens, "seed": args.seed}
  run_file = out / "run.json"
  if run_file.exists() and json.loads(run_file.read_text()) != header:
    before = json.loads(run_file.read_text())
    changed = ", ".join(k for k in header if before.get(k) != header[k])
    raise EvalError(f"--output-path {out}: holds samples of a different run ({run_file}: {changed} differ); "
                    f"choose another directory or delete it")
  writer = jax.process_index() == 0
  if writer:
    run_file.write_text(json.dumps(header))
  log = SampleLog(out / "samples.jsonl", writer=writer)

  datasets = {}
  for task in tasks:
    try:
      data = load_task(task, limit=args.limit, data_dir=args.data_dir, datbench_dir=args.datbench_dir)
    except (ValueError, OSError) as e:
      raise EvalError(f"--tasks {task}: {e}") from None
    all_items = list(enumerate(data))
    datasets[task] = (all_items, [(i, it) for i, it in all_items if (task, it["id"]) not in drop])
  n_configs = 1 if args.blind else len(plans)
  total = sum(len(kept) for _, kept in datasets.values()) * n_configs
  with tqdm(total=total, unit="item", desc="eval", dynamic_ncols=True, disable=None) as progress:
    for task, (_, items) in datasets.items():
      evaluate_task(runner, task, items, plans, log, args, progress)

  nv = runner.config.num_image_tokens
  configs = [BLIND] if args.blind else [_config_key(p) for p in plans]
  rows = []
  for task, (all_items, items) in datasets.items():
    ids = {it["id"] for _, it in items}
    for config in configs:
      records = [r for (t, c, i), r in log.records.items() if t == task and c == config and i in ids]
      rows.append(summarise(task, config, records, len(all_items), nv, args.seed))
  side = runner.config.vision.image_size // runner.config.vision.patch_size
  results = {"model": args.model, "num_visual": nv, "grid": [side, side] if side * side == nv else None,
             "command": "python -m jaxprune.eval " + " ".join(args.argv), "mesh": sizes, "rows": rows}
  if not writer:
    return results
  (out / "results.json").write_text(json.dumps(results, indent=1))
  if args.blind:
    correct = {task: sorted(i for (t, c, i), r in log.records.items() if t == task and c == BLIND and r["correct"])
               for task in datasets}
    (out / "blind_correct.json").write_text(json.dumps({"model": args.model, "correct": correct}, indent=1))
  return results


def weights_fingerprint(path: Path) -> str:
  """A short digest of a checkpoint's files (names, sizes, first and last MiB of each; the model card left out),
  so that resuming into a directory made with other weights is refused. Cheap even for a 14 GB checkpoint."""
  import hashlib
  path = Path(path)
  digest = hashlib.sha256()
  files = [path] if path.is_file() else sorted(
      f for f in path.rglob("*") if f.is_file() and f.name != "README.md" and not f.name.startswith("."))
  for f in files:
    size = f.stat().st_size
    digest.update(f"{f.name if f == path else f.relative_to(path).as_posix()}:{size}\n".encode())
    with open(f, "rb") as fh:
      digest.update(fh.read(1 << 20))
      if size > 2 << 20:
        fh.seek(-(1 << 20), os.SEEK_END)
        digest.update(fh.read())
  return digest.hexdigest()[:16]


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv:
    print("jaxprune demo: the shipped easy-VQA model, unpruned + a sweep of methods (python -m jaxprune.eval "
          "--help for options)", file=sys.stderr)
    argv = list(DEMO_ARGS)
  from jaxprune.convert.hf import CheckpointError
  try:
    args = parse_args(argv)
    args.argv = argv
    from jaxprune.sharding import initialize_distributed
    initialize_distributed(args.distributed)  # before anything touches a JAX backend
    results = run(args)
  except (EvalError, CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  out = Path(args.output_path)
  import jax
  if jax.process_index() != 0:
    return 0
  try:
    from jaxprune import report
    print(report.summary_table(results))
    if not args.no_plots:
      for path in report.write_plots(results, out):
        print(f"wrote {path}", file=sys.stderr)
  except ImportError:
    print(json.dumps(results["rows"], indent=1))
  print(f"results: {out / 'results.json'}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
