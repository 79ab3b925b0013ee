"""Hugging Face checkpoints -> NNX models, and jaxprune's own orbax checkpoints.

`load_model` accepts a preset name (`llava`), a hub id (downloaded only when online), an HF directory of
safetensors, a GGUF file (or a directory holding one), or an orbax directory written by `save_orbax`.
Weights are placed into an abstract model (`nnx.eval_shape`), so a 7B model never pays a random init.
Every malformed input raises `CheckpointError` with one line naming the file, key and shapes involved.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.models import registry, weights
from jaxprune.models.base import Family

MARKER = "jaxprune.json"  # written next to an orbax checkpoint; its presence identifies the format
PARTIAL = "jaxprune.partial.json"  # there while a conversion writes the directory (MARKER comes last)
FORMAT_VERSION = 1
# Files copied next to a converted checkpoint so it stays self-contained (tokenizer, processor, templates).
SIDE_FILE = re.compile(r"(tokenizer.*|special_tokens_map\.json|added_tokens\.json|.*\.model|vocab\.json|merges\.txt|"
                       r"(pre)?processor_config\.json|chat_template.*|generation_config\.json)")


class CheckpointError(ValueError):
  """A checkpoint that cannot be loaded; the message is one line naming the problem."""


@dataclasses.dataclass
class Loaded:
  model: nnx.Module
  config: Any  # the family config (models/base.py: VLMConfig), or TextConfig for a plain LM
  hf_config: dict
  family: Family
  path: Path  # where config.json and tokenizer/processor files live
  source: Path | None = None  # what was loaded: the HF or orbax directory, or the .gguf file


def _abstract_model(family: Family, cfg: Any, dtype: jnp.dtype):
  return nnx.eval_shape(lambda: family.module(cfg, dtype=dtype, rngs=nnx.Rngs(0)))


def _path_str(path: tuple) -> str:
  return ".".join(str(p) for p in path)


# ------------------------------------------------------------------------------------------- weights

_INVERSE = {weights.linear: weights.linear, weights.conv: lambda w: w.transpose(3, 2, 0, 1)}


def fill_state(family: Family, cfg: Any, tensors: Iterable[tuple[str, Any]], dtype: jnp.dtype,
               source: str, placement=None) -> nnx.Module:
  """Map HF tensors through the family's rules into an abstract model; return the concrete model.

  `placement(abstract model) -> (path, shape) -> Sharding` puts each weight straight onto its shards (host ->
  devices), so a model larger than one device's memory never passes through a single device.
  """
  abstract = _abstract_model(family, cfg, dtype)
  place = placement(abstract) if placement else None
  graphdef, state = nnx.split(abstract)
  expected = {_path_str(p): v for p, v in nnx.to_flat_state(state)}
  rules = [(re.compile(rx), target, fn) for rx, target, fn in family.weight_map]
  values: dict[str, jax.Array] = {}
  seen: dict[str, re.Match] = {}  # rule pattern -> a key of this checkpoint it matched (to name missing keys)
  for key, tensor in tensors:
    rule = next(((rx, target, fn) for rx, target, fn in rules if rx.fullmatch(key)), None)
    if rule is None:
      raise CheckpointError(f"{source}: unexpected weight {key!r} (no rule in the {family.name} weight map)")
    rx, target, fn = rule
    if target is None:
      continue
    seen.setdefault(rx.pattern, rx.fullmatch(key))
    target = rx.fullmatch(key).expand(target)
    if target not in expected:
      if target.startswith(family.optional_targets):
        continue  # e.g. encoder layers past the one LLaVA reads, or lm_head of a tied model
      raise CheckpointError(f"{source}: weight {key!r} maps to {target!r}, which this config does not have")
    array = np.asarray(tensor)
    _check_float(array, expected[target].dtype, f"{source}: weight {key!r}")
    want = tuple(expected[target].shape)
    got = fn(array).shape if fn else array.shape
    if got != want:
      implied = _INVERSE.get(fn, lambda w: w)(np.empty(want, np.int8)).shape
      raise CheckpointError(f"{source}: weight {key!r} has shape {tuple(array.shape)} but config.json implies "
                            f"{tuple(implied)}")
    array = np.asarray(fn(array) if fn else array).astype(expected[target].dtype)
    _check_finite(array, tensor, f"{source}: weight {key!r}")
    values[target] = jax.device_put(array, place(target, want)) if place else jnp.asarray(array)
  missing = sorted(set(expected) - set(values))
  if missing:
    raise CheckpointError(f"{source}: checkpoint is missing {len(missing)} weight(s) the model needs, "
                          f"e.g. {_hf_key_of(missing[0], rules, seen)!r} (jaxprune {missing[0]!r})")
  flat = [(p, v.replace(values[_path_str(p)])) for p, v in nnx.to_flat_state(state)]
  return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _check_float(array: np.ndarray, want: Any, what: str) -> None:
  """A float weight stored as integers (int8 quantised, say) would be cast to garbage without a word."""
  if jnp.issubdtype(want, jnp.floating) and not jnp.issubdtype(array.dtype, jnp.floating):
    raise CheckpointError(f"{what} is stored as {array.dtype}; a float weight (float32, bfloat16 or float16) is "
                          f"expected (quantised checkpoints are not supported: dequantise them first)")


def _check_finite(array: np.ndarray, source_array: Any, what: str) -> None:
  """NaN/inf in a weight would turn every answer empty with no error (one pass per array, at load)."""
  if not jnp.issubdtype(array.dtype, jnp.floating) or np.isfinite(array).all():
    return
  bad = int((~np.isfinite(array)).sum())
  if np.isfinite(np.asarray(source_array)).all():
    raise CheckpointError(f"{what}: {bad} value(s) overflow to inf in {array.dtype} (load it in float32)")
  raise CheckpointError(f"{what}: {bad} non-finite value(s) (NaN or inf) of {array.size}; the checkpoint is damaged")


def _hf_key_of(target: str, rules: list, seen: Mapping[str, re.Match]) -> str:
  """The checkpoint key a missing NNX path would have: a key this checkpoint has for the same rule, with the
  missing one's layer/projection numbers put in; else the rule's regex written out (first alternatives)."""
  for rx, template, _ in rules:
    if template is None:
      continue
    parts = re.split(r"\\(\d)", template)  # literal text and group numbers, alternating
    pattern = "".join(re.escape(p) if i % 2 == 0 else f"(?P<g{p}>[^.]+)" for i, p in enumerate(parts))
    m = re.fullmatch(pattern, target)
    if m is None:
      continue
    groups = {int(k[1:]): v for k, v in m.groupdict().items()}
    if rx.pattern in seen:  # same naming scheme as the rest of this checkpoint
      like = seen[rx.pattern]
      key = like.string
      for g in sorted(groups, reverse=True):
        key = key[:like.start(g)] + groups[g] + key[like.end(g):]
      return key
    text, values = rx.pattern, iter(groups[g] for g in sorted(groups))
    text = re.sub(r"\(\?:[^()]*\)\?", "", text)  # optional prefixes dropped
    text = re.sub(r"\(\?:([^()|]*)(\|[^()]*)?\)", r"\1", text)  # first alternative
    text = re.sub(r"\([^()]*\)", lambda _, values=values: next(values, "?"), text)  # captured numbers and names
    return text.replace("\\", "")
  return target


def _safetensors_files(path: Path) -> list[Path]:
  index = path / "model.safetensors.index.json"
  if index.exists():
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    for shard in shards:
      if not (path / shard).exists():
        raise CheckpointError(f"{path}: {index.name} names shard {shard!r}, which is missing (partial download?)")
    return [path / s for s in shards]
  files = sorted(path.glob("*.safetensors"))
  if not files:
    raise CheckpointError(f"{path}: no *.safetensors weights found (contents: "
                          f"{', '.join(sorted(p.name for p in path.iterdir())) or 'empty'})")
  return files


def iter_safetensors(path: Path) -> Iterator[tuple[str, np.ndarray]]:
  """Yield (key, array) from every shard; the flax backend reads bf16 that plain NumPy cannot."""
  from safetensors import safe_open
  for file in _safetensors_files(path):
    try:
      with safe_open(str(file), framework="flax") as f:
        for key in f.keys():
          yield key, np.asarray(f.get_tensor(key))
    except CheckpointError:
      raise
    except Exception as e:  # truncated or corrupt shard
      raise CheckpointError(f"{file}: cannot read safetensors ({type(e).__name__}: {e})") from None


def read_hf_config(path: Path) -> dict:
  file = path / "config.json"
  if not file.exists():
    raise CheckpointError(f"{path}: no config.json (not a Hugging Face or jaxprune checkpoint directory)")
  try:
    return json.loads(file.read_text())
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{file}: invalid JSON ({e})") from None


def _config(hf_config: Mapping, source: str) -> tuple[Family, Any]:
  try:
    family = registry.family_for(hf_config, source)
  except ValueError as e:  # unknown architecture: a bad checkpoint, reported as one line like the others
    raise CheckpointError(str(e)) from None
  try:
    return family, family.config_from_hf(hf_config)
  except KeyError as e:
    raise CheckpointError(f"{source}: config.json lacks key {e.args[0]!r}") from None
  except ValueError as e:  # a family's own check (an unsupported or inconsistent value): one line, named there
    raise CheckpointError(str(e)) from None


def load_hf_dir(path: Path, dtype: jnp.dtype, placement=None) -> Loaded:
  hf_config = read_hf_config(path)
  family, cfg = _config(hf_config, str(path / "config.json"))
  model = fill_state(family, cfg, iter_safetensors(path), dtype, str(path), placement)
  return Loaded(model, cfg, hf_config, family, path, path)


def load_gguf(file: Path, dtype: jnp.dtype, placement=None) -> Loaded:
  """GGUF goes through transformers' GGUF reader (dequantised to float32 torch tensors)."""
  import torch
  from transformers import AutoModelForCausalLM
  hf = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, dtype=torch.float32)
  hf_config = hf.config.to_dict()
  family, cfg = _config(hf_config, str(file))
  tensors = ((k, v.detach().numpy()) for k, v in hf.state_dict().items())
  model = fill_state(family, cfg, tensors, dtype, str(file), placement)
  return Loaded(model, cfg, hf_config, family, file.parent, file)


# --------------------------------------------------------------------------------------------- orbax


def source_id(loaded_or_path: Loaded | str | os.PathLike) -> str:
  """What a conversion converts, as its jaxprune.json records it: the absolute path of the HF directory, orbax
  directory or .gguf file (a hub id's local snapshot)."""
  if isinstance(loaded_or_path, Loaded):
    loaded_or_path = loaded_or_path.source or loaded_or_path.path
  return str(Path(loaded_or_path).resolve())


def check_out_dir(out: str | os.PathLike, source: str) -> Path:
  """`out` as an absolute path, if it may receive the conversion of `source`: new, empty, or an earlier
  (finished or interrupted) conversion of the same source. Anything else is never overwritten."""
  out = Path(out).absolute()
  if out.exists() and not out.is_dir():
    raise CheckpointError(f"{out}: is a file, not a directory; give a new or empty directory to write to")
  held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
  if not held:
    return out
  meta = _marker_or_none(out / MARKER) or _marker_or_none(out / PARTIAL)
  if meta is not None and meta.get("source") == source:
    return out
  what = f"a conversion of {meta['source']}" if meta and meta.get("source") else \
      f"{', '.join(held[:4])}{', ...' if len(held) > 4 else ''}"
  raise CheckpointError(f"{out}: not empty (it holds {what}) and not a conversion of {source}; refusing to "
                        f"overwrite it: give a new or empty directory")


def _marker_or_none(file: Path) -> dict | None:
  try:
    meta = json.loads(file.read_text())
  except (OSError, ValueError):
    return None
  return meta if isinstance(meta, dict) else None


def save_orbax(loaded: Loaded, out: str | os.PathLike, *, tokenizer_source: Path | None = None) -> Path:
  """Write `out/params` (orbax), `out/config.json`, `out/jaxprune.json` and tokenizer/processor files.

  `out` must be new, empty or an earlier conversion of the same source (`check_out_dir`). While it is written,
  jaxprune.partial.json names the source and jaxprune.json is absent (written last): an interrupted conversion is
  refused on load, and the same command run again replaces it."""
  import orbax.checkpoint as ocp
  source = source_id(loaded)
  out = check_out_dir(out, source)
  dtype = str(jax.tree.leaves(nnx.state(loaded.model))[0].dtype)
  meta = {"format": FORMAT_VERSION, "family": loaded.family.name, "dtype": dtype, "source": source}
  out.mkdir(parents=True, exist_ok=True)
  (out / PARTIAL).write_text(json.dumps(meta))
  (out / MARKER).unlink(missing_ok=True)
  if (out / "params").exists():
    shutil.rmtree(out / "params")
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(out / "params", nnx.state(loaded.model))
  (out / "config.json").write_text(json.dumps(loaded.hf_config, indent=2, default=str))
  for f in (tokenizer_source or loaded.path).iterdir():
    if f.is_file() and SIDE_FILE.fullmatch(f.name) and f.parent != out:
      shutil.copy2(f, out / f.name)
  (out / MARKER).write_text(json.dumps(meta))
  (out / PARTIAL).unlink()
  return out


def read_marker(path: Path) -> dict:
  """jaxprune.json of an orbax directory, checked: a JSON object with a float `dtype`."""
  file = path / MARKER
  try:
    meta = json.loads(file.read_text())
  except OSError as e:
    raise CheckpointError(f"{file}: cannot be read ({e.strerror or type(e).__name__})") from None
  except ValueError as e:
    raise CheckpointError(f"{file}: invalid JSON ({e})") from None
  if not isinstance(meta, dict):
    raise CheckpointError(f"{file}: expected a JSON object, got {type(meta).__name__}")
  if "dtype" not in meta:
    raise CheckpointError(f"{file}: lacks key 'dtype' (the dtype the parameters were saved in)")
  try:
    dtype = jnp.dtype(meta["dtype"])
  except (TypeError, ValueError):
    dtype = None
  if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    raise CheckpointError(f"{file}: key 'dtype' is {meta['dtype']!r}, not a float dtype (float32, bfloat16, float16)")
  return meta


def load_orbax(path: Path, dtype: jnp.dtype | None, placement=None) -> Loaded:
  import orbax.checkpoint as ocp
  meta = read_marker(path)
  if not (path / "params").is_dir():
    raise CheckpointError(f"{path}: {MARKER} is present but the orbax 'params' directory is missing")
  hf_config = read_hf_config(path)
  family, cfg = _config(hf_config, str(path / "config.json"))
  dtype = dtype or jnp.dtype(meta["dtype"])
  model = _abstract_model(family, cfg, jnp.dtype(meta["dtype"]))
  graphdef, abstract = nnx.split(model)
  if placement is not None:  # orbax restores each array directly onto its shards
    place = placement(model)
    flat = [(p, v.replace(jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=place(_path_str(p), v.shape))))
            for p, v in nnx.to_flat_state(abstract)]
    abstract = nnx.from_flat_state(flat)
  params = path.absolute() / "params"  # orbax refuses relative paths
  try:
    with ocp.StandardCheckpointer() as ckpt:
      state = ckpt.restore(params, abstract)
  except Exception as e:
    name = _unreadable_orbax_array(params, abstract)
    what = f"array {name!r} cannot be read (a data file is missing or truncated)" if name else \
        f"cannot restore orbax checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    raise CheckpointError(f"{params}: {what}") from None
  for p, v in nnx.to_flat_state(state):  # checked on the devices; only a bad array comes to the host
    if jnp.issubdtype(v.dtype, jnp.floating) and not bool(jnp.isfinite(v[...]).all()):
      _check_finite(np.asarray(v[...]), v[...], f"{params}: array {_path_str(p)!r}")
  state = jax.tree.map(lambda x: x.astype(dtype), state)
  return Loaded(nnx.merge(graphdef, state), cfg, hf_config, family, path, path)


def _unreadable_orbax_array(params: Path, abstract) -> str | None:
  """After a failed restore: the first array that cannot be read on its own (OCDBT packs several arrays into a
  data file, so orbax's own error names only an index range)."""
  import warnings

  import orbax.checkpoint as ocp
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with warnings.catch_warnings(), ocp.PyTreeCheckpointer() as ckpt:
    warnings.simplefilter("ignore")
    for p, v in nnx.to_flat_state(abstract):
      tree = leaf = {}
      for k in p[:-1]:
        leaf = leaf.setdefault(k, {})
      leaf[p[-1]] = {"value": jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=device)}
      try:
        ckpt.restore(params, args=ocp.args.PyTreeRestore(item=tree, partial_restore=True))
      except Exception:
        return _path_str(p)
  return None


# ---------------------------------------------------------------------------------------------- entry


def config_of(name_or_path: str | os.PathLike) -> tuple[Family, Any]:
  """(family, config) of a checkpoint from its config.json alone (no weights read): what a study needs to plan
  its layers and budgets before the eval loads the model."""
  path = resolve(name_or_path)
  return _config(read_hf_config(path), str(path / "config.json"))


def abstract_state_of(name_or_path: str | os.PathLike, dtype: jnp.dtype | str | None):
  """Shapes and dtypes of a checkpoint's parameters (no weights read), or None when unknowable cheaply."""
  path = resolve(name_or_path)
  if not (path / "config.json").exists():
    return None
  if dtype is None and (path / MARKER).exists():
    dtype = read_marker(path)["dtype"]
  family, cfg = _config(read_hf_config(path), str(path / "config.json"))
  return nnx.state(_abstract_model(family, cfg, jnp.dtype(dtype or jnp.bfloat16)))



def resolve(name_or_path: str | os.PathLike) -> Path:
  """A preset name or hub id becomes a local snapshot directory (downloads only when online)."""
  text = str(name_or_path)
  path = Path(text).expanduser()
  if path.exists():
    return path
  if text in registry.LOCAL_PRESETS:
    local = registry.LOCAL_PRESETS[text]
    if not local.exists():
      raise CheckpointError(f"model {text!r}: its shipped checkpoint {local} is missing (run from a source checkout)")
    return local
  hub_id = registry.PRESETS.get(text, text)
  looks_like_hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", hub_id) is not None and not text.startswith((".", "/"))
  if not looks_like_hub_id:
    known = ", ".join([*registry.PRESETS, *registry.LOCAL_PRESETS])
    raise CheckpointError(f"unknown model {text!r}: neither a known name ({known}) nor an existing path")
  try:
    from huggingface_hub import snapshot_download
    return Path(snapshot_download(hub_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
  except Exception as e:
    raise CheckpointError(f"cannot fetch {hub_id!r} from the Hugging Face hub ({type(e).__name__}); "
                          f"pass a local directory instead") from None


def load_model(name_or_path: str | os.PathLike, *, dtype: jnp.dtype | str | None = None, mesh=None) -> Loaded:
  """Load any supported checkpoint.

  `dtype` is the parameter and compute dtype; None means as stored for an orbax checkpoint and bfloat16
  (the default for real models) for Hugging Face and GGUF sources. With a `mesh`, every weight is placed
  straight onto its shards by `jaxprune.sharding`'s rules. `Loaded.source` is the path it names (a preset or hub
  id resolved to its local directory).
  """
  placement = None
  if mesh is not None:
    from jaxprune.sharding import sharding_for
    placement = functools.partial(sharding_for, mesh)  # given the abstract model: whole attention heads
  dtype = None if dtype is None else jnp.dtype(dtype)
  path = resolve(name_or_path)
  return dataclasses.replace(_load_path(path, dtype, placement), source=path)


def _load_path(path: Path, dtype: jnp.dtype | None, placement) -> Loaded:
  if (path / PARTIAL).exists():
    raise CheckpointError(f"{path}: the conversion writing it did not finish ({PARTIAL} is still there); run "
                          f"it again")
  if path.is_file():
    if path.suffix == ".gguf":
      return load_gguf(path, dtype or jnp.bfloat16, placement)
    raise CheckpointError(f"{path}: not a checkpoint (expected a directory or a .gguf file)")
  if (path / MARKER).exists():
    return load_orbax(path, dtype, placement)
  if not (path / "config.json").exists():
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
      return load_gguf(ggufs[0], dtype or jnp.bfloat16, placement)
  return load_hf_dir(path, dtype or jnp.bfloat16, placement)
