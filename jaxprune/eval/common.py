"""What every part of the eval shares: the error type, the two non-plan configs, list flags, config keys."""

from __future__ import annotations

BLIND, NONE = "blind", "none"


class EvalError(ValueError):
  """A bad flag or input; `main` prints it as one line and exits 2."""


def split_list(text: str) -> list[str]:
  """Comma list, blanks and repeats dropped (a repeated value would make a duplicate row)."""
  return list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))


def config_key(plan) -> str:
  return NONE if plan is None else str(plan)
