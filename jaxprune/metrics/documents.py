"""Document question answering scored by ANLS: DocVQA, InfoVQA and OCR-VQA.

Mirrors `datbench/datasets_scoring/docvqa.py`, `infovqa.py` (with the PyPI `anls` package) and `ocrvqa.py`.
OCRBench v2 lives in `jaxprune.metrics.ocrbench_v2`, CC-OCR in `jaxprune.metrics.cc_ocr`.
"""

from __future__ import annotations

from collections.abc import Sequence

from jaxprune.metrics.extract import (
  Details,
  Sample,
  _anls_raw,
  _nonempty,
  _squash_lower,
  extract_final_answer,
  levenshtein,
)

# ----------------------------------------------------------------------------------------------
# ANLS: DocVQA, InfoVQA, OCR-VQA
# ----------------------------------------------------------------------------------------------


def score_docvqa(sample: Sample, output: str) -> Details:
  """docvqa.py `score_sample`: best un-thresholded ANLS over `all_answers` (the thresholded value and
  ANLS >= 0.5 are reported beside it)."""
  answer = sample.get("answer")
  refs = sample.get("all_answers") or ([answer] if answer else [])
  refs = _nonempty(refs if isinstance(refs, list) else [refs])
  pred = extract_final_answer(output)
  p = _squash_lower(pred)
  raw = max([_anls_raw(p, _squash_lower(g)) for g in refs], default=0.0)
  return {"score": raw, "anls": raw, "anls_thresholded_0_5": raw if raw >= 0.5 else 0.0,
          "threshold_0_5_accuracy": float(raw >= 0.5), "pred_answer": pred}


def _anls_package(pred: str, golds: Sequence[str], threshold: float = 0.5) -> float:
  """PyPI `anls.anls_score`: max over golds of 1 - NL if NL < threshold else 0, on squashed lowercase."""
  p = " ".join(pred.strip().lower().split())
  best = []
  for g in golds:
    t = " ".join(g.strip().lower().split())
    length = max(len(p), len(t))
    nl = 0.0 if length == 0 else levenshtein(p, t) / length
    best.append(1 - nl if nl < threshold else 0.0)
  return max(best)


def score_infovqa(sample: Sample, output: str) -> Details:
  """infovqa.py `score_sample` with the `anls` package: thresholded ANLS against `answer` only (the
  harness hands InfoVQA no `answers` key, so `all_answers` is never read)."""
  answer = sample.get("answer")
  refs = _nonempty([answer] if answer else [])
  pred = extract_final_answer(output)
  score = _anls_package(pred, refs) if refs else 0.0
  return {"score": score, "anls": score, "pred_answer": pred}


def score_ocrvqa(sample: Sample, output: str) -> Details:
  """ocrvqa.py `score_sample`: un-thresholded ANLS against `answer`."""
  answer = sample.get("answer", "")
  pred = extract_final_answer(output)
  p, g = _squash_lower(pred), _squash_lower(answer)
  raw = _anls_raw(p, g) if answer else 0.0
  return {"score": raw, "anls": raw, "exact_match": float(p == g), "pred_answer": pred}
