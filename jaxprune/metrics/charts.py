"""Charts: ChartQA, ChartQAPro and CharXiv.

Mirrors `datbench/datasets_scoring/chartqa.py` (relaxed accuracy: numbers within 5%, percent-aware),
`chartqapro.py` (per-position relaxed accuracy, year columns exact, single- and multi-turn) and `charxiv.py`
(its rule-based path). The number/percent parsing they share lives in `jaxprune.metrics.numeric`.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from jaxprune.metrics.extract import Details, Sample, _nonempty, extract_final_answer
from jaxprune.metrics.numeric import _align_percent, _float_pct, _hundredths_ratio, _parse_float

# ----------------------------------------------------------------------------------------------
# Charts
# ----------------------------------------------------------------------------------------------


def _punct_free(s: str) -> str:
  """chartqa/chartqapro `_normalize_answer`: lowercase, drop non-word characters, squash spaces."""
  if not s:
    return ""
  s = re.sub(r"[^\w\s]", "", s.lower().strip())
  return re.sub(r"\s+", " ", s).strip()


def _sorted_list_items(s: str) -> list[str]:
  """A "[a, b]" answer as its sorted, normalised items; [] when it is not a bracketed list."""
  s = s.strip() if isinstance(s, str) else ""
  if len(s) < 2 or s[0] != "[" or s[-1] != "]":
    return []
  return sorted(n for n in (_punct_free(it.strip()) for it in s[1:-1].split(",") if it.strip()) if n)


def chartqa_relaxed(pred: str, target: str) -> bool:
  """chartqa.py `_relaxed_correctness`: numbers within 5% (percent-aware), else list or string match."""
  pv, p_pct = _float_pct(pred)
  gv, g_pct = _float_pct(target)
  if pv is not None and gv is not None:
    pv, gv = _align_percent(pv, p_pct, gv, g_pct)
    if gv != 0 and (abs(pv - gv) / abs(gv) <= 0.05 or (abs(gv) < 1e-6 and abs(pv - gv) <= 1e-6)):
      return True
  p_list, g_list = _sorted_list_items(pred), _sorted_list_items(target)
  if p_list and g_list:
    return p_list == g_list
  return _punct_free(pred) == _punct_free(target)


def score_chartqa(sample: Sample, output: str) -> Details:
  """chartqa.py `score_sample`: 1 if `chartqa_relaxed` holds for any of `all_answers`."""
  answer = sample.get("answer")
  refs = sample.get("all_answers") or ([answer] if answer else [])
  refs = _nonempty(refs if isinstance(refs, list) else [refs])
  pred = extract_final_answer(output)
  return {"score": float(any(chartqa_relaxed(pred, g) for g in refs)), "pred_answer": pred}


def _quote_bare_list(item: str) -> Any:
  """chartqapro `_fix_list_format`: "[a, b c]" -> ['a', 'b c'] by quoting every bare word run."""
  if not isinstance(item, str):
    return item
  m = re.match(r"^\[(.*)\]$", item.strip())
  if not m:
    return item
  quoted = re.sub(r"(?<!['\w])(\w[^,]*?)(?!['\w])", r"'\1'", m.group(1))
  try:
    return ast.literal_eval(f"[{quoted}]")
  except (SyntaxError, ValueError):
    return item


def _literal_list(text: str) -> list[str] | None:
  try:
    parsed = ast.literal_eval(text)
  except Exception:  # literal_eval raises many types (MemoryError, RecursionError, ...) on odd input
    return None
  return [str(x).strip(" '") for x in parsed] if isinstance(parsed, list) else None


def _chartqapro_single(target: str, pred: str, question: str | None) -> float:
  """chartqapro `_evaluate_single_answer`."""
  t, t_pct = _float_pct(target)
  p, p_pct = _float_pct(pred)
  if question is not None and "percentage" in question.lower() and t is not None and p is not None:
    # On percentage questions fractions are read as percents (0.25 -> 25%).
    t_ratio, p_ratio = _hundredths_ratio(target), _hundredths_ratio(pred)
    if t_ratio is not None:
      t, t_pct = t_ratio * 100.0, True
    if p_ratio is not None:
      p, p_pct = p_ratio * 100.0, True
    if not t_pct and 0 <= t <= 1.5:
      t, t_pct = t * 100.0, True
    if not p_pct and 0 <= p <= 1.5:
      p, p_pct = p * 100.0, True
  if t is not None and p is not None:
    p, t = _align_percent(p, p_pct, t, t_pct)
    if t != 0:
      if abs(p - t) / abs(t) <= 0.05 + 1e-10 or (abs(t) < 1e-6 and abs(p - t) <= 1e-6):
        return 1.0
    elif t == 0.0:
      return float(p == 0.0)
  p_list, t_list = _sorted_list_items(pred), _sorted_list_items(target)
  if p_list and t_list:
    return float(p_list == t_list)
  return float(_punct_free(pred) == _punct_free(target))


def _chartqapro_relaxed(target: str, pred: str, year_flags: Any, exact: bool, question: str | None) -> float:
  """chartqapro `_relaxed_correctness_chartqapro`: mean over list positions; year columns exact."""
  t_list = _literal_list(str(_quote_bare_list(target))) or [str(target)]
  p_list = _literal_list(str(pred)) or [str(pred)]
  n = len(t_list)
  flags = year_flags
  if flags is not None:
    flags = [str(f).upper() for f in (flags if isinstance(flags, list) else [flags])]
    if len(flags) < n:
      flags = flags * n
  scores = []
  for i in range(max(len(t_list), len(p_list))):
    if i >= len(t_list) or i >= len(p_list):
      scores.append(0.0)
      continue
    flag = flags[i] if flags and i < len(flags) else "NO"
    if flag.upper() == "YES" or exact:
      scores.append(float(_punct_free(str(t_list[i])) == _punct_free(str(p_list[i]))))
    else:
      scores.append(_chartqapro_single(t_list[i], p_list[i], question))
  return sum(scores) / len(scores) if scores else 0.0


def _mc_letter_prefix(text: str) -> str:
  """chartqapro `_extract_choice_letter`: "b)"/"b." or a lone letter -> "B", else unchanged."""
  text = str(text).strip()
  m = re.match(r"^([a-zA-Z])[).]", text)
  if m:
    return m.group(1).upper()
  if len(text) == 1 and text.isalpha():
    return text.upper()
  return text


def score_chartqapro(sample: Sample, output: Any) -> Details:
  """chartqapro.py `score_sample` (single- and multi-turn)."""
  answers = sample.get("all_answers")
  if not (isinstance(answers, list) and answers):
    answers = [sample["answer"]] if sample.get("answer") is not None else []
  qtype = sample.get("question_type") or "unknown"
  year_flags = sample.get("year_flags") or []
  exact = qtype in ("Fact Checking", "Multi Choice")

  def letter_if_mc(target: str, pred: str) -> str:
    t = str(target).strip().upper()
    if qtype == "Multi Choice" and len(t) == 1 and t in "ABCDE" and sample.get("mcq_conversion") is None:
      return _mc_letter_prefix(pred)
    return pred

  multi = sample.get("is_multi_turn", False) or isinstance(output, list)
  if not multi:
    target = str(answers[-1]).strip(".").strip("\n") if answers else ""
    pred = extract_final_answer(str(output)).strip(".").strip("\n")
    flags = year_flags
    if qtype == "Conversational":
      flags = flags[-1:] if isinstance(flags, list) else [flags]
    pred = letter_if_mc(target, pred)
    score = _chartqapro_relaxed(target, pred, flags, exact, sample.get("question", ""))
    return {"score": score, "pred_answer": pred, "question_type": qtype, "is_multi_turn": False}
  outputs = output if isinstance(output, list) else [output]
  flags = year_flags if isinstance(year_flags, list) else [year_flags]
  turns = min(len(answers), len(outputs), len(flags) if flags else len(answers))
  questions = sample.get("all_questions") or sample.get("question", [])
  turn_scores = []
  for i in range(turns):
    target = str(answers[i]).strip(".").strip("\n")
    pred = letter_if_mc(target, extract_final_answer(str(outputs[i])).strip(".").strip("\n"))
    if qtype == "Conversational":
      turn_flags = flags[-1:]
    else:
      turn_flags = [flags[i]] if i < len(flags) else ([flags[0]] if flags else [])
    if isinstance(questions, list) and i < len(questions):
      question = questions[i]
    elif isinstance(questions, str):
      question = questions
    else:
      question = sample.get("question", "")
    turn_scores.append(_chartqapro_relaxed(target, pred, turn_flags, exact, question))
  score = sum(turn_scores) / len(turn_scores) if turn_scores else 0.0
  return {"score": score, "turn_scores": turn_scores, "question_type": qtype, "is_multi_turn": True}


def score_charxiv(sample: Sample, output: str) -> Details:
  """charxiv.py `score_sample` (its rule-based path): descriptive = exact / numeric equality;
  reasoning = equality or containment either way (the harness never passes `reasoning_q_source`)."""
  qtype = sample.get("question_type") or "descriptive"
  gt = sample.get("answer") or ""
  pred = extract_final_answer(output)
  score = 0.0
  if pred and gt:
    p, g = pred.strip().lower(), gt.strip().lower()
    if qtype == "descriptive":
      if g == "not applicable":
        score = float("not applicable" in p)
      elif p == g:
        score = 1.0
      else:
        pn = _parse_float(p.replace(",", "").replace("%", ""))
        gn = _parse_float(g.replace(",", "").replace("%", "")) if pn is not None else None
        score = float(pn is not None and gn is not None and abs(pn - gn) < 1e-6)
    else:
      score = float(p == g or g in p or p in g)
  return {"score": score, "pred_answer": pred, "question_type": qtype}
