"""Cheap content identity of files: what run headers, blind files and prepared-data caches compare."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

_MIB = 1 << 20


def files_digest(files: Iterable[tuple[str, Path]]) -> str:
  """A short digest of (label, file) pairs: each label and size, then the first and last MiB of the file (the
  whole file up to 2 MiB). Cheap even for a 14 GB checkpoint; labels, not absolute paths, so a copy keeps it."""
  digest = hashlib.sha256()
  for label, file in files:
    size = Path(file).stat().st_size
    digest.update(f"{label}:{size}\n".encode())
    with open(file, "rb") as fh:
      digest.update(fh.read(_MIB))
      if size > 2 * _MIB:
        fh.seek(-_MIB, os.SEEK_END)
      digest.update(fh.read())
  return digest.hexdigest()[:16]
