"""VQA soft accuracy: VQAv2 and TextVQA.

Mirrors `datbench/datasets_scoring/vqav2.py` (+ `vqav2_eval`) and `textvqa.py` (+ `textvqa_eval`): the
leave-one-annotator-out soft accuracy over `all_answers` on the normalised answers (the normalisers live in
`jaxprune.metrics.extract`).
"""

from __future__ import annotations

from collections.abc import Sequence

from jaxprune.metrics.extract import Details, Sample, extract_final_answer, textvqa_normalize, vqav2_normalize
from jaxprune.metrics.numeric import _numeric_core

# ----------------------------------------------------------------------------------------------
# VQA-style soft accuracy
# ----------------------------------------------------------------------------------------------


def vqa_leave_one_out(pred_norm: str, gts_norm: Sequence[str]) -> float:
  """Mean over annotators i of min(1, #{j != i: gt_j == pred} / 3) (VQAv2 and TextVQA)."""
  n = len(gts_norm)
  if n == 0:
    return 0.0
  total_matches = sum(g == pred_norm for g in gts_norm)
  accs = [min(1.0, (total_matches - (g == pred_norm)) / 3.0) for g in gts_norm]
  return sum(accs) / n


def score_vqav2(sample: Sample, output: str) -> Details:
  """vqav2.py `score_sample`: leave-one-annotator-out soft accuracy over `all_answers`."""
  pred = extract_final_answer(output)
  answers = sample.get("all_answers") or []
  score = vqa_leave_one_out(vqav2_normalize(pred), [vqav2_normalize(a) for a in answers]) if answers else 0.0
  return {"score": score, "pred_answer": pred, "answer_type": sample.get("answer_type", "unknown"),
          "question_type": sample.get("question_type", "unknown")}


_CURRENCY_SYMBOLS = ("$", "£", "€", "¥", "₹", "%")


def score_textvqa(sample: Sample, output: str) -> Details:
  """textvqa.py `score_sample`: EvalAI-normalised soft accuracy; a zero is rescued when a currency or
  percent sign is involved and the numbers agree once the symbols are removed."""
  answers = sample.get("all_answers") or []
  pred = extract_final_answer(output)
  score = vqa_leave_one_out(textvqa_normalize(pred or ""), [textvqa_normalize(a) for a in answers]) \
      if answers else 0.0
  if score == 0.0 and (any(s in pred for s in _CURRENCY_SYMBOLS)
                       or any(any(s in str(a) for s in _CURRENCY_SYMBOLS) for a in answers)):
    p_num = _numeric_core(pred)
    if p_num and any(ch.isdigit() for ch in pred):
      for a in answers:
        if a and any(ch.isdigit() for ch in str(a)) and _numeric_core(str(a)) == p_num:
          score = 1.0
          break
  return {"score": score, "pred_answer": pred}
