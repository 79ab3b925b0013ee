"""Number and percent parsing shared by the scorers.

`_parse_float` (the harness's float-or-None), `_numeric_core` (textvqa.py's currency/percent rescue),
`_float_pct`/`_align_percent` (chartqa.py / chartqapro.py percent-aware relaxed accuracy),
`_hundredths_ratio` (chartqapro.py "x/100" answers) and `_numbers_in` (mathvista.py / mmmu.py
`_extract_numbers`). Named `numeric`, not `numbers`, so that it never shadows the standard library module.
"""

from __future__ import annotations

import re


def _parse_float(text: str) -> float | None:
  try:
    return float(text)
  except (TypeError, ValueError):
    return None


def _numeric_core(s: str) -> str:
  """Digits and one decimal point, with currency, percent and thousands separators removed."""
  s = s.replace("$", "").replace("£", "").replace("€", "").replace("%", "").replace(",", "")
  s = re.sub(r"[^0-9.]", "", s)
  if s.count(".") > 1:
    parts = [p for p in s.split(".") if p]
    if parts:
      s = parts[0] + "." + "".join(parts[1:])
  return s.strip(".")


def _float_pct(text: str) -> tuple[float | None, bool]:
  t = (text or "").strip().replace(",", "")
  is_pct = t.endswith("%")
  value = _parse_float(t.rstrip("%") if is_pct else t)
  return (value, is_pct) if value is not None else (None, False)


def _align_percent(p: float, p_pct: bool, g: float, g_pct: bool) -> tuple[float, float]:
  """When exactly one side carries '%', a fraction in [0, 1.5] on the other side is scaled by 100
  provided the percent side is >= 2 (so 0.24 vs 24% agree, 1 vs 1% do not)."""
  if p_pct != g_pct:
    if not p_pct and g >= 2 and 0 <= p <= 1.5:
      p *= 100.0
    if not g_pct and p >= 2 and 0 <= g <= 1.5:
      g *= 100.0
  return p, g


def _hundredths_ratio(text: str) -> float | None:
  """"x/100" as a fraction; other ratios are not numbers here."""
  parts = (text or "").strip().replace(",", "").split("/")
  if len(parts) == 2:
    num, den = _parse_float(parts[0].strip()), _parse_float(parts[1].strip())
    if num is not None and den is not None and abs(den - 100.0) < 1e-6:
      return num / 100.0
  return None


def _numbers_in(text: str) -> list[str]:
  """mathvista/mmmu `_extract_numbers`: 1,234-style, scientific, then plain numbers."""
  commas = re.findall(r"-?\b\d{1,3}(?:,\d{3})+\b", text)
  sci = re.findall(r"-?\d+(?:\.\d+)?[eE][+-]?\d+", text)
  plain = re.findall(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])", text)
  return commas + sci + plain
