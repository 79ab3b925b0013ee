"""Document question answering scored by ANLS / containment: DocVQA, InfoVQA, OCR-VQA and OCRBench v2.

Mirrors `datbench/datasets_scoring/docvqa.py`, `infovqa.py` (with the PyPI `anls` package), `ocrvqa.py` and
`ocrbench_v2.py` (its question-answering, formula and counting task types; the structured task types are
reported as unsupported). CC-OCR lives in `jaxprune.metrics.cc_ocr`.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from jaxprune.metrics.extract import (Details, Sample, _anls_raw, _nonempty, _squash_lower, extract_final_answer,
                                      levenshtein)


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


# ----------------------------------------------------------------------------------------------
# OCRBench v2 (the question-answering, formula and counting task types)
# ----------------------------------------------------------------------------------------------

_OCRB_VQA_TYPES = frozenset({
    "APP agent en", "ASCII art classification en", "reasoning VQA en", "science QA en", "text recognition en",
    "document classification en", "cognition VQA en", "diagram QA en", "fine-grained text recognition en"})
_OCRB_STRUCTURED = frozenset({
    "key information extraction en", "key information mapping en", "key information extraction cn",
    "chart parsing en", "document parsing en", "document parsing cn", "table parsing en", "table parsing cn",
    "text grounding en", "VQA with position en", "text spotting en"})
# Task types whose scorers (JSON/TEDS/IoU/BLEU-style parsing) are not reproduced: reported as unsupported.
OCRBENCH_UNSUPPORTED = _OCRB_STRUCTURED | {"full-page OCR en", "full-page OCR cn", "handwritten answer extraction cn"}


def _ocrb_contains_or_anls(pred: str, answers: Sequence[Any], *, lower: bool, no_spaces: bool,
                           short: Callable[[str], bool]) -> float:
  """OCRBench v2 `_vqa_evaluation` family: short answers by containment, long ones by ANLS >= 0.5."""
  score = 0.0
  for ans in answers:
    if isinstance(ans, (int, float)):
      ans = str(ans)
    if not isinstance(ans, str):
      continue
    a, p = ans.strip().replace("\n", " "), str(pred).strip().replace("\n", " ")
    if lower:
      a, p = ans.lower().strip().replace("\n", " "), str(pred).lower().strip().replace("\n", " ")
    if no_spaces:
      a, p = a.replace(" ", ""), p.replace(" ", "")
    if short(a):
      if a in p:
        score = 1.0
    else:
      length = max(len(p), len(a))
      value = 1.0 - (0.0 if length == 0 else levenshtein(p, a) / length)
      if value >= 0.5 and value > score:
        score = value
  return score


def _ocrb_letters(pred: str, answers: Sequence[str]) -> float:
  letters = "".join(c for c in pred if c.isalpha())
  return float(len(answers) == 1 and letters == answers[0])


def score_ocrbench_v2(sample: Sample, output: str) -> Details:
  """ocrbench_v2.py `score_sample` for VQA / multiple-choice / formula / counting task types."""
  ttype = sample.get("type", "")
  answers = sample.get("answers") or sample.get("all_answers") or []
  how = sample.get("eval")
  if ttype in OCRBENCH_UNSUPPORTED:
    return {"score": 0.0, "supported": False, "task_type": ttype}
  pred = extract_final_answer(output)
  en_short = lambda a: len(a.split()) < 5
  if ttype in _OCRB_VQA_TYPES or ttype in ("cognition VQA cn", "reasoning VQA cn") or ttype == "math QA en":
    if how == "multiple choice":
      score = _ocrb_letters(pred, answers)
    elif how == "case sensitive" and ttype != "math QA en":
      score = _ocrb_contains_or_anls(pred, answers, lower=False, no_spaces=False, short=en_short)
    elif ttype in ("cognition VQA cn", "reasoning VQA cn"):
      score = _ocrb_contains_or_anls(pred, answers, lower=True, no_spaces=True,
                                     short=lambda a: len(a.split(",")) < 4)
    else:
      score = _ocrb_contains_or_anls(pred, answers, lower=True, no_spaces=False, short=en_short)
  elif ttype == "text translation cn":
    score = _ocrb_contains_or_anls(pred, answers, lower=True, no_spaces=True, short=lambda a: len(a.split(",")) < 4)
  elif ttype in ("formula recognition en", "formula recognition cn"):
    if ttype.endswith("cn"):
      untag = lambda s: re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
      answers = [untag(answers[0])] if len(answers) == 1 else answers
      pred = untag(pred)
    squash = lambda s: s.strip().replace("\n", " ").replace(" ", "")
    score = float(any(squash(a) in squash(pred) for a in answers))
  elif ttype == "text counting en":
    score = _ocrb_counting(pred, answers, how or "exact match")
  else:  # unknown type: the reference's VQA fallback
    score = _ocrb_contains_or_anls(pred, answers, lower=True, no_spaces=False, short=en_short)
  return {"score": float(score), "task_type": ttype}


def _ocrb_counting(pred: str, answers: Sequence[str], how: str) -> float:
  best = 0.0
  for ans in answers:
    score = 0.0
    if how == "regression":
      nums = re.findall(r"\d+", pred)
      if nums:
        try:
          target = int(ans)
          got = int(nums[0])
          if 0 < got < 2 * target:
            iou = 1 - abs(got - target) / target
            score = iou if iou > 0.5 else 0.0
        except (ValueError, ZeroDivisionError):
          score = 0.0
    elif ans.lower().strip().replace("\n", " ") in pred.lower().strip().replace("\n", " "):
      score = 1.0
    best = max(best, score)
  return best
