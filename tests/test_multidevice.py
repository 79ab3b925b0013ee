"""Multi-device evals on 8 host devices, and the 7B sharding plan computed abstractly."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.models.llava import Llava
from jaxprune.models.registry import LLAVA_15_7B
from jaxprune.sharding import head_sizes, per_device_bytes, plan_specs, spec_for

EIGHT_DEVICES = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", PYTHONUNBUFFERED="1")


def _eval(model, data, out, mesh, *, methods="none,latesim,fastv,visionzip", extra=("--limit", "4", "--batch-size", "4")):
  data_dir, datbench = data
  argv = [sys.executable, "-m", "jaxprune.eval", "--model", str(model), "--tasks", "easyvqa,datbench:chart",
          *extra, "--data-dir", str(data_dir), "--datbench-dir", str(datbench),
          "--max-new-tokens", "3", "--time-batches", "0", "--no-plots", "--output-path", str(out),
          "--method", methods, "--layer", "0,2", "--keep", "6", "--mesh", mesh]
  done = subprocess.run(argv, env=EIGHT_DEVICES, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-2000:]
  results = json.loads((out / "results.json").read_text())
  samples = {(s["task"], s["config"], s["id"]): (s.get("prediction"), s.get("kept"), s["failed"])
             for s in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}
  rows = [{k: v for k, v in r.items() if k != "prefill_ms"} for r in results["rows"]]
  return results["mesh"], rows, samples, done.stderr


def test_eight_devices_match_one_device(tiny_eval_model, eval_data, tmp_path):
  mesh1, rows1, samples1, _ = _eval(tiny_eval_model, eval_data, tmp_path / "one", "data=1,model=1")
  assert mesh1 == {"data": 1, "model": 1}
  assert len(samples1) == 5 * (4 + 4)  # none, latesim@0, latesim@2, fastv@2, visionzip@0 x 8 items
  for mesh in ("data=8", "data=4,model=2"):
    sizes, rows, samples, err = _eval(tiny_eval_model, eval_data, tmp_path / mesh.replace(",", "_"), mesh)
    assert math.prod(sizes.values()) == 8
    if mesh == "data=8":
      assert "rounded up to 8" in err  # 4 items per task over 8 data shards: padded, masked out
    assert samples == samples1
    assert rows == rows1


def test_bf16_model_sharding_keeps_the_same_tokens(tiny_eval_model, eval_data, tmp_path):
  """bf16 under tensor parallelism: every kept set and answer as on one device. Before the vision side was
  replicated, DivPrune at layer 0 kept other tokens on 1 of these 55 records under model=8 (its near-tied
  distances read projector outputs that a row-parallel sum had rounded differently). Batches of 8 images take
  the path where the images are split over both mesh axes."""
  kw = dict(methods="latesim,fastv,divprune,visionzip",
            extra=("--limit", "6", "--batch-size", "8", "--dtype", "bfloat16"))
  _, _, one, _ = _eval(tiny_eval_model, eval_data, tmp_path / "one", "data=1,model=1", **kw)
  assert len(one) == 5 * 11 and any(cfg.startswith("divprune@0") for _, cfg, _ in one)  # chart has 5 items
  for mesh in ("data=4,model=2", "data=1,model=8"):
    _, _, samples, _ = _eval(tiny_eval_model, eval_data, tmp_path / mesh.replace(",", "_"), mesh, **kw)
    moved = [key for key in one if samples[key][1] != one[key][1]]
    assert not moved, f"{mesh}: kept tokens differ from one device on {len(moved)} records: {moved[:4]}"
    assert samples == one


def test_7b_shardings_planned_abstractly():
  abstract = nnx.eval_shape(lambda: Llava(LLAVA_15_7B, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
  state = nnx.state(abstract)
  specs = plan_specs(state, model_size=8)
  total = vision = 0
  for path, leaf in nnx.to_flat_state(state):
    name = ".".join(map(str, path))
    size = math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
    total += size
    if name.startswith(("vision_tower.", "projector.")):
      vision += size
      assert tuple(specs[name]) == (), f"{name}: the vision side is replicated (bit-identical visual tokens)"
    elif size > 1 << 20:
      assert "model" in tuple(specs[name]), f"{name} ({size / 2**20:.1f} MiB) is not sharded"
  per_device = per_device_bytes(state, {"data": 1, "model": 8})
  assert total > 13e9 and 0.5e9 < vision < 0.8e9  # ~7.06B parameters in bf16, 0.3B of them CLIP + projector
  assert per_device <= 8e9 and per_device < (total - vision) / 7 + vision
  print(f"LLaVA-1.5-7B bf16: {total / 1e9:.2f} GB total, {per_device / 1e9:.2f} GB per device under model=8")


def test_indivisible_dims_fall_back_to_replicated():
  assert tuple(spec_for("language_model.layers.0.attn.q_proj.kernel", (64, 60), 8)) == ()
  assert tuple(spec_for("language_model.layers.0.attn.q_proj.kernel", (64, 64), 8)) == (None, "model")
  assert tuple(spec_for("language_model.norm.weight", (4096,), 8)) == ()


def test_attention_projections_shard_in_whole_heads(tiny_llava_jax):
  """A device holds whole heads: split heads make q.k (and FastV's per-head sums) cross-device partial sums,
  which round differently from one device in bf16 (kept tokens moved under `--mesh model=8` on the tiny model)."""
  heads = head_sizes(tiny_llava_jax.model)
  assert heads["language_model.layers.0.attn"] == 16 and heads["vision_tower.layers.0.self_attn"] == 8
  q, k = "language_model.layers.0.attn.q_proj.kernel", "language_model.layers.0.attn.k_proj.kernel"
  assert tuple(spec_for(q, (64, 64), 8)) == (None, "model")  # shape alone: 8 shards of half a head each
  assert tuple(spec_for(q, (64, 64), 8, heads)) == ()  # 4 heads over 8 devices: replicated
  assert tuple(spec_for(q, (64, 64), 4, heads)) == (None, "model")  # one head per device
  assert tuple(spec_for(k, (64, 32), 2, heads)) == (None, "model") and tuple(spec_for(k, (64, 32), 4, heads)) == ()
  o = "language_model.layers.0.attn.o_proj.kernel"
  assert tuple(spec_for(o, (64, 64), 8, heads)) == () and tuple(spec_for(o, (64, 64), 2, heads)) == ("model", None)
  mlp = "language_model.layers.0.mlp.gate_proj.kernel"
  assert tuple(spec_for(mlp, (64, 128), 8, heads)) == (None, "model")  # not attention: any even split
