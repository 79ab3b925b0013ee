"""The sample log and run identity: samples.jsonl (resumable), run.json (what the samples were made with), and the
blind file that --drop-blind reads."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.eval.common import EvalError
from jaxprune.fingerprint import files_digest


class SampleLog:
  """samples.jsonl: one JSON line per (task, config, item), appended and fsynced per batch."""

  REQUIRED = ("task", "config", "id", "index", "eval_mode", "failed", "score")

  def __init__(self, path: Path, writer: bool = True):
    self.path, self.writer = path, writer
    self.records: dict[tuple[str, str, str], dict] = {}
    if path.exists():
      good = 0
      with path.open("rb") as f:
        lines = f.readlines()
      for number, line in enumerate(lines, 1):
        try:
          rec = json.loads(line)
          missing = [k for k in self.REQUIRED if k not in rec]
          if missing:
            raise KeyError(missing[0])
          self.records[(rec["task"], rec["config"], rec["id"])] = rec
        except (ValueError, KeyError, TypeError) as e:
          if number == len(lines) and not line.endswith(b"\n"):
            break  # the last line, cut by a kill: drop it (its batch is answered again)
          raise EvalError(f"{path}:{number}: not a sample record ({type(e).__name__}: {e}); delete that line "
                          f"(or the file, to start over)") from None
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


def bits(mask: np.ndarray) -> str:
  return np.packbits(mask.astype(np.uint8)).tobytes().hex()


def unbits(text: str, n: int) -> np.ndarray:
  return np.unpackbits(np.frombuffer(bytes.fromhex(text), np.uint8))[:n].astype(bool)


RESUME_KEYS = ("weights", "dtype", "max_new_tokens", "seed", "bucket", "batch_size")


def weights_dtype(model) -> str:
  return next(str(x.dtype) for x in jax.tree.leaves(nnx.state(model)) if jnp.issubdtype(x.dtype, jnp.floating))


def check_resume(out: Path, header: dict) -> dict:
  """The header to write: refuses (one line) samples made with other weights, data or answer-changing settings;
  a directory with a header but no samples yet is simply reused."""
  run_file, samples = out / "run.json", out / "samples.jsonl"
  if not run_file.exists() or not samples.exists() or samples.stat().st_size == 0:
    return header
  try:
    before = json.loads(run_file.read_text())
  except (OSError, ValueError) as e:
    raise EvalError(f"{run_file}: unreadable ({type(e).__name__}); delete {out} or choose another --output-path") \
        from None
  if not isinstance(before, dict) or not isinstance(before.get("data", {}), dict):
    raise EvalError(f"{run_file}: not a run header (expected a JSON object); delete {out} or choose another "
                    f"--output-path")
  changed = [k for k in RESUME_KEYS if before.get(k) != header[k]]
  old_data = before.get("data")
  if old_data is None:
    changed.append("data")
  else:
    changed += [f"data of {t}" for t, fp in header["data"].items() if t in old_data and old_data[t] != fp]
  if changed:
    raise EvalError(f"--output-path {out}: holds samples of a different run ({run_file}: {', '.join(changed)} "
                    f"differ); choose another directory or delete it")
  return {**header, "data": {**old_data, **header["data"]}}  # tasks of earlier runs stay recorded


def read_blind_file(path: str) -> dict:
  """blind_correct.json of a --blind run, checked for shape (one line for anything else)."""
  try:
    blind = json.loads(Path(path).read_text())
  except (OSError, ValueError) as e:
    raise EvalError(f"--drop-blind {path}: cannot read ({type(e).__name__})") from None
  if not isinstance(blind, dict):
    raise EvalError(f"--drop-blind {path}: expected the JSON object that --blind writes, got a {type(blind).__name__}")
  missing = [k for k in ("weights", "tasks") if k not in blind]
  if missing:
    raise EvalError(f"--drop-blind {path}: no {missing[0]!r} key (not written by this version's --blind); "
                    f"rerun --blind")
  tasks = blind["tasks"]
  for task, entry in (tasks.items() if isinstance(tasks, dict) else [("tasks", None)]):
    if not (isinstance(entry, dict) and isinstance(entry.get("tested"), list) and isinstance(entry.get("correct"), list)
            and set(entry["correct"]) <= set(entry["tested"])):
      raise EvalError(f"--drop-blind {path}: malformed entry for {task!r} (expected data, tested and correct ids)")
  return blind


def blind_drops(blind: dict, args, header: dict, datasets: dict) -> tuple[set, dict]:
  """-> ((task, id) pairs to drop, per task the number of items the blind run never tested).

  The blind filter is a property of one model on one data set: another model or other data is refused."""
  path = args.drop_blind
  if blind["weights"] != header["weights"]:
    raise EvalError(f"--drop-blind {path}: made with model {blind.get('model')!r} (other weights than --model "
                    f"{args.model}); blind-test this model first")
  drop, untested = set(), {}
  for task, all_items in datasets.items():
    entry = blind["tasks"][task]  # present: checked before the data loaded
    if entry.get("data") != header["data"][task]:
      raise EvalError(f"--drop-blind {path}: {task} was blind-tested on other data (source files differ)")
    tested = set(entry["tested"])
    drop |= {(task, i) for i in entry["correct"]}
    untested[task] = sum(1 for _, it in all_items if it["id"] not in tested)
    if untested[task]:
      print(f"note: --drop-blind: {untested[task]} item(s) of {task} were never blind-tested; they are kept "
            f"(n_blind_untested in the rows)", file=sys.stderr)
  return drop, untested


def weights_fingerprint(path: Path) -> str:
  """A short digest of a checkpoint's files (names, sizes, first and last MiB of each; the model card left out),
  so that resuming into a directory made with other weights is refused. Cheap even for a 14 GB checkpoint."""
  path = Path(path)
  if path.is_file():
    return files_digest([(path.name, path)])
  files = sorted(f for f in path.rglob("*") if f.is_file() and f.name != "README.md" and not f.name.startswith("."))
  return files_digest((f.relative_to(path).as_posix(), f) for f in files)
