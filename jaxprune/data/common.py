"""The item record every task yields, its tfds feature spec, and the reader.

Builders store items in tfds `array_record` files and are read back through
`builder.as_data_source()`, which works without TensorFlow as long as no
feature needs TF to encode (so images are kept as encoded bytes, not
`tfds.features.Image`). List fields are stored as JSON strings and decoded here.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pathlib
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np

from jaxprune.fingerprint import files_digest

DATA_DIR_ENV = "JAXPRUNE_DATA_DIR"
DEFAULT_DATA_DIR = "~/.cache/jaxprune/tfds"
DATBENCH_DIR_ENV = "JAXPRUNE_DATBENCH_DIR"
# Here rather than in datbench.py so task-name checks need no tfds import.
DATBENCH_CAPABILITIES = ("chart", "counting", "document", "general", "grounding", "math", "scene", "spatial", "table")

# Keys of the common item record, in a stable order. `prompt` is the text to give
# the model (DatBench: prompt_format prefix + question + suffix, which carries the
# answer-format instructions its scorers expect); `metadata` is the source's
# per-item extras (DatBench: e.g. refcoco bbox, vqa-v2 answer_type; easy-VQA: image_id).
ITEM_KEYS = (
    "id", "image", "question", "answer", "all_answers", "eval_mode", "source", "choices", "prompt", "metadata",
)
_JSON_KEYS = ("all_answers", "choices", "metadata")
# Written next to a prepared tfds copy: which source files it was built from (see `prepare`).
SOURCE_STAMP = "jaxprune_source.json"

Item = dict[str, Any]


def check_capability(capability: str) -> None:
  if capability not in DATBENCH_CAPABILITIES:
    raise ValueError(f"unknown DatBench capability {capability!r} (known: {', '.join(DATBENCH_CAPABILITIES)})")


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> str:
  """Where prepared tfds data lives: argument, else $JAXPRUNE_DATA_DIR, else the default cache."""
  path = data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
  return os.path.abspath(os.path.expanduser(os.fspath(path)))


def item_features() -> Any:
  """tfds features for the common record (TF-free: text and raw bytes only)."""
  import tensorflow_datasets as tfds  # Lazy: tfds import is slow and only needed to build/read.

  text = tfds.features.Text
  return tfds.features.FeaturesDict({
      "id": text(),
      # Encoded PNG/JPEG bytes; `Image` would need TF to encode.
      "image": tfds.features.Tensor(shape=(), dtype=np.object_),
      "question": text(),
      "answer": text(),
      "all_answers": text(doc="JSON list of strings"),
      "eval_mode": text(),
      "source": text(),
      "choices": text(doc="JSON list of strings"),
      "prompt": text(),
      "metadata": text(doc="JSON object"),
  })


def make_item(
    *,
    id: str,
    image: bytes | None,
    question: str,
    answer: Any,
    all_answers: Sequence[Any] | None = None,
    eval_mode: str = "direct",
    source: str = "",
    choices: Sequence[Any] | None = None,
    prompt: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Item:
  """Builds a normalised record: plain str/bytes/list[str], missing values filled in."""
  answer = _as_str(answer)
  answers = [_as_str(a) for a in (all_answers if all_answers is not None else [])]
  question = _as_str(question)
  return {
      "id": _as_str(id),
      "image": bytes(image) if image else b"",
      "question": question,
      "answer": answer,
      # Scorers can always match against all_answers.
      "all_answers": answers or [answer],
      "eval_mode": _as_str(eval_mode) or "direct",
      "source": _as_str(source),
      "choices": [_as_str(c) for c in (choices or [])],
      "prompt": question if prompt is None else _as_str(prompt),
      "metadata": dict(metadata or {}),
  }


def encode_item(item: Mapping[str, Any]) -> dict[str, Any]:
  """Record -> tfds example (lists and metadata become JSON strings)."""
  out = {k: item[k] for k in ITEM_KEYS}
  for k in _JSON_KEYS:
    out[k] = json.dumps(item[k], ensure_ascii=False, default=str)
  return out


def decode_record(record: Mapping[str, Any]) -> Item:
  """tfds example (bytes everywhere) -> record with str/bytes/list[str]."""
  out: Item = {}
  for k in ITEM_KEYS:
    v = record[k]
    if isinstance(v, np.ndarray):
      v = v.item()
    if k == "image":
      out[k] = bytes(v)
    elif k in _JSON_KEYS:
      out[k] = json.loads(_as_str(v) or ("{}" if k == "metadata" else "[]"))
    else:
      out[k] = _as_str(v)
  return out


def _as_str(v: Any) -> str:
  if v is None:
    return ""
  if isinstance(v, bytes):
    return v.decode("utf-8")
  return str(v)


def decode_image(image: bytes, mode: str | None = "RGB") -> np.ndarray:
  """Encoded bytes -> uint8 array (H, W, C); `mode=None` keeps the file's mode."""
  from PIL import Image

  with Image.open(io.BytesIO(image)) as im:
    return np.asarray(convert_image(im, mode) if mode else im)


# PIL modes of one 16-bit (or wider integer) channel: a 16-bit grayscale PNG opens as I;16, older Pillow gives I
_WIDE_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def convert_image(image: Any, mode: str = "RGB") -> Any:
  """PIL `image.convert(mode)`, except that a 16-bit grayscale image is scaled to 8 bits first (0..65535 ->
  0..255, rounded). PIL's own conversion clips every value above 255 to white, so such a PNG decodes nearly
  white. 16-bit RGB(A) PNGs need nothing: PIL already keeps their high bytes."""
  from PIL import Image

  if image.mode not in _WIDE_GRAY:
    return image.convert(mode)
  levels = np.asarray(image).astype(np.int64)
  gray = np.clip((levels + 128) // 257, 0, 255).astype(np.uint8)  # round(v * 255 / 65535)
  return Image.fromarray(gray, mode="L").convert(mode)


def is_valid_image(image: bytes) -> bool:
  """Whether PIL can parse the bytes (header + integrity check, no full decode)."""
  from PIL import Image

  if not image:
    return False
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      with Image.open(io.BytesIO(image)) as im:
        im.verify()
  except Image.DecompressionBombError:
    return True  # Decodable, just large; the model side resizes anyway.
  except Exception:  # PIL raises many types for bad data.
    return False
  return True


@dataclasses.dataclass(frozen=True)
class Source:
  """Where a builder's rows come from.

  origin: a local directory or a hub address; files(): the source files, in row order (may download);
  local: their paths, sizes and mtimes are cheap to check on every open (hub files are not re-listed offline).
  """

  origin: str
  files: Callable[[], Sequence[pathlib.Path]]
  local: bool = True


def files_fingerprint(files: Sequence[os.PathLike[str] | str]) -> str:
  """Content identity of source files: base names, sizes, first and last MiB of each (whole files up to
  2 MiB). Independent of where the copy lives and of mtimes, so a copied data set keeps its identity."""
  return files_digest((file.name, file) for file in map(pathlib.Path, files))


def _file_states(files: Sequence[pathlib.Path]) -> list[list]:
  """[absolute path, size, mtime_ns] per file: changes whenever a file is replaced, edited or moved."""
  states = []
  for file in files:
    stat = pathlib.Path(file).stat()
    states.append([str(pathlib.Path(file).resolve()), stat.st_size, stat.st_mtime_ns])
  return states


def _read_stamp(path: pathlib.Path) -> dict | None:
  try:
    stamp = json.loads(path.read_text())
  except (OSError, ValueError):
    return None  # no stamp (a copy prepared before stamps existed) or a damaged one: treat as unknown
  return stamp if isinstance(stamp, dict) else None


def prepare(builder: Any, source: Source | None = None) -> str | None:
  """Prepares a builder's files if missing (tfds shows a progress bar while it does).

  With a `source`, a prepared copy is used only if it was built from the same source files (same origin and,
  for a local source, the same paths, sizes and mtimes); otherwise it is rebuilt, with a note on stderr, so a
  run never evaluates rows of another copy. Returns the source files' content fingerprint (None without a
  source) for callers that record which data produced their results.
  """
  import tensorflow_datasets as tfds

  # Never ask GCS for a pre-built copy: ours are local-only and it may be offline.
  config = tfds.download.DownloadConfig(try_download_gcs=False)
  if source is None:
    builder.download_and_prepare(download_config=config)
    return None
  stamp_path = pathlib.Path(builder.data_dir) / SOURCE_STAMP
  try:
    files = list(source.files()) if source.local else None
  except FileNotFoundError:
    stamp = _read_stamp(stamp_path) if builder.is_prepared() else None
    if stamp and stamp.get("origin") == source.origin and stamp.get("fingerprint"):
      return stamp["fingerprint"]  # the source was removed after preparing from it: the copy is still its data
    raise
  states = _file_states(files) if files is not None else None
  if builder.is_prepared():
    stamp = _read_stamp(stamp_path)
    if stamp and stamp.get("origin") == source.origin and stamp.get("files") == states and stamp.get("fingerprint"):
      return stamp["fingerprint"]
    was = f"from {stamp.get('origin')}" if stamp else "from unrecorded source files"
    print(f"note: {builder.name}/{builder.builder_config.name}: the prepared copy in {builder.data_dir} was built "
          f"{was}{' (since changed)' if stamp and stamp.get('origin') == source.origin else ''}; rebuilding it "
          f"from {source.origin}", file=sys.stderr)
    files = files if files is not None else list(source.files())  # before deleting: may fail offline
    shutil.rmtree(builder.data_dir)
  files = files if files is not None else list(source.files())
  builder.download_and_prepare(download_config=config)
  fingerprint = files_fingerprint(files)
  stamp_path.write_text(json.dumps({"origin": source.origin, "files": states, "fingerprint": fingerprint}))
  return fingerprint


class TaskData(Sequence):
  """Random-access view of a prepared split: `len`, `data[i]` -> item dict, slices -> lists."""

  def __init__(
      self,
      name: str,
      split: str,
      source: Any,
      indices: Sequence[int] | None = None,
      decode: Callable[[Mapping[str, Any]], Item] = decode_record,
      fingerprint: str | None = None,
  ):
    self.name = name
    self.fingerprint = fingerprint  # content identity of the source files (see `prepare`), if known
    self.split = split
    self._source = source
    self._indices = range(len(source)) if indices is None else indices
    self._decode = decode

  def __len__(self) -> int:
    return len(self._indices)

  @overload
  def __getitem__(self, i: int) -> Item: ...

  @overload
  def __getitem__(self, i: slice) -> list[Item]: ...

  def __getitem__(self, i: int | slice) -> Item | list[Item]:
    if isinstance(i, slice):
      return self.get_batch(range(*i.indices(len(self))))
    n = len(self)
    if not -n <= i < n:
      raise IndexError(f"{self.name}: index {i} out of range for {n} items")
    return self._decode(self._source[self._indices[i % n]])

  def get_batch(self, positions: Sequence[int]) -> list[Item]:
    """Several items in one read (array_record fetches them together)."""
    keys = [self._indices[p] for p in positions]
    many = getattr(self._source, "__getitems__", None)
    records = many(keys) if many and keys else [self._source[k] for k in keys]
    return [self._decode(r) for r in records]

  def __iter__(self) -> Iterator[Item]:
    for start in range(0, len(self), 64):
      yield from self.get_batch(range(start, min(start + 64, len(self))))

  def __repr__(self) -> str:
    return f"TaskData(name={self.name!r}, split={self.split!r}, len={len(self)})"


def select_indices(n: int, limit: int | None, seed: int | None) -> Sequence[int]:
  """First `limit` rows, or with `seed` a seeded random subset kept in source order."""
  if limit is not None and limit < 0:
    raise ValueError(f"limit must be >= 0, got {limit}")
  k = n if limit is None else min(limit, n)
  if seed is None or k == n:
    return range(k)
  picked = np.random.default_rng(seed).choice(n, size=k, replace=False)
  return sorted(int(i) for i in picked)
