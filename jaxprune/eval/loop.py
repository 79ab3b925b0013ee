"""The run loop: load data and model, answer every pending (config, item) pair batch by batch into the sample log,
judge, summarise into results.json."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxprune import cost
from jaxprune.convert.hf import abstract_state_of
from jaxprune.data import load_task
from jaxprune.data import tasks as task_registry
from jaxprune.data.tasks import check_items, relevant_cells, task_for
from jaxprune.eval.common import BLIND, EvalError, config_key, split_list
from jaxprune.eval.grid import build_grid
from jaxprune.eval.records import (
  SampleLog,
  bits,
  blind_drops,
  check_resume,
  read_blind_file,
  run_id,
  weights_dtype,
  weights_fingerprint,
)
from jaxprune.eval.runner import TIME_ROUNDS, Runner, task_relevance_signals, with_relevance_table
from jaxprune.eval.summary import prefill_reference, prefill_timing, summarise
from jaxprune.generate import FORK_ROWS
from jaxprune.inputs import InputError, item_keys
from jaxprune.judge import Judge, JudgeError, check_judge
from jaxprune.models.base import kv_dtype
from jaxprune.prune.methods import METHODS
from jaxprune.prune.pipeline import Pruner
from jaxprune.prune.select import kept_map
from jaxprune.sharding import auto_mesh_sizes, make_mesh, parse_mesh, to_host


@dataclasses.dataclass
class Job:
  """One config of the grid on one task: its plan, its pruner and the items it still has to answer."""

  plan: object  # a PrunePlan, or None (the baseline, or --blind)
  config: str
  pruner: Pruner | None
  pending: set  # item ids not in the sample log yet
  timed: int  # batches whose prefill was timed so far (--time-batches)

  @property
  def text_query(self) -> bool:
    """Whether a stage scores against the question alone (`Method.reads_question`): an empty question leaves it
    no query, so its scores are all zero."""
    return self.plan is not None and any(METHODS[s.method].reads_question(s) for s in self.plan.stages)

  @property
  def stages(self) -> list[tuple[int, int]]:
    return [] if self.plan is None else [(s.layer, s.keep) for s in self.plan.stages]


# plans whose compiled programs may be alive at once in a shared-prefix evaluation (`evaluate_task`)
MAX_LIVE_PLANS = 32


def evaluate_task(runner: Runner, task: str, items: list[tuple[int, dict]], plans: list, log: SampleLog,
                  args, progress, run: str | None = None) -> None:
  """Answer every pending (config, item) pair, appending each finished batch to the sample log.

  By default the grid shares its prefix (`Generator.grid`): each batch of items is answered by every plan of a
  chunk that still needs it, with the vision tower run once and the decoder once per distinct first prune layer.
  A plan's rows are bit-identical whatever else is in the grid (on CPU; see `Generator.grid`), so one plan
  evaluated alone (also through `Generator.grid`) gives exactly the rows it gets in any sweep. With --per-plan
  (and for --blind) each plan runs alone through `Generator.__call__`'s single fused program, the reference
  path: the same answers except where a score or logit tie falls within float noise (~1e-7; XLA fuses
  differently across program boundaries).
  `prefill_ms` always comes from timing each plan's prefill alone, in interleaved rounds with the unpruned prefill
  (`Runner.time_prefills`). Every record gets `run` (the run identity, `records.run_id`) when given.

  Memory: jax keeps every compiled program alive, and every plan compiles its own (its fork of the grid, its
  timed prefill), so a grid of 125 plans on a 12-layer model once ran out of memory compiling. The shared path
  therefore takes the plans in chunks of at most MAX_LIVE_PLANS, sorted by first
  prune layer so that plans sharing a prefix stay together: every batch of items goes through one chunk's plans,
  then the chunk's programs are released (`Runner.release_programs`) before the next. What is alive at any time: one
  prefix state, at most MAX_LIVE_PLANS fork programs (and timed prefills) and one decode program per distinct
  kept-length layout among them, per bucket; plus the vision and prefix programs (per bucket, and prefix layer).
  Sharing is lost only at chunk boundaries: each chunk runs the vision tower and the prefix again. The per-plan
  path releases each plan's programs after it, the same way. Each batch is still appended as it finishes, so a
  crash loses at most one batch, and a resumed run picks up the pending pairs chunk by chunk.
  """
  configs = [BLIND] if args.blind else [config_key(p) for p in plans]
  jobs = []
  for plan, config in zip([None] if args.blind else plans, configs):
    pending = {it["id"] for _, it in items if not log.done(task, config, it["id"])}
    timed = sum(1 for r in log.records.values() if r["task"] == task and r["config"] == config
                and r.get("batch_prefill_ms") is not None)
    jobs.append(Job(plan, config, None if plan is None else Pruner(plan, runner.config), pending, timed))
    progress.update(len(items) - len(pending))
  shared = not args.blind and not getattr(args, "per_plan", False)  # one plan too: its rows never depend on the grid
  relevance: dict[str, np.ndarray] = {}  # ground truth per slot: read once per item, whatever the number of plans
  groups = plan_chunks(jobs, MAX_LIVE_PLANS) if shared else [[job] for job in jobs]
  for n, group in enumerate(groups):
    if n:
      runner.release_programs()  # the previous group has answered every item: its programs are not needed again
    todo = [(i, it) for i, it in items if any(it["id"] in job.pending for job in group)]
    for start in range(0, len(todo), args.batch_size):
      chunk = todo[start:start + args.batch_size]
      records = answer_batch(runner, task, chunk, group, relevance, args, shared=shared)
      for rec in records if run is not None else ():
        rec["run"] = run
      log.append(records)
      progress.update(sum(it["id"] in job.pending for job in group for _, it in chunk))
      for job in group:
        job.pending -= {it["id"] for _, it in chunk}
  for config in configs:
    nonfinite = sum(1 for _, it in items if log.records.get((task, config, it["id"]), {}).get("nonfinite"))
    if nonfinite:
      print(f"warning: {task} {config}: {nonfinite} item(s) got NaN/inf logits, so their answers are not the "
            f"model's (n_nonfinite in the row); try --dtype float32", file=sys.stderr)
    no_query = sum(1 for _, it in items if log.records.get((task, config, it["id"]), {}).get("no_query"))
    if no_query:
      print(f"note: {task} {config}: {no_query} item(s) have an empty question (no query tokens); a method that "
            f"scores against the question (latesim, embedsim, fastv[query=question]) scores them all zero and keeps the first visual "
            f"tokens (top image rows): counted as n_no_query",
            file=sys.stderr)


def plan_chunks(jobs: list[Job], size: int) -> list[list[Job]]:
  """The jobs in chunks of at most `size`, sorted by first prune layer (the baseline last) and then by stages, so
  that plans forking from one prefix state, and plans sharing a decode program (equal stages), stay together
  wherever a cut allows."""
  if size < 1:
    raise ValueError(f"chunks of at least 1 plan, got {size}")
  order = sorted(jobs, key=lambda job: (job.stages[0][0] if job.stages else math.inf, job.stages))
  return [order[i:i + size] for i in range(0, len(order), size)]


def prepare_items(runner: Runner, task: str, chunk: list[tuple[int, dict]], args) -> tuple[list, list, list, dict]:
  """-> (items that can run, their prompts, their pixels, {id: why} for those that cannot): an item whose image or
  prompt the model cannot take fails alone, with its reason, and the batch goes on without it."""
  max_positions = runner.config.text.max_position_embeddings
  ok, prompts, images, failed = [], [], [], {}
  for index, item in chunk:
    name = f"{task} item {item['id']}"
    try:
      # one image at a time, so an image that PIL or the processor refuses fails its item, not the run
      image = None if args.blind else runner.item_pixels(item["image"], name)
      prompt = runner.prompt(item.get("prompt") or item["question"], with_image=not args.blind, name=name)
      if len(prompt.ids) + args.max_new_tokens > max_positions:
        raise InputError(f"{name}: prompt of {len(prompt.ids)} tokens + --max-new-tokens "
                         f"{args.max_new_tokens} exceeds the model's max_position_embeddings {max_positions}")
    except InputError as e:
      failed[item["id"]] = str(e)
      continue
    if image is not None:
      images.append(image)
    prompts.append(prompt)
    ok.append((index, item))
  return ok, prompts, images, failed


def build_batch(runner: Runner, task: str, ok: list, prompts: list, images: list, failed: dict):
  """The padded batch of the prepared items -> (batch or None, the items in it, their prompts). Should the host
  refuse the batch, each item is tried alone: those it refuses fail with its reason, the rest run."""
  join = lambda some: runner.host.join(some) if some else None
  try:
    return runner.batch(prompts, join(images)), ok, prompts
  except ValueError:  # InputError included: find the item(s) at fault
    pass
  keep = []
  for k, (_, item) in enumerate(ok):
    try:
      runner.batch([prompts[k]], join(images[k:k + 1]))
      keep.append(k)
    except ValueError as e:
      failed[item["id"]] = f"{task} item {item['id']}: {(str(e).splitlines() or [''])[0]}"
  ok, prompts, images = [ok[k] for k in keep], [prompts[k] for k in keep], [images[k] for k in keep if images]
  return (runner.batch(prompts, join(images)) if ok else None), ok, prompts


def answer_batch(runner: Runner, task: str, chunk: list[tuple[int, dict]], jobs: list[Job],
                 relevance: dict[str, np.ndarray], args, *, shared: bool) -> list[dict]:
  """One batch of items for every job that still needs any of them -> their sample records."""
  cfg = runner.config
  with_relevance = not args.blind and "relevance" in task_relevance_signals(task, cfg)
  ok, prompts, images, failed = prepare_items(runner, task, chunk, args)
  batch, ok, prompts = build_batch(runner, task, ok, prompts, images, failed) if ok else (None, ok, prompts)
  outputs, relevant = [None] * len(jobs), []
  if batch is not None:
    batch = batch.replace(item_key=item_keys([item["id"] for _, item in ok], batch.size))  # per-item draws
    for _, item in ok if with_relevance else ():
      if item["id"] not in relevance:
        relevance[item["id"]] = relevant_cells(task, item, cfg.grid)
    relevant = [relevance.get(item["id"]) for _, item in ok]
    if with_relevance:
      batch = with_relevance_table(batch, relevant)
    if shared:  # only the plans that still need an item here (a resumed run may have answered the rest)
      needed = [k for k, job in enumerate(jobs) if any(item["id"] in job.pending for _, item in ok)]
      for k, out in zip(needed, runner.generator.grid(batch, [jobs[k].pruner for k in needed])):
        outputs[k] = out
    else:
      outputs = [runner.generator(batch, prune_points_fn=jobs[0].pruner)]
  timings = time_jobs(runner, batch, jobs, outputs, args)
  records = []
  for job, out in zip(jobs, outputs):
    for index, item in chunk:
      if item["id"] in job.pending and item["id"] in failed:
        records.append({"task": task, "config": job.config, "id": item["id"], "index": index,
                        "eval_mode": item["eval_mode"], "failed": failed[item["id"]], "score": 0.0, "correct": False})
    if out is not None:
      records += job_records(runner, task, job, out, batch, ok, prompts, relevant, timings.get(id(job)), args)
  return records


def time_jobs(runner: Runner, batch, jobs: list[Job], outputs: list, args) -> dict:
  """id(job) -> its prefill timings on this batch ({"plan": [ms], "none": [ms]}, `Runner.time_prefills`), for the
  jobs that answered it and still have batches to time (--time-batches), all in the same interleaved rounds."""
  timed = [job for job, out in zip(jobs, outputs) if out is not None and job.timed < args.time_batches]
  if not timed:
    return {}
  for job in timed:
    job.timed += 1
  return {id(job): t for job, t in zip(timed, runner.time_prefills(batch, [job.pruner for job in timed]))}


def job_records(runner: Runner, task: str, job: Job, out: dict, batch, ok: list, prompts: list, relevant: list,
                timing: dict | None, args) -> list[dict]:
  """The sample records of one job's answers on one batch (the timing on the first of them)."""
  cfg, nv = runner.config, runner.config.visual_tokens_per_image  # nv None: it depends on the image
  itemsize = jnp.dtype(kv_dtype(runner.loaded.model)).itemsize  # KV cache dtype
  n_visual = (batch.layout.valid.sum(axis=1) if batch.layout is not None
              else np.full(batch.size, nv or 0))  # [B] visual tokens of each prompt
  answers = runner.decode(to_host(out["tokens"])[:len(ok)])  # padding items never reach the results
  nonfinite = to_host(out["nonfinite"])[:len(ok)]  # [B] NaN/inf first-token logits per item
  slots = batch.layout.max_visual if batch.layout is not None else nv
  maps = None if args.blind else to_host(kept_map(out["kept"], slots))[:len(ok)]
  records = []
  for j, ((index, item), answer, prompt) in enumerate(zip(ok, answers, prompts)):
    if item["id"] not in job.pending:
      continue
    rec = {"task": task, "config": job.config, "id": item["id"], "index": index, "eval_mode": item["eval_mode"],
           "failed": None}
    if job.text_query and prompt.question_span[0] == prompt.question_span[1]:
      rec["no_query"] = True  # all-zero scores: see the note in evaluate_task
    scored = task_registry.score_item(task, answer, item)  # the harness's scorer, or the task's own
    length = int(np.asarray(batch.valid[j]).sum())  # the prompt as the model saw it (images expanded)
    flops, kv = item_cost(cfg, job.plan or (), length, int(n_visual[j]), args, itemsize)
    if item["eval_mode"] == "judge":
      rec["output"] = answer  # the judge reads the raw response, as the harness sends it
    rec.update(score=scored.score, correct=scored.correct, metric=scored.metric, fallback=scored.fallback,
               supported=scored.supported, prediction=scored.extracted, prompt_len=length, flops=flops, kv_bytes=kv,
               batch_prefill_ms=None if records else timing, nonfinite=int(nonfinite[j]))
    if maps is not None:
      kept = maps[j][:int(n_visual[j])]  # this prompt's own visual tokens, in slot order
      rec.update(kept=bits(kept), n_visual=int(n_visual[j]), grids=item_grids(batch.layout, j, cfg, n_visual[j]))
      if relevant[j] is not None:
        rec["recall"] = float((kept & relevant[j]).sum() / max(relevant[j].sum(), 1))
        rec["relevant"] = bits(relevant[j])
    if args.log_samples:
      rec.update(question=item["question"], answers=item["all_answers"], output=answer)
    records.append(rec)
  return records


def item_grids(layout, row: int, cfg, n_visual: int) -> list[list[int]]:
  """[t, grid_h, grid_w] of each image (or view) behind a prompt's visual slots, in slot order: where each kept
  token lies (the study's position analysis). Without a layout, the family's one fixed grid per image."""
  if layout is None:
    gh, gw = cfg.grid
    return [[1, gh, gw]] * (int(n_visual) // (gh * gw))
  image, valid = np.asarray(layout.image[row]), np.asarray(layout.valid[row])
  grids = []
  for i in range(int(image[valid].max()) + 1 if valid.any() else 0):
    at = np.flatnonzero(valid & (image == i))
    h, w = int(layout.grid_h[row][at[0]]), int(layout.grid_w[row][at[0]])
    grids.append([len(at) // (h * w), h, w])
  return grids


def item_cost(cfg, stages, length: int, visual: int, args, itemsize: int) -> tuple[float, int]:
  """(prefill FLOPs, KV-cache bytes) of one prompt of `length` tokens, `visual` of them visual, under the job's
  validated plan (`()` for the baseline)."""
  kv = dict(max_new_tokens=args.max_new_tokens, bytes_per_element=itemsize)
  if args.blind:
    return cost.prefill_flops(cfg.text, length), cost.kv_cache_bytes(cfg.text, length, **kv)
  return (cost.prefill_flops(cfg, length, stages, num_visual=visual),
          cost.kv_cache_bytes(cfg, length, stages, num_visual=visual, **kv))


def judge_setup(args, datasets: dict) -> str | None:
  """The judge's identity (`jaxprune.judge.check_judge`) when --judge has items to judge, checked before any item
  is answered (one line if it cannot be loaded); None, with a note, when no loaded item is eval_mode=judge."""
  if not args.judge:
    return None
  judged = [t for t, items in datasets.items() if any(it["eval_mode"] == "judge" for _, it in items)]
  if not judged:
    print(f"note: --judge {args.judge}: {', '.join(datasets)} hold(s) no eval_mode=judge items; the judge is not "
          f"used", file=sys.stderr)
    return None
  try:
    identity = check_judge(args.judge, args.dtype)
    for task in judged:  # the judge prompts come from the task's source files
      task_registry.judge_prompts(task, args.datbench_dir)
  except JudgeError as e:
    raise EvalError(str(e)) from None
  except (OSError, ValueError) as e:
    raise EvalError(f"--judge: the judge prompts of {task} cannot be read ({e})") from None
  return identity


def judge_items(args, datasets: dict, log: SampleLog, judge_id: str) -> None:
  """Scores every answered eval_mode=judge item with the --judge model (once: a resumed run skips the items this
  judge has judged; a verdict of unknown origin, from an older version, is judged again)."""
  items = {(t, it["id"]): it for t, (all_items, _) in datasets.items() for _, it in all_items}
  pending = [r for (t, _, i), r in log.records.items() if (t, i) in items
             and r["eval_mode"] == "judge" and not r["failed"]
             and ("judge_score" not in r or r.get("judge") != judge_id)]
  if not pending:
    return
  prompts = {}
  for task in sorted({r["task"] for r in pending}):
    prompts.update({(task, i): p for i, p in task_registry.judge_prompts(task, args.datbench_dir).items()})
  try:
    judge = Judge(args.judge, dtype=args.dtype)
  except JudgeError as e:
    raise EvalError(str(e)) from None
  requests = [(prompts.get((r["task"], r["id"]), ""), r.get("output", ""), items[(r["task"], r["id"])]["answer"])
              for r in pending]
  for rec, verdict in zip(pending, judge(requests)):
    rec.update(judge_score=verdict.score, judge_verdict=verdict.verdict, judge_output=verdict.raw, judge=judge_id)
  log.append(pending)  # the judged copies supersede the first lines when the log is read back


def check_tasks_and_output(args) -> tuple[list[str], Path, dict | None]:
  """The task list, the (writable) output directory and the --drop-blind file, all checked."""
  tasks = split_list(args.tasks)
  for task in tasks:
    try:
      task_for(task)
    except ValueError as e:
      raise EvalError(f"--tasks {task}: {e}") from None
  out = Path(args.output_path)
  try:
    out.mkdir(parents=True, exist_ok=True)
    probe = out / ".write_test"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise EvalError(f"--output-path {out}: not writable ({e.strerror or type(e).__name__})") from None
  blind_file = read_blind_file(args.drop_blind) if args.drop_blind else None
  for task in tasks if blind_file is not None else ():
    if task not in blind_file["tasks"]:
      raise EvalError(f"--drop-blind {args.drop_blind}: has no blind results for {task} (it covers: "
                      f"{', '.join(blind_file['tasks']) or 'nothing'})")
  return tasks, out, blind_file


def load_datasets(args, tasks: list[str]) -> tuple[dict, dict]:
  """task -> [(index, item)] and task -> data fingerprint; one line for missing or damaged data, an item its
  scorer cannot score, or two items with one id (the sample log, resume and --drop-blind key on ids: one of
  the two would silently stand for both)."""
  datasets, fingerprints = {}, {}
  for task in tasks:
    try:
      data = load_task(task, limit=args.limit, data_dir=args.data_dir, datbench_dir=args.datbench_dir)
    except (ValueError, OSError) as e:
      raise EvalError(f"--tasks {task}: {e}") from None
    datasets[task], fingerprints[task] = list(enumerate(data)), data.fingerprint
    first = {}
    for index, item in datasets[task]:
      if item["id"] in first:
        raise EvalError(f"--tasks {task}: item id {item['id']!r} appears twice (items {first[item['id']]} and "
                        f"{index} of the source, counting from 0); ids must be unique: fix the data")
      first[item["id"]] = index
    try:
      check_items(task, [it for _, it in datasets[task]])  # e.g. DatBench's harness refuses these items too
    except ValueError as e:
      raise EvalError(f"--tasks {e}") from None
  return datasets, fingerprints


def load_runner(args, tasks: list[str]) -> tuple[Runner, dict]:
  """The model side, its inputs checked (images, --max-new-tokens) before anything compiles -> (runner, mesh)."""
  if args.dtype == "float16" and jax.default_backend() == "cpu":
    raise EvalError("--dtype float16: not supported on CPU (XLA emulates it slowly and overflows); use float32 or "
                    "bfloat16")
  try:
    sizes = parse_mesh(args.mesh, jax.device_count()) if args.mesh else auto_mesh_sizes(
        lambda: abstract_state_of(args.model, args.dtype))
  except ValueError as e:
    raise EvalError(str(e)) from None
  if args.batch_size % sizes["data"]:
    rounded = -(-args.batch_size // sizes["data"]) * sizes["data"]
    print(f"note: --batch-size {args.batch_size} rounded up to {rounded} to divide over {sizes['data']} data "
          f"shards (padding items are masked out)", file=sys.stderr)
    args.batch_size = rounded
  runner = Runner.load(args.model, dtype=args.dtype, max_new_tokens=args.max_new_tokens, bucket=args.bucket,
                       batch_size=args.batch_size, mesh=make_mesh(sizes),
                       fork_rows=getattr(args, "fork_rows", FORK_ROWS))
  runner.check_inputs(args.model, args.max_new_tokens, with_image=not args.blind)
  return runner, sizes


def run(args) -> dict:
  tasks, out, blind_file = check_tasks_and_output(args)
  # data first: a missing or damaged data set is reported before the model loads; then the judge
  datasets, fingerprints = load_datasets(args, tasks)
  judge_id = judge_setup(args, datasets)
  runner, sizes = load_runner(args, tasks)
  # the oracle bounds need every task to know its relevant cells
  task_signals = frozenset.intersection(*(task_relevance_signals(t, runner.config) for t in tasks))
  plans, notes = build_grid(args, runner.config, task_signals)
  for note in notes:
    print(f"note: {note}", file=sys.stderr)
  # everything that changes answers; the --model spelling does not (a path and a registry name may agree)
  header = {"model": args.model, "weights": weights_fingerprint(runner.loaded.path),
            "dtype": weights_dtype(runner.loaded.model), "max_new_tokens": args.max_new_tokens, "seed": args.seed,
            "bucket": args.bucket, "batch_size": args.batch_size, "data": fingerprints, "judge": judge_id,
            "judge_model": args.judge if judge_id else None}
  writer = jax.process_index() == 0
  log = SampleLog(out / "samples.jsonl", writer=writer)
  header = check_resume(out, header, log)
  if writer:
    (out / "run.json").write_text(json.dumps(header))

  drop, untested = set(), {}
  if blind_file is not None:
    drop, untested = blind_drops(blind_file, args, header, datasets)
  datasets = {task: (all_items, [(i, it) for i, it in all_items if (task, it["id"]) not in drop])
              for task, all_items in datasets.items()}
  n_configs = 1 if args.blind else len(plans)
  total = sum(len(kept) for _, kept in datasets.values()) * n_configs
  with tqdm(total=total, unit="item", desc="eval", dynamic_ncols=True, disable=None) as progress:
    for task, (_, items) in datasets.items():
      evaluate_task(runner, task, items, plans, log, args, progress, run=run_id(header, task))
  if judge_id:
    judge_items(args, datasets, log, judge_id)
  results = summarise_run(args, runner, plans, datasets, log, header, untested if blind_file is not None else None,
                          sizes)
  if writer:
    write_outputs(out, args, results, log, header, datasets)
  refuse_if_all_failed(results["rows"], log, out)
  return results


def summarise_run(args, runner: Runner, plans: list, datasets: dict, log: SampleLog, header: dict,
                  untested: dict | None, sizes: dict) -> dict:
  """results.json: one row per (task, config) and what the numbers mean."""
  nv = runner.config.visual_tokens_per_image
  configs = [BLIND] if args.blind else [config_key(p) for p in plans]
  rows, timing = [], []
  for task, (all_items, items) in datasets.items():
    ids = {it["id"] for _, it in items}
    by_config = {c: [r for (t, cc, i), r in log.records.items() if t == task and cc == c and i in ids]
                 for c in configs}
    reference = prefill_reference([r for records in by_config.values() for r in records])
    for config in configs:
      rows.append(summarise(task, config, by_config[config], len(all_items), nv, args.seed, reference))
      timing.append({"task": task, "plan": config, **prefill_timing(by_config[config])})
      if untested is not None:
        rows[-1]["n_blind_untested"] = untested[task]  # kept: --drop-blind has no blind answer for them
  grid = runner.config.grid
  measured = [t["noise"] for t in timing if t.get("noise") is not None]
  return {"model": args.model, "num_visual": nv,
          "grid": list(grid) if grid and nv and grid[0] * grid[1] == nv else None,
          "command": "python -m jaxprune.eval " + " ".join(args.argv), "mesh": sizes,
          "judge": header.get("judge_model"),  # the model that judged the judge items (None: none did)
          # how answers were computed (per-plan: the fused reference program, equal but for float-noise ties)
          "evaluation": "blind" if args.blind else ("per-plan" if getattr(args, "per_plan", False)
                                                    else "shared-prefix"),
          "prefill_ms": PREFILL_MS, "prefill_noise": max(measured) if measured else None,
          "prefill": {"rounds": TIME_ROUNDS, "rows": timing},
          "rows": rows}


PREFILL_MS = (f"each plan's prefill run alone (vision tower included), timed in {TIME_ROUNDS} interleaved rounds per "
              f"timed batch together with a reference call of the unpruned prefill: every row (the unpruned one "
              f"too) is the reference's median over the task's rounds times the row's median same-round ratio to "
              f"it, so load on the machine cannot invert a ratio; prefill_noise: the largest relative median "
              f"absolute deviation of a row's same-round ratios (per row, and the raw medians: prefill.rows)")


def write_outputs(out: Path, args, results: dict, log: SampleLog, header: dict, datasets: dict) -> None:
  (out / "results.json").write_text(json.dumps(results, indent=1))
  if not args.blind:
    return
  blind = {task: {r["id"]: r["correct"] for (t, c, _), r in log.records.items() if t == task and c == BLIND}
           for task in datasets}
  correct = {task: sorted(i for i, ok in answers.items() if ok) for task, answers in blind.items()}
  (out / "blind_correct.json").write_text(json.dumps({
      "model": args.model, "weights": header["weights"], "dtype": header["dtype"],
      "tasks": {task: {"data": header["data"][task], "tested": sorted(blind[task]), "correct": correct[task]}
                for task in datasets},
      "correct": correct}, indent=1))


def refuse_if_all_failed(rows: list[dict], log: SampleLog, out: Path) -> None:
  """A run where every item failed ends in one line saying why (not exit 0 with an empty table)."""
  failed = sum(r["n_failed"] for r in rows)
  if failed == 0 or any(r["n"] for r in rows):
    return
  tasks = {r["task"] for r in rows}
  reasons = [r["failed"] for r in log.records.values() if r.get("failed") and r["task"] in tasks]
  raise EvalError(f"every item failed ({failed} in {len(rows)} row(s)), e.g. {reasons[0] if reasons else '?'} "
                  f"(each item's reason: {out / 'samples.jsonl'}, key 'failed')")
