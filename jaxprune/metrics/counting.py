"""Counting: CountBench and TallyQA.

Mirrors `datbench/datasets_scoring/countbench.py` (last integer or first number word of the extracted answer)
and `tallyqa.py` (`_extract_number`: compound number words, phrase patterns, digits, number words).
"""

from __future__ import annotations

import re
from typing import Any

from jaxprune.metrics.extract import Details, Sample, extract_final_answer

# ----------------------------------------------------------------------------------------------
# Counting
# ----------------------------------------------------------------------------------------------

_SMALL_NUMBER_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                       "eight": 8, "nine": 9, "ten": 10}


def score_countbench(sample: Sample, output: str) -> Details:
  """countbench.py `score_sample`: last integer of the extracted answer (else the first number word
  found as a substring, in the order zero..ten) equals int(answer)."""
  extracted = extract_final_answer(output)
  parsed = None
  if extracted:
    nums = re.findall(r"\b\d+\b", extracted)
    if nums:
      parsed = int(nums[-1])
    else:
      low = extracted.lower()
      parsed = next((v for w, v in _SMALL_NUMBER_WORDS.items() if w in low), None)
  raw = sample.get("answer")
  try:
    gt: Any = int(raw.strip()) if isinstance(raw, str) else raw
  except ValueError:
    gt = raw  # a non-integer answer never equals an int
  return {"score": float(parsed is not None and parsed == gt), "parsed_answer": parsed}


_TALLY_WORDS = {**_SMALL_NUMBER_WORDS, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
                "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
                "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
                "hundred": 100, "thousand": 1000}
_TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_ONES = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "zero")
_TALLY_FINAL_PATTERNS = (
    r"(?:therefore|thus|hence|so),?\s*(?:the\s+)?(?:number\s+of\s+\w+\s+is\s+|answer\s+is\s+)(\w+)",
    r"(?:the\s+)?(?:total\s+)?(?:number\s+of\s+\w+\s+is\s+|count\s+is\s+)(\w+)",
    r"(?:i\s+count\s+|there\s+are\s+)(\w+)",
    r"(?:the\s+)?answer\s+is\s+(\w+)",
    r"(?:final\s+answer:?\s*)(\w+)",
    r"(?:result:?\s*)(\w+)",
)
_TALLY_SENTENCE_PATTERNS = (
    r"there\s+are\s+(\w+)\s+\w+\s+in\s+the\s+image",
    r"there\s+are\s+(\w+)\s+\w+",
    r"i\s+(?:can\s+)?see\s+(\w+)\s+\w+",
    r"contains\s+(\w+)\s+\w+",
    r"shows\s+(\w+)\s+\w+",
)


def _word_or_digits(token: str) -> int | None:
  if token.isdigit():
    return int(token)
  return _TALLY_WORDS.get(token)


def tallyqa_number(text: str) -> int | None:
  """tallyqa.py `_extract_number`: compound words, phrase patterns, last digits, last number word."""
  if not text:
    return None
  text = str(text).strip()
  low = text.lower()
  compound = list(re.finditer(rf"\b({'|'.join(_TENS)})[\-\s]+({'|'.join(_ONES)})\b", low))
  if compound:
    m = compound[-1]
    return _TALLY_WORDS[m.group(1)] + _SMALL_NUMBER_WORDS[m.group(2)]
  for patterns in (_TALLY_FINAL_PATTERNS, _TALLY_SENTENCE_PATTERNS):
    for rx in patterns:
      hits = re.findall(rx, low)
      if hits:
        value = _word_or_digits(hits[-1])
        if value is not None:
          return value
  nums = re.findall(r"\b\d+\b", text)
  if nums and len(nums[-1]) <= 9:  # absurdly long digit runs are generation failures
    return int(nums[-1])
  words = [_TALLY_WORDS[w] for w in (re.sub(r"[^\w]", "", t) for t in low.split()) if w in _TALLY_WORDS]
  return words[-1] if words else None


def score_tallyqa(sample: Sample, output: str) -> Details:
  """tallyqa.py `score_sample`: `tallyqa_number` of the extracted answer equals the integer answer."""
  parsed = tallyqa_number(extract_final_answer(output))
  gt = sample.get("answer")
  gt_int = int(gt.strip()) if isinstance(gt, str) and gt.strip().isdigit() else None
  return {"score": float(parsed is not None and gt_int is not None and parsed == gt_int),
          "parsed_answer": parsed, "is_simple": sample.get("is_simple")}
