"""The sample log and run identity: samples.jsonl (resumable), run.json (what the samples were made with), and the
blind file that --drop-blind reads."""

from __future__ import annotations

import hashlib
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
  """samples.jsonl: one JSON line per (task, config, item), appended and fsynced per batch.

  Crash-safe at any byte: a kill leaves the last line cut somewhere. Reading keeps every whole record of it (a
  kill between a record's `}` and its newline loses nothing) and drops the cut rest; the first append then
  truncates the cut bytes and ends the kept line before writing, so a new record never joins an old line.
  Lines holding several records (`}{`, as older versions could leave them) are read record by record.
  Each record carries its run identity (`run`, see `run_id`), so the log is checked on resume without run.json.
  """

  REQUIRED = ("task", "config", "id", "index", "eval_mode", "failed", "score")

  def __init__(self, path: Path, writer: bool = True):
    self.path, self.writer = path, writer
    self.records: dict[tuple[str, str, str], dict] = {}
    self.lines: dict[tuple[str, str, str], int] = {}  # the line each record was read from (for messages)
    self._repair: int | None = None  # bytes to keep before the first append (None: nothing to repair)
    if path.exists():
      data = path.read_bytes()
      records, keep = read_records(data, path)
      for number, rec in records:
        key = (rec["task"], rec["config"], rec["id"])
        self.records[key], self.lines[key] = rec, number
      if keep != len(data) or (data and not data.endswith(b"\n")):
        self._repair = keep

  def done(self, task: str, config: str, item_id: str) -> bool:
    return (task, config, item_id) in self.records

  def append(self, records: list[dict]) -> None:
    for rec in records:
      self.records[(rec["task"], rec["config"], rec["id"])] = rec
    if not self.writer:
      return  # every process holds the gathered records; only process 0 writes them
    if self._repair is not None:
      with self.path.open("r+b") as f:
        f.truncate(self._repair)
        f.seek(self._repair)
        if self._repair and _last_byte(f, self._repair) != b"\n":
          f.write(b"\n")  # the kept record was whole: end its line
        f.flush()
        os.fsync(f.fileno())
      self._repair = None
    with self.path.open("ab") as f:
      f.write(b"".join(json.dumps(rec).encode() + b"\n" for rec in records))
      f.flush()
      os.fsync(f.fileno())


def _last_byte(f, size: int) -> bytes:
  f.seek(size - 1)
  byte = f.read(1)
  f.seek(size)
  return byte


def _records_of(text: str) -> tuple[list[dict], int, str | None]:
  """The JSON objects one after another in `text` -> (those read, characters they span, why the rest is not one)."""
  decoder, out, pos = json.JSONDecoder(), [], 0
  while True:
    while pos < len(text) and text[pos] in " \t\r":
      pos += 1
    if pos == len(text):
      return out, pos, None
    try:
      rec, end = decoder.raw_decode(text, pos)
      if not isinstance(rec, dict):
        raise TypeError(f"a JSON {type(rec).__name__}")
      missing = [k for k in SampleLog.REQUIRED if k not in rec]
      if missing:
        raise KeyError(missing[0])
      hash((rec["task"], rec["config"], rec["id"]))
    except (ValueError, KeyError, TypeError) as e:
      return out, pos, f"{type(e).__name__}: {e}"
    out.append(rec)
    pos = end


def read_records(data: bytes, path: Path) -> tuple[list[tuple[int, dict]], int]:
  """The records of a sample log's bytes, with their line numbers, and how many bytes hold whole records.

  A bad whole line is refused (one line: file, line number, what to do); the last line, if it has no newline,
  was cut by a kill: its whole records are kept, the rest dropped."""
  lines = data.split(b"\n")
  out, offset = [], 0
  for number, line in enumerate(lines, 1):
    text = line.decode("utf-8", errors="surrogateescape")  # a line cut inside a character still decodes
    records, end, error = _records_of(text)
    out += [(number, rec) for rec in records]
    if number == len(lines):  # the unterminated tail ("" when the file ends with a newline)
      return out, offset + len(text[:end].encode("utf-8", errors="surrogateescape"))
    if error is not None:
      raise EvalError(f"{path}:{number}: not a sample record ({error}); delete that line (or the file, to start "
                      f"over)")
    offset += len(line) + 1
  return out, offset


def bits(mask: np.ndarray) -> str:
  return np.packbits(mask.astype(np.uint8)).tobytes().hex()


def unbits(text: str, n: int) -> np.ndarray:
  return np.unpackbits(np.frombuffer(bytes.fromhex(text), np.uint8))[:n].astype(bool)


RESUME_KEYS = ("weights", "dtype", "max_new_tokens", "seed", "bucket", "batch_size")


def weights_dtype(model) -> str:
  return next(str(x.dtype) for x in jax.tree.leaves(nnx.state(model)) if jnp.issubdtype(x.dtype, jnp.floating))


def run_id(header: dict, task: str) -> str:
  """A short digest of everything that changes one task's answers (`RESUME_KEYS` and the task's data): written
  into each of its sample records, so that the log itself says what made it (run.json may be lost)."""
  identity = [header[k] for k in RESUME_KEYS] + [header["data"].get(task)]
  return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]


def _read_run_file(run_file: Path) -> dict:
  try:
    before = json.loads(run_file.read_text())
  except (OSError, ValueError) as e:
    raise EvalError(f"{run_file}: unreadable ({type(e).__name__}); delete {run_file.parent} or choose another "
                    f"--output-path") from None
  if not isinstance(before, dict) or not isinstance(before.get("data", {}), dict):
    raise EvalError(f"{run_file}: not a run header (expected a JSON object); delete {run_file.parent} or choose "
                    f"another --output-path")
  return before


def _changed(before: dict, header: dict) -> list[str]:
  changed = [k for k in RESUME_KEYS if before.get(k) != header[k]]
  old_data = before.get("data")
  if old_data is None:
    changed.append("data")
  else:
    changed += [f"data of {t}" for t, fp in header["data"].items() if t in old_data and old_data[t] != fp]
  if before.get("judge") and header.get("judge") and before["judge"] != header["judge"]:
    changed.append("judge")
  return changed


def check_resume(out: Path, header: dict, log: SampleLog) -> dict:
  """The header to write: refuses (one line) samples made with other weights, data, answer-changing settings or
  another judge; a directory with a header but no samples yet is simply reused.

  The samples are checked by the run identity each record carries (`run_id`), run.json (when there) names what
  differs; a log whose records carry no identity (older versions) is taken only with the run.json that says
  what made it."""
  run_file = out / "run.json"
  if not log.records:
    return header
  before = _read_run_file(run_file) if run_file.exists() else None
  if before is not None:
    changed = _changed(before, header)
    if changed:
      raise EvalError(f"--output-path {out}: holds samples of a different run ({run_file}: {', '.join(changed)} "
                      f"differ); choose another directory or delete it")
  _check_records(out, header, log, before is not None)
  before = before or {}
  judged = next((r["judge"] for r in log.records.values() if r.get("judge")), None)
  if header.get("judge") or not (before.get("judge") or judged):
    return {**header, "data": {**before.get("data", {}), **header["data"]}}  # tasks of earlier runs stay recorded
  # no --judge now: the verdicts kept in the log are still the earlier judge's
  return {**header, "judge": before.get("judge") or judged, "judge_model": before.get("judge_model"),
          "data": {**before.get("data", {}), **header["data"]}}


def _check_records(out: Path, header: dict, log: SampleLog, vouched: bool) -> None:
  """Every record of this run's tasks made under this run's identity (and judged by this run's judge)."""
  ids = {task: run_id(header, task) for task in header["data"]}
  for key, rec in log.records.items():
    where = f"{log.path}:{log.lines.get(key, '?')}"
    if key[0] not in ids:
      continue  # another task of an earlier run: not used by this one
    if "run" not in rec and not vouched:
      raise EvalError(f"--output-path {out}: {where}: a sample record without a run identity and no run.json to "
                      f"say what made it (settings, weights, data); choose another directory or delete it")
    if "run" in rec and rec["run"] != ids[key[0]]:
      raise EvalError(f"--output-path {out}: {where}: a sample of a different run (made with other weights, "
                      f"dtype, max_new_tokens, seed, bucket, batch_size or data); choose another directory or "
                      f"delete it")
    judge = header.get("judge")
    if judge and rec.get("judge") and rec["judge"] != judge:
      raise EvalError(f"--output-path {out}: {where}: judged by another --judge (weights/dtype {rec['judge']}, "
                      f"this one {judge}); rerun with that judge or without --judge, or choose another directory")


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
