"""Shared-prefix grids (`Generator.grid`, the eval's default path) give the answers of running each plan alone:
tokens, kept tokens and rows exactly, logits within float32 fusion noise (~1e-7; XLA fuses across jit pieces)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import TINY_NV, tiny_pixels, tiny_prompt
from flax import nnx

from jaxprune import eval as jeval
from jaxprune.core import decoding
from jaxprune.eval import loop
from jaxprune.generate import Generator, decoder_inputs, pad_batch
from jaxprune.models.base import language_model
from jaxprune.prune.pipeline import Pruner

ROOT = Path(__file__).resolve().parents[1]
EIGHT_DEVICES = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", PYTHONUNBUFFERED="1")

# All eleven methods, folded into few plans so the grid compiles few programs: first prune layers 0 (four
# plans share it), 1, 2 and 3, so the walk advances the shared prefix three times; multi-stage plans; an identity
# keep (prunes nothing) and the baseline. The tiny LLaVA has 4 decoder layers and 16 visual tokens.
PLANS = [None, f"fastv@1:{TINY_NV}", "embedsim@0:12+latesim@1:8+fastv@3:4",
         "divprune@0:10+clsattn@2:6+random@3:3[seed=3]", "visionzip@0:6", "pool@0:4", "oracle@1:10+latesim@2:6",
         "uniform@2:9+anti-oracle@3:5", "fastv@3:3"]
# float32 logits of a prefill cut into jit programs differ from one program by ~1e-7 (XLA fuses differently
# across program boundaries); tokens, kept maps and answers must still agree exactly
LOGITS_ATOL = 1e-5


def _batch(size: int):
  """`size` prompts of different lengths, left-padded to one bucket, with relevance for the oracle bounds."""
  shapes = [(2, 5), (6, 9), (3, 2), (4, 4)][:size]
  prompts = [tiny_prompt(before, after, seed=80 + i) for i, (before, after) in enumerate(shapes)]
  spans = [(1 + before + TINY_NV, 1 + before + TINY_NV + after) for before, after in shapes]
  batch = pad_batch(prompts, pad_id=0, multiple=16, query_spans=spans, pixels=tiny_pixels(size, seed=5))
  relevance = (np.random.RandomState(1).rand(size, TINY_NV) < 0.3).astype(np.float32)
  return batch.replace(relevance=relevance)


@pytest.fixture(scope="module")
def generator(tiny_llava_jax):
  """One Generator for the module, so its compiled programs are shared by the tests."""
  return Generator(tiny_llava_jax.model, max_new_tokens=3, eos_ids=(), pad_id=0)


def _assert_same(alone: dict, shared: dict, plan) -> None:
  for key in ("tokens", "nonfinite"):
    np.testing.assert_array_equal(np.asarray(shared[key]), np.asarray(alone[key]), err_msg=f"{plan}: {key}")
  assert shared["kv_bytes"] == alone["kv_bytes"], plan
  for field, a, b in zip(alone["kept"].__dataclass_fields__, jax.tree.leaves(alone["kept"]),
                         jax.tree.leaves(shared["kept"])):
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=f"{plan}: kept {field}")
  np.testing.assert_allclose(np.asarray(shared["logits"]), np.asarray(alone["logits"]), rtol=0, atol=LOGITS_ATOL,
                             err_msg=f"{plan}: logits")


def test_grid_equals_each_plan_alone(tiny_llava_jax, generator):
  batch = _batch(4)
  cfg = tiny_llava_jax.config
  pruners = [None if p is None else Pruner.build(p, cfg, frozenset({"relevance"})) for p in PLANS]
  compiles = generator.compiles
  shared = generator.grid(batch, pruners, keep_logits=True)
  # vision once, the prefix advanced to layers 1, 2 and 3, one continuation per plan, one decode per cache layout:
  # the baseline and the identity keep (fastv@1:16) share theirs
  assert generator.compiles - compiles == 1 + 3 + len(PLANS) + len(PLANS) - 1
  alone = [generator(batch, prune_points_fn=pruner, keep_logits=True) for pruner in pruners]
  for plan, a, out in zip(PLANS, alone, shared):
    _assert_same(a, out, plan)
  kept = [int(np.asarray(out["kept"].valid).sum(axis=1)[0]) for out in shared]
  assert len(set(kept)) > 3, kept  # the plans really prune differently


def test_a_plans_outputs_do_not_depend_on_its_grid(tiny_llava_jax, generator):
  """Bit for bit, logits included: each plan alone (`grid(batch, [plan])`, the eval's one-plan path), in the
  full grid, and in a grid of itself and plans at other layers. The prefix advances one layer per program, so
  no plan's numbers depend on where the walk stopped for the others."""
  batch = _batch(4)
  pruners = [None if p is None else Pruner.build(p, tiny_llava_jax.config, frozenset({"relevance"})) for p in PLANS]
  full = generator.grid(batch, pruners, keep_logits=True)
  reversed_pair = generator.grid(batch, [pruners[-1], pruners[2]], keep_logits=True)  # first layers 3 and 0
  for plan, pruner, together in zip(PLANS, pruners, full):
    alone, = generator.grid(batch, [pruner], keep_logits=True)
    for a, b in [(alone, together)] + ([(alone, reversed_pair[0])] if plan == PLANS[-1] else []):
      for key in ("tokens", "logits", "nonfinite"):
        np.testing.assert_array_equal(np.asarray(b[key]), np.asarray(a[key]), err_msg=f"{plan}: {key}")
      for x, y in zip(jax.tree.leaves(a["kept"]), jax.tree.leaves(b["kept"])):
        np.testing.assert_array_equal(np.asarray(y), np.asarray(x), err_msg=f"{plan}: kept")
  for key in ("tokens", "logits"):
    np.testing.assert_array_equal(np.asarray(reversed_pair[1][key]), np.asarray(full[2][key]), err_msg=PLANS[2])


# chunks of two as the eval sorts them (first prune layer, then stages): [pool@0:4, visionzip@0:4] prune to the same
# shapes at one layer, so they share one stacked continuation and its decode; [divprune@0:10,
# oracle@1:10+latesim@2:6] share nothing (a multi-stage plan forks alone), [random@3:3, fastv@3:3] stack, [none] is
# alone
CHUNKED = [None, "random@3:3", "pool@0:4", "oracle@1:10+latesim@2:6", "visionzip@0:4", "fastv@3:3", "divprune@0:10"]


# one-point plans that prune to the same shapes at one layer: one stacked continuation (plan-major rows)
STACKED = ["latesim@2:7", "random@2:7[seed=1]", "clsattn@2:7", "fastv@2:7", "uniform@2:7"]


def test_stacked_continuations_equal_each_plan_alone(tiny_llava_jax):
  """Plans with one prune point and equal pruned shapes continue as one program of P*B rows (what makes a large
  grid cheap on small batches), up to `fork_rows` rows at a time: each plan's tokens, kept tokens, logits and
  kv bytes are bit-identical to its grid of one, and equal to the fused `__call__` as the other grids are."""
  batch = _batch(4)
  pruners = [Pruner.build(p, tiny_llava_jax.config) for p in STACKED]
  generator = Generator(tiny_llava_jax.model, max_new_tokens=3, eos_ids=(), pad_id=0, fork_rows=12)
  compiles = generator.compiles
  together = generator.grid(batch, pruners, keep_logits=True)
  # vision, the prefix to layer 2 (two programs), forks of 3 and 2 plans (12 rows at most), their two decodes
  assert generator.compiles - compiles == 1 + 2 + 2 + 2
  assert generator.plan_programs() == (2, 2)
  for plan, pruner, out in zip(STACKED, pruners, together):
    alone, = generator.grid(batch, [pruner], keep_logits=True)
    for key in ("tokens", "logits", "nonfinite", "kv_bytes"):
      np.testing.assert_array_equal(np.asarray(out[key]), np.asarray(alone[key]), err_msg=f"{plan}: {key}")
    for x, y in zip(jax.tree.leaves(alone["kept"]), jax.tree.leaves(out["kept"])):
      np.testing.assert_array_equal(np.asarray(y), np.asarray(x), err_msg=f"{plan}: kept")
    _assert_same(generator(batch, prune_points_fn=pruner, keep_logits=True), out, plan)
  kept = [np.asarray(out["kept"].patch) for out in together]
  assert not all(np.array_equal(kept[0], k) for k in kept[1:])  # the stacked plans kept different tokens


def test_chunked_grid_bounds_live_programs(tiny_llava_jax, generator):
  """The grid in chunks of at most two plans with `release_plan_programs` between them, as the eval runs it: never
  more than two fork programs alive, one decode program per cache layout (plans with equal stages share it, whatever
  their method), and the answers of each plan run alone."""
  batch = _batch(4)
  cfg = tiny_llava_jax.config
  pruners = [None if p is None else Pruner.build(p, cfg, frozenset({"relevance"})) for p in CHUNKED]
  alone = {p or "none": generator(batch, prune_points_fn=pruner, keep_logits=True)
           for p, pruner in zip(CHUNKED, pruners)}
  jobs = [loop.Job(pruner and pruner.plan, p or "none", pruner, set(), 0) for p, pruner in zip(CHUNKED, pruners)]
  chunks = loop.plan_chunks(jobs, 2)
  assert [[job.config for job in chunk] for chunk in chunks] == [
      ["pool@0:4", "visionzip@0:4"], ["divprune@0:10", "oracle@1:10+latesim@2:6"], ["random@3:3", "fastv@3:3"],
      ["none"]]
  live = []
  for chunk in chunks:
    generator.release_plan_programs()
    assert generator.plan_programs() == (0, 0) and generator._run._cache_size() == 0
    outputs = generator.grid(batch, [job.pruner for job in chunk], keep_logits=True)
    live.append(generator.plan_programs())
    for job, out in zip(chunk, outputs):
      _assert_same(alone[job.config], out, job.config)
  assert live == [(1, 1), (2, 2), (1, 1), (1, 1)]


def test_resumed_prefill_matches_one_prefill(tiny_llava_jax):
  """prefill vs start -> advance (a jit piece) -> advance -> finish, prune points before and after the cut."""
  model, cfg = tiny_llava_jax.model, tiny_llava_jax.config
  graphdef, state = nnx.split(model)
  batch = _batch(2)
  pruner = Pruner.build("fastv@1:8+latesim@3:4", cfg)

  def whole(state, inputs):
    model = nnx.merge(graphdef, state)
    tokens, vision = decoder_inputs(model, inputs)
    return decoding.prefill(language_model(model), tokens, extra_slots=2, prune_points=pruner(model, tokens, vision))

  def pieces(state, inputs):
    model = nnx.merge(graphdef, state)
    decoder = language_model(model)
    tokens, vision = decoder_inputs(model, inputs)
    points = pruner(model, tokens, vision)
    first = jax.jit(lambda s: decoding.prefill_advance(decoder, s, 2, points))
    s = first(decoding.prefill_start(tokens, extra_slots=2))
    assert s.layer == 2 and s.lengths == (s.lengths[0], 8 + s.lengths[0] - TINY_NV)
    later = {k: point for k, point in points.items() if k >= s.layer}  # the point at layer 1 already ran
    return decoding.prefill_finish(decoder, decoding.prefill_advance(decoder, s, 4, later))

  h1, cache1, tokens1 = jax.jit(whole)(state, batch)
  h2, cache2, tokens2 = pieces(state, batch)
  assert cache1.group_of_layer == cache2.group_of_layer == (0, 1, 1, 2)
  assert cache1.prefill_lengths == cache2.prefill_lengths
  # what was kept, where, and every mask: exactly; hidden states and KV: within float32 fusion noise
  for name in ("positions", "valid", "image", "query", "patch", "image_id"):
    np.testing.assert_array_equal(np.asarray(getattr(tokens2, name)), np.asarray(getattr(tokens1, name)), name)
  for a, b in zip(cache1.slot_valid + cache1.next_position, cache2.slot_valid + cache2.next_position):
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
  for a, b in zip((h1, tokens1.hidden) + cache1.keys + cache1.values, (h2, tokens2.hidden) + cache2.keys + cache2.values):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=LOGITS_ATOL)
  decoder = language_model(model)
  logits1, logits2 = np.asarray(decoder.logits(h1[:, -1])), np.asarray(decoder.logits(h2[:, -1]))
  np.testing.assert_allclose(logits2, logits1, rtol=0, atol=LOGITS_ATOL)
  with pytest.raises(ValueError, match="already ran up to layer 2"):
    decoding.prefill_advance(decoder, decoding.prefill_start(tokens1, extra_slots=0).replace(layer=2), 4,
                             {1: lambda t, tr: t})
  with pytest.raises(ValueError, match="stopped at layer 0 of 4"):
    decoding.prefill_finish(decoder, decoding.prefill_start(tokens1, extra_slots=0))


def _eval_args(model, data, methods, extra=()):
  data_dir, datbench = data
  return ["--model", str(model), "--limit", "5", "--batch-size", "4", "--data-dir", str(data_dir),
          "--datbench-dir", str(datbench), "--max-new-tokens", "3", "--no-plots", "--log-samples",
          "--method", methods, *extra]


def _answers(out: Path):
  """Records without wall-clock fields, results rows without prefill_ms, and how the answers were computed."""
  samples = {(s["task"], s["config"], s["id"]): {k: v for k, v in s.items() if k != "batch_prefill_ms"}
             for s in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}
  results = json.loads((out / "results.json").read_text())
  rows = [{k: v for k, v in r.items() if k != "prefill_ms"} for r in results["rows"]]
  return samples, rows, results["evaluation"]


# both paths in one process (one import of jax, one model load per run); only the shared run times its plans
EIGHT_DEVICE_SCRIPT = """
import sys
from jaxprune import eval as jeval
out, base = sys.argv[1], sys.argv[2:]
assert jeval.main(base + ["--output-path", out + "/shared", "--time-batches", "1"]) == 0
assert jeval.main(base + ["--output-path", out + "/per_plan", "--time-batches", "0", "--per-plan"]) == 0
"""


def test_eval_eight_devices_shared_equals_per_plan(tiny_eval_model, eval_data, tmp_path):
  """The eval on a data=8 mesh, shared-prefix grid vs --per-plan: answers, correctness, kept maps and relevance
  recall item by item, and the results rows. 5 easy-VQA items in batches of 4 -> 4 and 1 items, each rounded up
  to 8 rows (padding rows masked out); a multi-stage plan; first prune layers 0 and 1."""
  args = _eval_args(tiny_eval_model, eval_data, "none,fastv@1,clsattn@0,latesim@1:8+random@3:3",
                    ("--tasks", "easyvqa", "--keep", "6", "--mesh", "data=8"))
  done = subprocess.run([sys.executable, "-c", EIGHT_DEVICE_SCRIPT, str(tmp_path), *args], env=EIGHT_DEVICES,
                        cwd=ROOT, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "rounded up to 8" in done.stderr
  shared, rows_shared, how_shared = _answers(tmp_path / "shared")
  alone, rows_alone, how_alone = _answers(tmp_path / "per_plan")
  assert (how_shared, how_alone) == ("shared-prefix", "per-plan")
  assert len(shared) == 4 * 5
  assert shared == alone
  assert rows_shared == rows_alone
  pruned = [r for r in rows_shared if r["plan"] != "none"]
  assert len(pruned) == 3 and all(r["relevance_recall"] is not None and r["kept_map"] for r in pruned)
  results = json.loads((tmp_path / "shared" / "results.json").read_text())
  assert results["mesh"] == {"data": 8, "model": 1}
  assert all(r["prefill_ms"] > 0 for r in results["rows"])  # still measured on the shared path, each plan alone


def test_eval_chunked_grid_equals_per_plan(tiny_eval_model, eval_data, tmp_path, monkeypatch):
  """The eval's shared path with at most 2 live plans: 5 plans (a multi-stage one, the baseline) in 3 chunks, each
  chunk answering both batches of 5 items before its programs are released, gives --per-plan's records (answers,
  kept maps, recall) and rows; no more than 2 fork programs per bucket are ever alive."""
  monkeypatch.setattr(loop, "MAX_LIVE_PLANS", 2)
  grid, release = Generator.grid, Generator.release_plan_programs
  calls, releases = [], []

  def spy_grid(self, batch, fns, **kwargs):
    outputs = grid(self, batch, fns, **kwargs)
    calls.append((len(fns), batch.ids.shape, self.plan_programs()[0]))
    return outputs

  def spy_release(self):
    releases.append(self)
    release(self)

  monkeypatch.setattr(Generator, "grid", spy_grid)
  monkeypatch.setattr(Generator, "release_plan_programs", spy_release)
  args = _eval_args(tiny_eval_model, eval_data, "none,fastv@1,clsattn@0,uniform@2,latesim@1:8+random@3:3",
                    ("--tasks", "easyvqa", "--keep", "6"))
  assert jeval.main(args + ["--output-path", str(tmp_path / "chunked"), "--time-batches", "0"]) == 0
  # [clsattn@0, fastv@1], [latesim@1+random@3, uniform@2], [none]: each over the batches of 4 and 1 items
  assert [n for n, _, _ in calls] == [2, 2, 2, 2, 1, 1] and len(releases) == 2
  assert all(live <= 2 * len({shape for _, shape, _ in calls[:i + 1]}) for i, (_, _, live) in enumerate(calls))
  assert jeval.main(args + ["--output-path", str(tmp_path / "per_plan"), "--time-batches", "0", "--per-plan"]) == 0
  chunked, rows_chunked, how_chunked = _answers(tmp_path / "chunked")
  alone, rows_alone, how_alone = _answers(tmp_path / "per_plan")
  assert (how_chunked, how_alone) == ("shared-prefix", "per-plan")
  assert len(chunked) == 5 * 5 and chunked == alone
  assert rows_chunked == rows_alone
  assert all(r["kept"] for r in chunked.values() if r["config"] != "none")


def test_random_draws_per_item_alone_in_a_batch_in_a_grid_and_after_resume(tiny_eval_model, eval_data, tmp_path):
  """`random` keys its draw by (seed, item id): batches of 4 through the shared-prefix grid, batches of 1 plan by
  plan, and a run resumed after losing its later records keep the same cells for every item; items differ, seeds
  differ. The oracle's tie-break is the same per-item draw."""
  plans = "none,random@1:6,random@1:6[seed=1],fastv@1:6,oracle@0:6"
  args = _eval_args(tiny_eval_model, eval_data, plans, ("--tasks", "easyvqa", "--time-batches", "0"))
  assert jeval.main(args + ["--output-path", str(tmp_path / "grid")]) == 0
  assert jeval.main(args + ["--output-path", str(tmp_path / "alone"), "--per-plan", "--batch-size", "1"]) == 0
  grid, alone = _answers(tmp_path / "grid")[0], _answers(tmp_path / "alone")[0]
  log = tmp_path / "grid" / "samples.jsonl"
  saved = log.read_text().splitlines(keepends=True)
  log.write_text("".join(saved[:len(saved) // 3]))  # a crash lost two thirds of the answers
  (tmp_path / "grid" / "results.json").unlink()
  assert jeval.main(args + ["--output-path", str(tmp_path / "grid")]) == 0
  resumed = _answers(tmp_path / "grid")[0]
  kept = {}
  for run, records in (("grid", grid), ("alone", alone), ("resumed", resumed)):
    for (_, config, item), record in records.items():
      if config.startswith("random"):
        kept.setdefault((config, item), {})[run] = tuple(record["kept"])
  assert len(kept) == 2 * 5 and all(len(runs) == 3 and len(set(runs.values())) == 1 for runs in kept.values())
  seed0 = [runs["alone"] for (config, _), runs in sorted(kept.items()) if config == "random@1:6"]
  seed1 = [runs["alone"] for (config, _), runs in sorted(kept.items()) if config == "random@1:6[seed=1]"]
  assert len(set(seed0)) == 5 and seed0 != seed1  # a fresh draw per item, and per seed
  assert resumed == grid
