"""One device mesh ("data", "model") for evals: batch on `data`, large weights on `model` by name rules.

This is the jit + NamedSharding form of data parallelism that `pmap` is now built on, plus Megatron-style
tensor parallelism for weights that do not fit one device (LLaVA-1.5-7B in bf16 on TPU v2-8's 8 GB cores):
column-parallel projections split their output features, row-parallel ones their input features, and XLA
inserts the collectives. Shardings are planned from shapes alone, so a 7B model is never materialised to
decide where it goes.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "model")

# NNX parameter path (dotted) -> how its dims map to mesh axes. First match wins; unmatched -> replicated.
# Kernels are [in, out]: column-parallel layers shard `out`, row-parallel layers shard `in`.
RULES: tuple[tuple[str, P], ...] = (
    # The vision side stays whole on every device: a row-parallel layer sums partial products across devices,
    # which rounds its bf16 output differently from one device now and then, and vision-side scorers (DivPrune's
    # near-tied distances, VisionZip) then keep other tokens (1 of 55 kept sets under model=8). Its images are
    # split over both axes instead (`put_batch`), so the replicated tower costs memory, not repeated compute.
    (r"(vision_tower|projector)\..*", P()),
    (r".*\.(q_proj|k_proj|v_proj|gate_proj|up_proj)\.kernel", P(None, "model")),
    (r".*\.(q_proj|k_proj|v_proj|gate_proj|up_proj)\.bias", P("model")),
    (r".*\.(o_proj|down_proj)\.kernel", P("model", None)),
    (r"(.*\.)?embed_tokens\.embedding", P("model", None)),  # vocab rows
    (r"(.*\.)?lm_head\.kernel", P(None, "model")),  # vocab columns
)


def parse_mesh(text: str | None, num_devices: int) -> dict[str, int]:
  """`data=4,model=2` -> {"data": 4, "model": 2}; a missing axis takes what is left; None -> all data."""
  sizes: dict[str, int] = {}
  for part in filter(None, (text or "").split(",")):
    name, _, value = part.partition("=")
    if name.strip() not in AXES or not value.strip().isdigit() or int(value) < 1:
      raise ValueError(f"--mesh {text}: expected data=N,model=M with positive integers")
    sizes[name.strip()] = int(value)
  if "model" not in sizes:
    sizes["model"] = 1
  if "data" not in sizes:
    sizes["data"] = max(1, num_devices // sizes["model"])
  if sizes["data"] * sizes["model"] > num_devices:
    raise ValueError(f"--mesh {text}: needs {sizes['data'] * sizes['model']} devices, {num_devices} available")
  return {axis: sizes[axis] for axis in AXES}


def auto_mesh_sizes(abstract_state: Callable[[], Any], *, budget: float = 0.6) -> dict[str, int]:
  """Every device on `data`; shard weights over the smallest power-of-2 `model` axis that fits them.

  `abstract_state()` gives the parameters' shapes and dtypes (or None when unknowable cheaply); it is called
  only when devices report their memory. Fit means parameters take at most `budget` of a device's memory (the
  rest: activations, KV cache). Devices that do not report memory (CPU) always get model=1.
  """
  devices = jax.devices()
  limit = (devices[0].memory_stats() or {}).get("bytes_limit") if hasattr(devices[0], "memory_stats") else None
  model_size = 1
  if limit:
    state = abstract_state()
    while state is not None and model_size < len(devices) and (
        per_device_bytes(state, {"data": 1, "model": model_size}) > budget * limit):
      model_size *= 2
  return {"data": max(1, len(devices) // model_size), "model": model_size}


def make_mesh(sizes: Mapping[str, int]) -> Mesh:
  count = sizes["data"] * sizes["model"]
  devices = np.asarray(jax.devices()[:count]).reshape(sizes["data"], sizes["model"])
  return Mesh(devices, AXES)


# Attention projections split by heads: their sharded dim is heads x head_dim, and a device must hold whole heads
# (a split head turns q.k, and FastV's sum over a head's logits, into cross-device partial sums, which round
# differently from one device).
_HEAD_SPLIT = re.compile(r"(.*)\.(q_proj|k_proj|v_proj|o_proj)\.(kernel|bias)")


def head_sizes(model: Any) -> dict[str, int]:
  """{attention module path: head_dim} for every module of `model` (concrete or abstract) with a `head_dim`."""
  from flax import nnx
  return {".".join(str(k) for k in path): node.head_dim for path, node in nnx.iter_graph(model)
          if isinstance(node, nnx.Module) and isinstance(getattr(node, "head_dim", None), int)}


def spec_for(path: str, shape: tuple[int, ...], model_size: int, head_dims: Mapping[str, int] | None = None) -> P:
  """The PartitionSpec of one parameter; replicated when its sharded dim does not divide evenly — into whole
  heads for attention projections whose module is in `head_dims` (see `head_sizes`)."""
  split = _HEAD_SPLIT.fullmatch(path)
  unit = (head_dims or {}).get(split.group(1), 1) if split else 1
  for pattern, spec in RULES:
    if re.fullmatch(pattern, path):
      if len(spec) != len(shape):
        return P()
      for dim, axis in zip(shape, spec):
        if axis == "model" and dim % (model_size * unit):
          return P()
      return spec
  return P()


def _flat(state) -> list[tuple[str, Any]]:
  from flax import nnx
  return [(".".join(str(k) for k in path), leaf) for path, leaf in nnx.to_flat_state(state)]


def plan_specs(state, model_size: int, head_dims: Mapping[str, int] | None = None) -> dict[str, P]:
  """{param path: PartitionSpec} for an (abstract or concrete) NNX state."""
  return {path: spec_for(path, tuple(leaf.shape), model_size, head_dims) for path, leaf in _flat(state)}


def per_device_bytes(state, sizes: Mapping[str, int], head_dims: Mapping[str, int] | None = None) -> int:
  """Bytes of parameters each device holds under the rules (shapes only)."""
  total = 0
  for path, leaf in _flat(state):
    spec = spec_for(path, tuple(leaf.shape), sizes["model"], head_dims)
    shards = math.prod(sizes[a] for a in spec if a is not None)
    total += math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize // shards
  return total


def shard_model_state(state, mesh: Mesh, head_dims: Mapping[str, int] | None = None):
  """Place an NNX state on the mesh by the rules (replicated over `data`); `head_dims` from `head_sizes`."""
  from flax import nnx
  model_size = mesh.shape["model"]
  flat = nnx.to_flat_state(state)
  placed = []
  for path, leaf in flat:
    name = ".".join(str(k) for k in path)
    sharding = NamedSharding(mesh, spec_for(name, tuple(leaf.shape), model_size, head_dims))
    placed.append((path, leaf.replace(jax.device_put(leaf[...], sharding))))
  return nnx.from_flat_state(placed)


def put_batch(tree: Any, mesh: Mesh) -> Any:
  """Host arrays (identical on every process) -> global arrays: batch-major leaves (leading dim = the batch,
  taken from the first leaf) sharded on `data`, any other leaf replicated; None passes through. Images
  (`pixels` leaves, one per sample) go over `data` x `model` when they divide evenly: the vision tower is
  replicated (see RULES), so each device encodes its own share of the images rather than every model shard
  encoding them all."""
  leaves = [x for x in jax.tree.leaves(tree) if x is not None]
  batch = np.shape(leaves[0])[0] if leaves else 0
  both = mesh.shape["data"] * mesh.shape["model"]

  def put(path, x):
    x = np.asarray(x)
    if not x.ndim or x.shape[0] != batch:
      spec = P()
    elif mesh.shape["model"] > 1 and "pixels" in jax.tree_util.keystr(path) and batch % both == 0:
      spec = P(("data", "model"), *([None] * (x.ndim - 1)))
    else:
      spec = P("data", *([None] * (x.ndim - 1)))
    return jax.make_array_from_callback(x.shape, NamedSharding(mesh, spec), lambda index: x[index])
  return jax.tree_util.tree_map_with_path(put, tree)


def to_host(x) -> np.ndarray:
  """A (possibly multi-host) global array -> the full NumPy array on every process."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def initialize_distributed(enabled: bool) -> None:
  """Join a multi-host job (`--distributed`, or JAX_COORDINATOR_ADDRESS set by the launcher).

  Must run before anything touches a JAX backend; on TPU slices and SLURM the arguments are auto-detected.
  """
  if enabled or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()


def sharding_for(mesh: Mesh, model: Any = None):
  """path, shape -> NamedSharding: what loaders use to place each weight straight onto its shards; `model` (the
  abstract model being filled) tells attention projections' head sizes."""
  head_dims = head_sizes(model) if model is not None else None
  return lambda path, shape: NamedSharding(mesh, spec_for(path, tuple(shape), mesh.shape["model"], head_dims))
