"""DatBench (HF `DatologyAI/DatBench`) as a tfds builder, one config per capability.

Source rows come from parquet files, either a local copy or the HF hub. The HF
schema (dataset card): id, image {bytes, path}, question, prompt_format
{prefix, suffix}, answer, eval_mode, judge_prompt, is_circular, source_info
{dataset, original_idx}, eval_metrics, all_answers, metadata; one split, `test`.
Only the common record (`common.ITEM_KEYS`) is stored: `prompt` = prefix + question +
suffix and `metadata` = the parsed JSON (it carries the ground truth some scorers read,
e.g. RefCOCO's `bbox`). judge_prompt, is_circular and eval_metrics are read from the
source files when needed (`row_extras`), and `check_items` refuses an item that lacks a
field its scorer needs, as the official harness does (`jaxprune/metrics/`).

Local copy layout (either works, per capability):
  <dir>/<capability>/*.parquet      (HF's usual parquet layout, e.g. chart/test-00000-of-00008.parquet)
  <dir>/<capability>.parquet
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import tensorflow_datasets as tfds

from jaxprune.data import common

log = logging.getLogger(__name__)

CAPABILITIES = common.DATBENCH_CAPABILITIES
SPLIT = "test"
HF_REPO = "DatologyAI/DatBench"
DATBENCH_DIR_ENV = common.DATBENCH_DIR_ENV
check_capability = common.check_capability
REQUIRED_COLUMNS = ("image", "question", "answer")
_BATCH_ROWS = 32  # Rows per parquet read: DatBench images are large (chart: ~0.7 MB/row).


def resolve_source_dir(source_dir: str | os.PathLike[str] | None = None) -> pathlib.Path | None:
  """Local copy: argument, else $JAXPRUNE_DATBENCH_DIR, else None (= use the HF hub)."""
  path = source_dir or os.environ.get(DATBENCH_DIR_ENV)
  return pathlib.Path(os.path.expanduser(os.fspath(path))).resolve() if path else None


def local_parquet_files(source_dir: str | os.PathLike[str], capability: str) -> list[pathlib.Path]:
  """The parquet files of one capability in a local copy, sorted (which fixes row order)."""
  check_capability(capability)
  root = pathlib.Path(source_dir)
  if not root.is_dir():
    raise FileNotFoundError(f"DatBench directory not found: {root}")
  files = sorted((root / capability).glob("*.parquet")) if (root / capability).is_dir() else []
  single = root / f"{capability}.parquet"
  if not files and single.is_file():  # The directory wins if both exist (no duplicated rows).
    files = [single]
  if not files:
    raise FileNotFoundError(
        f"no DatBench parquet for {capability!r}: expected {root / capability}/*.parquet or {single}"
    )
  return files


def hub_parquet_files(capability: str, repo_id: str = HF_REPO) -> list[pathlib.Path]:
  """Downloads one capability's parquet files from the HF hub (into the HF cache)."""
  check_capability(capability)
  try:
    import huggingface_hub  # Lazy: only needed without a local copy.
  except ImportError:
    raise ImportError(
        f"DatBench without a local copy needs `huggingface_hub`; or set ${DATBENCH_DIR_ENV}"
    ) from None
  hub_log = logging.getLogger("huggingface_hub")
  level = hub_log.level
  hub_log.setLevel(logging.ERROR)  # its per-retry warnings would bury the one line below
  try:
    names = huggingface_hub.list_repo_files(repo_id, repo_type="dataset")
    wanted = sorted(n for n in names if _is_capability_file(n, capability))
    files = [pathlib.Path(huggingface_hub.hf_hub_download(repo_id, n, repo_type="dataset")) for n in wanted]
  except Exception as e:  # offline, DNS, HTTP: one line instead of the client's traceback
    raise FileNotFoundError(f"DatBench {capability!r}: no local copy (--datbench-dir or ${DATBENCH_DIR_ENV}) and "
                            f"hf://datasets/{repo_id} is unreachable ({type(e).__name__})") from None
  finally:
    hub_log.setLevel(level)
  if not wanted:
    raise FileNotFoundError(f"no parquet files for {capability!r} in hf://datasets/{repo_id}")
  return files


def _is_capability_file(name: str, capability: str) -> bool:
  """`chart/test-0000.parquet`, `data/chart/...`, `chart.parquet` or `chart-*.parquet`."""
  path = pathlib.PurePosixPath(name)
  if path.suffix != ".parquet":
    return False
  return capability in path.parts[:-1] or path.stem == capability or path.name.startswith(capability + "-")


def iter_parquet_rows(files: Sequence[pathlib.Path]) -> Iterator[tuple[pathlib.Path, dict[str, Any]]]:
  """(file, row as a plain dict) for every row, in file order, a few rows in memory at a time."""
  import pyarrow.parquet as pq

  for path in files:
    try:
      pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow's message does not name the file
      raise ValueError(f"DatBench file {path}: not a readable parquet file ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''})") from None
    names = set(pf.schema_arrow.names)
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
      raise ValueError(
          f"DatBench file {path} lacks required column(s) {', '.join(missing)} (has: {', '.join(sorted(names))})"
      )
    for batch in pf.iter_batches(batch_size=_BATCH_ROWS):
      for row in batch.to_pylist():
        yield path, row


def image_bytes(value: Any, base_dir: pathlib.Path | None = None) -> bytes:
  """The encoded image of an HF image cell: struct {bytes, path}, raw bytes, or a path."""
  if value is None:
    return b""
  if isinstance(value, (bytes, bytearray)):
    return bytes(value)
  if isinstance(value, Mapping):
    if value.get("bytes"):
      return bytes(value["bytes"])
    value = value.get("path")
  if isinstance(value, str) and value:
    path = pathlib.Path(value)
    if not path.is_absolute() and base_dir is not None:
      path = base_dir / path
    if path.is_file():
      return path.read_bytes()
  return b""


def _metadata(row: Mapping[str, Any]) -> dict[str, Any]:
  """The `metadata` cell (a JSON string on the hub) as a dict; anything else kept under "value"."""
  meta = row.get("metadata")
  if meta is None or meta == "":
    return {}
  if isinstance(meta, str):
    try:
      meta = json.loads(meta)
    except ValueError:
      return {"value": meta}
  return dict(meta) if isinstance(meta, Mapping) else {"value": meta}


def _choices(row: Mapping[str, Any], meta: Mapping[str, Any]) -> list[str]:
  """Options of multiple-choice rows: a `choices`/`options` column, else metadata
  `choices`/`options`/`index2ans` (the keys DatBench's own scorers read)."""
  for src, keys in ((row, ("choices", "options")), (meta, ("choices", "options", "index2ans"))):
    for key in keys:
      value = src.get(key)
      if isinstance(value, Mapping):  # e.g. {"A": ..., "B": ...}
        return [str(value[k]) for k in sorted(value) if value[k] is not None]
      if isinstance(value, (list, tuple)) and value:
        return [str(v) for v in value if v is not None]
  return []


def _prompt(row: Mapping[str, Any], question: str) -> str:
  """prefix + question + suffix, as DatBench's harness builds the model input."""
  fmt = row.get("prompt_format")
  if not isinstance(fmt, Mapping):
    return question
  return f"{fmt.get('prefix') or ''}{question}{fmt.get('suffix') or ''}"


def row_to_item(
    row: Mapping[str, Any], capability: str, index: int, base_dir: pathlib.Path | None = None
) -> dict[str, Any]:
  """HF row -> common record; missing optional fields get defaults (id falls back to `<capability>-<index>`).

  `all_answers` as the harness reads it (`DatBenchSample.from_hf_row`): `[answer]` only when the row has none
  (absent or null); an empty list stays empty, and an item scored against no answers scores 0, as there."""
  info = row.get("source_info")
  source = info.get("dataset") if isinstance(info, Mapping) else None
  question = "" if row.get("question") is None else str(row["question"])
  meta = _metadata(row)
  item = common.make_item(
      id=row.get("id") or f"{capability}-{index:05d}",
      image=image_bytes(row.get("image"), base_dir),
      question=question,
      answer=row.get("answer"),
      all_answers=row.get("all_answers"),
      eval_mode=row.get("eval_mode") or "direct",
      source=source or "unknown",
      choices=_choices(row, meta),
      prompt=_prompt(row, question),
      metadata=meta,
  )
  if isinstance(row.get("all_answers"), (list, tuple)) and not row["all_answers"]:
    item["all_answers"] = []  # make_item fills an empty list with [answer]: not the harness's reading
  return item


class DatBench(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """DatBench; config name == capability (`datbench/<capability>/1.1.0/...`), split `test`.

  Rows whose image bytes PIL cannot parse are kept as they are (with a warning):
  the eval reports such an item as failed rather than silently shrinking the
  benchmark. Rows without an image keep `image=b""`. Prepared data is cached and rebuilt
  when its source files change (`common.prepare` records their paths, sizes and mtimes).
  """

  name = "datbench"
  VERSION = tfds.core.Version("1.1.0")  # a new version: copies prepared by 1.0.0 are rebuilt, not reused
  RELEASE_NOTES = {"1.0.0": "Common jaxprune item record; images as encoded bytes.",
                   "1.1.0": "An empty all_answers list stays empty (1.0.0 stored [answer] in its place)."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=c, description=f"DatBench {c}") for c in CAPABILITIES]

  def __init__(self, *, source_dir: str | os.PathLike[str] | None = None, **kwargs: Any):
    self._source_dir = resolve_source_dir(source_dir)
    self._files: list[pathlib.Path] | None = None
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="DatBench: curated VLM evaluation suite (DatologyAI).",
        features=common.item_features(),
        homepage=f"https://huggingface.co/datasets/{HF_REPO}",
        disable_shuffling=True,  # Keep source order: `limit` and ids follow the parquet files.
    )

  def resolve_files(self) -> list[pathlib.Path]:
    """Source parquet files (local copy, else downloaded from the hub); raises one line if absent."""
    if self._files is None:
      capability = self.builder_config.name
      if self._source_dir is not None:
        self._files = local_parquet_files(self._source_dir, capability)
      else:
        self._files = hub_parquet_files(capability)
    return self._files

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[int, dict[str, Any]]]]:
    del dl_manager  # Files come from a local copy or huggingface_hub's own cache.
    return {SPLIT: self._generate_examples(self.resolve_files())}

  def _generate_examples(self, files: list[pathlib.Path]) -> Iterator[tuple[int, dict[str, Any]]]:
    capability = self.builder_config.name
    unreadable: list[str] = []
    for index, (path, row) in enumerate(iter_parquet_rows(files)):
      item = row_to_item(row, capability, index, base_dir=path.parent)
      if item["image"] and not common.is_valid_image(item["image"]):
        unreadable.append(item["id"])
      yield index, common.encode_item(item)
    if unreadable:
      shown = ", ".join(unreadable[:10]) + (", ..." if len(unreadable) > 10 else "")
      log.warning("datbench:%s: %d row(s) have unreadable images (the eval reports them as failed): %s",
                  capability, len(unreadable), shown)


EXTRA_COLUMNS = ("judge_prompt", "is_circular", "eval_metrics")


def row_extras(files: Sequence[pathlib.Path]) -> dict[str, dict[str, Any]]:
  """id -> {judge_prompt, is_circular, eval_metrics} from the source files (only those columns are read).

  Rows without an id get `<capability>-<index>` ids in `row_to_item`, which this cannot know: they are skipped.
  """
  import pyarrow.parquet as pq

  extras: dict[str, dict[str, Any]] = {}
  for path in files:
    names = set(pq.ParquetFile(path).schema_arrow.names)
    if "id" not in names:
      continue
    columns = ["id", *(c for c in EXTRA_COLUMNS if c in names)]
    for row in pq.read_table(path, columns=columns).to_pylist():
      if row.get("id"):
        extras[str(row["id"])] = {c: row.get(c) for c in EXTRA_COLUMNS}
  return extras


def source_files(capability: str, source_dir: str | os.PathLike[str] | None = None) -> list[pathlib.Path]:
  """The parquet files of one capability: the local copy if there is one, else the hub's (cached)."""
  root = resolve_source_dir(source_dir)
  return local_parquet_files(root, capability) if root is not None else hub_parquet_files(capability)


def judge_prompts(capability: str, source_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
  """{item id: the harness's judge prompt} of one capability, read from its source files (the task registry's
  hook for `eval_mode == "judge"` items)."""
  return {i: (e.get("judge_prompt") or "") for i, e in row_extras(source_files(capability, source_dir)).items()}


def check_items(items: Sequence[Mapping[str, Any]], task: str) -> None:
  """Raises ValueError (one line: task, item id, field) for the first item its scorer cannot score."""
  from jaxprune import metrics  # Lazy: keeps `jaxprune.data` importable without the scorers' dependencies.

  for item in items:
    try:
      metrics.check_item(item)
    except metrics.ItemError as e:
      raise ValueError(f"{task}: {e}") from None


def open_task(sub: str, split: str | None, data_dir, datbench_dir) -> tuple[Any, common.Source, str]:
  """The task registry's entry point (`jaxprune.data.tasks`): one capability's builder and its parquet files
  (resolved before tfds starts writing, so a wrong path fails fast, naming it)."""
  split = split or SPLIT
  if split != SPLIT:
    raise ValueError(f"unknown DatBench split {split!r} (known: {SPLIT})")
  capability_builder = builder(sub, data_dir, datbench_dir)
  local = resolve_source_dir(datbench_dir)
  origin = str(local) if local else f"hf://datasets/{HF_REPO}"
  return capability_builder, common.Source(origin, capability_builder.resolve_files, local=local is not None), split


def builder(
    capability: str,
    data_dir: str | os.PathLike[str] | None = None,
    source_dir: str | os.PathLike[str] | None = None,
) -> DatBench:
  """The (possibly unprepared) builder for one capability."""
  check_capability(capability)
  return DatBench(config=capability, data_dir=common.resolve_data_dir(data_dir), source_dir=source_dir)
