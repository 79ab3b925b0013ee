"""Answer extraction and per-item scoring for DatBench-style VLM evals (pure Python + numpy).

Every metric takes `(pred, answers)` and returns a float in [0, 1]; an empty prediction or an empty
reference list scores 0 instead of raising, so one odd item can never kill a long eval run.
`score_item` picks the metric from the item's source dataset (and, for mixed multiple-choice /
open-ended benchmarks, from the answer itself) and reports when it had to fall back.
"""

from __future__ import annotations

import dataclasses
import math
import re
import string
from typing import Callable, Sequence

import numpy as np

# ----------------------------------------------------------------------------------------------
# Answer extraction
# ----------------------------------------------------------------------------------------------

_BOXED_RE = re.compile(r"\\boxed\s*\{")
# A single LaTeX text wrapper around a boxed answer (\boxed{\text{B}}) carries no meaning.
_TEXT_WRAP_RE = re.compile(r"^\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{(.*)\}$", re.DOTALL)
# "Answer: x", also "Final answer: x"; leading markdown (**, #, >) is common in chat outputs.
_ANSWER_LINE_RE = re.compile(r"^[\s*#>_]*(?:final\s+)?answer\s*[*_]*\s*:(.*)$", re.IGNORECASE)


def _last_boxed(text: str) -> str | None:
  """Content of the last `\\boxed{...}`, matching nested braces; None when there is none."""
  starts = [m.end() for m in _BOXED_RE.finditer(text)]
  if not starts:
    return None
  start = starts[-1]
  depth = 1
  for i in range(start, len(text)):
    if text[i] == "{":
      depth += 1
    elif text[i] == "}":
      depth -= 1
      if depth == 0:
        return text[start:i].strip()
  # Unclosed (generation hit its token limit): the rest is the best guess we have.
  return text[start:].strip()


def extract_answer(text: str, *, keep_all_lines: bool = False) -> str:
  """The answer part of a model output: last `\\boxed{}`, else last `Answer:` line, else last line.

  `keep_all_lines` returns the whole stripped output in the last case, for transcription-style
  tasks (document parsing, scene OCR) where the answer itself spans many lines.
  """
  if not text or not text.strip():
    return ""
  boxed = _last_boxed(text)
  if boxed is not None:
    m = _TEXT_WRAP_RE.match(boxed)
    return (m.group(1) if m else boxed).strip()
  lines = text.splitlines()
  for line in reversed(lines):
    m = _ANSWER_LINE_RE.match(line)
    if m:
      rest = m.group(1).strip().strip("*_").strip()
      if rest:  # "Answer:" with nothing after it falls through to the last line
        return rest
      break
  if keep_all_lines:
    return text.strip()
  for line in reversed(lines):
    if line.strip():
      return line.strip()
  return ""


# ----------------------------------------------------------------------------------------------
# VQA answer normalisation (the VQAv2 / TextVQA evaluation convention)
# ----------------------------------------------------------------------------------------------

_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
# Apostrophe-less spellings mapped back; ambiguous ones that are also words (its, ill, well, were,
# hell, shell, id) are deliberately absent.
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldnt": "couldn't",
    "couldve": "could've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hasnt": "hasn't", "havent": "haven't", "hes": "he's", "im": "i'm",
    "isnt": "isn't", "itd": "it'd", "itll": "it'll", "ive": "i've", "lets": "let's",
    "mightnt": "mightn't", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "shant": "shan't", "shes": "she's", "shouldnt": "shouldn't",
    "shouldve": "should've", "thats": "that's", "theres": "there's", "theyd": "they'd",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "wasnt": "wasn't",
    "werent": "weren't", "weve": "we've", "whats": "what's", "wheres": "where's",
    "whos": "who's", "wont": "won't", "wouldnt": "wouldn't", "wouldve": "would've",
    "yall": "y'all", "youd": "you'd", "youll": "you'll", "youre": "you're", "youve": "you've",
}
# Apostrophes are not here: they are left to the contraction handling, as in the reference eval.
_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@",
          "`", ",", "?", "!")
_DIGIT_COMMA_DIGIT_RE = re.compile(r"\d,\d")
_PERIOD_NOT_DECIMAL_RE = re.compile(r"\.(?!\d)")


def normalize_answer(s: str) -> str:
  """VQA-eval normalisation: lowercase, punctuation, number words -> digits, articles, contractions."""
  s = s.replace("\n", " ").replace("\t", " ").strip().lower()
  # A punctuation mark next to a space (or any text with a 1,000-style number) is dropped; inside a
  # word it separates tokens ("black-white" -> "black white"), as the reference eval does.
  drop = _DIGIT_COMMA_DIGIT_RE.search(s) is not None
  for p in _PUNCT:
    if drop or (p + " ") in s or (" " + p) in s:
      s = s.replace(p, "")
    else:
      s = s.replace(p, " ")
  s = _PERIOD_NOT_DECIMAL_RE.sub("", s)  # keeps "3.5", drops sentence periods
  words = []
  for w in s.split():
    w = _NUMBER_WORDS.get(w, w)
    if w in _ARTICLES:
      continue
    words.append(_CONTRACTIONS.get(w, w))
  return " ".join(words)


# ----------------------------------------------------------------------------------------------
# Number parsing shared by the numeric metrics
# ----------------------------------------------------------------------------------------------

_FLOAT_RE = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_THOUSANDS_RE = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_CURRENCY = "$€£¥"


def parse_number(s: str) -> float | None:
  """A float from `12`, `-3.5`, `12%`, `1,234`, `$5`, `-$5`, ` 7. `; None if not one number."""
  s = s.strip()
  if s.endswith(".") and len(s) > 1:  # sentence period, not part of the number
    s = s[:-1].strip()
  if s.endswith("%"):
    s = s[:-1].strip()
  sign = 1.0
  if s[:1] in ("+", "-"):
    sign, s = (-1.0 if s[0] == "-" else 1.0), s[1:].strip()
  if s[:1] and s[0] in _CURRENCY:
    s = s[1:].strip()
    if s[:1] in ("+", "-") and sign > 0:  # "$-5"
      sign, s = (-1.0 if s[0] == "-" else 1.0), s[1:].strip()
  if _THOUSANDS_RE.fullmatch(s):
    s = s.replace(",", "")
  if not _FLOAT_RE.fullmatch(s):
    return None
  v = sign * float(s)
  return v if math.isfinite(v) else None


def _refs(answers: Sequence[str] | str | None) -> list[str]:
  """Non-empty references; a bare string is treated as a one-answer list (a common caller slip)."""
  if answers is None:
    return []
  if isinstance(answers, str):
    answers = [answers]
  return [a for a in answers if isinstance(a, str) and a.strip()]


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------


def _loose(s: str) -> str:
  # Case-insensitive, stripped, trailing sentence period ignored: "Paris." == "paris".
  s = s.strip().lower()
  return s[:-1].rstrip() if s.endswith(".") else s


def relaxed_accuracy(pred: str, answers: Sequence[str], tolerance: float = 0.05) -> float:
  """ChartQA relaxed accuracy: numbers within `tolerance` relative error, else exact match."""
  refs = _refs(answers)
  if not pred.strip() or not refs:
    return 0.0
  p_num = parse_number(pred)
  for a in refs:
    a_num = parse_number(a)
    if p_num is not None and a_num is not None:
      # A zero target has no relative scale, so it needs an exact zero.
      ok = p_num == 0.0 if a_num == 0.0 else abs(p_num - a_num) / abs(a_num) <= tolerance
    else:
      ok = _loose(pred) == _loose(a)
    if ok:
      return 1.0
  return 0.0


def levenshtein(a: str, b: str) -> int:
  """Edit distance; one numpy pass per character of the shorter string (long OCR outputs are fine)."""
  if len(a) < len(b):
    a, b = b, a
  if not b:
    return len(a)
  bb = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
  cols = np.arange(len(b) + 1)
  prev = cols.copy()
  for i, ch in enumerate(a, start=1):
    cost = (bb != ord(ch)).astype(np.int64)
    cur = np.empty_like(prev)
    cur[0] = i
    # Deletion and substitution are elementwise; insertions chain along the row, which
    # cur[j] = j + cummin(tmp[k] - k) resolves without a Python loop.
    cur[1:] = np.minimum(prev[1:] + 1, prev[:-1] + cost)
    cur = np.minimum.accumulate(cur - cols) + cols
    prev = cur
  return int(prev[-1])


def _anls_norm(s: str) -> str:
  return " ".join(s.lower().split())


def anls(pred: str, answers: Sequence[str], threshold: float = 0.5) -> float:
  """DocVQA ANLS: max over answers of 1 - NL if NL < threshold else 0 (NL = normalised edit dist)."""
  refs = _refs(answers)
  p = _anls_norm(pred)
  if not p or not refs:
    return 0.0
  best = 0.0
  for a in refs:
    t = _anls_norm(a)
    nl = levenshtein(p, t) / max(len(p), len(t))
    if nl < threshold:
      best = max(best, 1.0 - nl)
  return best


def vqa_soft_accuracy(pred: str, answers: Sequence[str]) -> float:
  """VQAv2 soft accuracy: min(#matching human answers / 3, 1) after `normalize_answer`.

  With fewer than 3 references (single-answer sets such as OCR-VQA) the divisor is the number of
  references, so matching all of them is full credit rather than an unreachable 1/3 cap; for the
  usual 10 human answers this is exactly min(count / 3, 1).
  """
  refs = _refs(answers)
  p = normalize_answer(pred)
  if not p or not refs:
    return 0.0
  matches = sum(normalize_answer(a) == p for a in refs)
  return min(matches / min(3, len(refs)), 1.0)


def textvqa_accuracy(pred: str, answers: Sequence[str]) -> float:
  """TextVQA accuracy: the same soft formula and normalisation as VQAv2."""
  return vqa_soft_accuracy(pred, answers)


_COUNT_RE = re.compile(
    r"(?<![\w.])(\d+(?:\.\d+)?)|\b(zero|one|two|three|four|five|six|seven|eight|nine|ten)\b",
    re.IGNORECASE,
)


def parse_count(s: str) -> int | None:
  """The first integer or number word (zero..ten) in `s`: "There are 3." -> 3, "Two" -> 2."""
  m = _COUNT_RE.search(s)
  if m is None:
    return None
  if m.group(2):
    return int(_NUMBER_WORDS[m.group(2).lower()])
  v = float(m.group(1))
  return int(v) if v.is_integer() else None  # "2.5" is not a count


def counting_accuracy(pred: str, answers: Sequence[str]) -> float:
  """Exact integer match of the first count in the prediction against any reference count."""
  refs = _refs(answers)
  p = parse_count(pred)
  if p is None or not refs:
    return 0.0
  return float(any(parse_count(a) == p for a in refs))


_NUM = r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)"
# Comma or space separated; "),(" lets the two-corner form "(x1,y1),(x2,y2)" through as well.
_SEP = r"\s*\)?\s*[,\s]\s*\(?\s*"
_BOX_BRACKET_RE = re.compile(
    rf"[\[(]\s*({_NUM}){_SEP}({_NUM}){_SEP}({_NUM}){_SEP}({_NUM})\s*[\])]")
_BOX_BARE_RE = re.compile(rf"(?<![\w.])({_NUM}){_SEP}({_NUM}){_SEP}({_NUM}){_SEP}({_NUM})(?!\d)")


def _rescale(vals: list[float]) -> list[float]:
  # All coordinates <= 1: already 0-1 normalised; otherwise the 0-1000 grid of Qwen-style models.
  return vals if max(vals) <= 1.0 else [v / 1000.0 for v in vals]


def parse_box(s: str) -> tuple[float, float, float, float] | None:
  """`[x1, y1, x2, y2]` (brackets, parentheses or bare; comma/space separated), in 0-1 units."""
  m = _BOX_BRACKET_RE.search(s) or _BOX_BARE_RE.search(s)
  if m is None:
    return None
  x1, y1, x2, y2 = _rescale([float(g) for g in m.groups()])
  return x1, y1, x2, y2


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
  """IoU of two `(x1, y1, x2, y2)` boxes; degenerate boxes have zero area."""
  iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = iw * ih
  area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
  area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
  union = area_a + area_b - inter
  return inter / union if union > 0 else 0.0


def box_iou_accuracy(pred: str, answers: Sequence[str], threshold: float = 0.5) -> float:
  """RefCOCO accuracy: 1 if IoU(pred box, any reference box) >= threshold."""
  p = parse_box(pred)
  if p is None:
    return 0.0
  for a in _refs(answers):
    t = parse_box(a)
    if t is not None and box_iou(p, t) >= threshold:
      return 1.0
  return 0.0


_MOLMO_POINT_RE = re.compile(
    r"""x\d*\s*=\s*["']?(\d+(?:\.\d+)?)["']?\s+y\d*\s*=\s*["']?(\d+(?:\.\d+)?)""")
_POINT_RE = re.compile(rf"[\[(]\s*({_NUM})\s*[,\s]\s*({_NUM})\s*[\])]")


def parse_point(s: str) -> tuple[float, float] | None:
  """First point, in 0-1 units: Molmo `<point x="61.5" y="40.2">` (0-100 scale) or `(x, y)`."""
  m = _MOLMO_POINT_RE.search(s)
  if m:
    return float(m.group(1)) / 100.0, float(m.group(2)) / 100.0
  m = _POINT_RE.search(s)
  if m:
    x, y = _rescale([float(m.group(1)), float(m.group(2))])
    return x, y
  return None


def point_accuracy(pred: str, answers: Sequence[str]) -> float:
  """1 if the predicted point lies inside a reference box; references that are not boxes (a point
  needs a radius we do not have) fall back to `exact_match`."""
  refs = _refs(answers)
  if not pred.strip() or not refs:
    return 0.0
  boxes = [b for b in (parse_box(a) for a in refs) if b is not None]
  if not boxes:
    return exact_match(pred, refs)
  pt = parse_point(pred)
  if pt is None:
    return 0.0
  x, y = pt
  return float(any(b[0] <= x <= b[2] and b[1] <= y <= b[3] for b in boxes))


# Letter forms, strongest first; each captures the letter as written.
_MC_WHOLE_RE = re.compile(r"^[\[(]?([A-Za-z])[\])]?[.:)]?$")
# After "answer is"/"answer:", a capital letter must end the word; a lowercase one must be wrapped
# or followed by punctuation/end, so "the answer is a cat" does not read as option A.
_MC_ANSWER_RE = re.compile(
    r"(?i:\banswer\b\s*(?:is\b)?\s*[:：]?\s*(?:option\s*)?)"
    r"(?:[\[(]([A-Za-z])[\])]|([A-Z])\b|([a-z])(?=\s*[.,;:!?]|\s*$))")
_MC_PAREN_RE = re.compile(r"[\[(]([A-Za-z])[\])]")
_MC_LEAD_RE = re.compile(r"^([A-Za-z])[.:)](?:\s|$)")
_MC_OPTION_RE = re.compile(r"(?i:\b(?:option|choice)\s*)([A-Z])\b")
# Weakest: a lone capital letter closing the text ("so it is B."); tried after option-text matching.
_MC_TRAIL_RE = re.compile(r"(?<![A-Za-z'’])([A-Z])[\s.,;:!?)*]*$")


def _letters(n_choices: int | None) -> str:
  n = 26 if not n_choices else min(n_choices, 26)
  return string.ascii_uppercase[:n]


def parse_choice_letter(pred: str, choices: Sequence[str] | None = None) -> str | None:
  """An option letter from "B", "(b)", "B.", "B) Paris", "Answer: C", "The answer is (D)" etc.

  With `choices`, letters beyond the option count are ignored and a prediction that is the text of
  an option maps to that option's letter.
  """
  s = pred.strip()
  if not s:
    return None
  valid = _letters(len(choices) if choices else None)
  strong: list[str] = []
  m = _MC_WHOLE_RE.match(s)
  if m:
    strong.append(m.group(1))
  hits = list(_MC_ANSWER_RE.finditer(s))
  if hits:  # the last stated answer is the conclusion
    strong.append(next(g for g in hits[-1].groups() if g))
  for rx in (_MC_PAREN_RE, _MC_LEAD_RE, _MC_OPTION_RE):
    m = rx.search(s)
    if m:
      strong.append(m.group(1))
  for c in strong:
    if c.upper() in valid:
      return c.upper()
  by_text = _choice_index_letter(s, choices)
  if by_text is not None:
    return by_text
  m = _MC_TRAIL_RE.search(s)
  if m and m.group(1) in valid:
    return m.group(1)
  return None


_ANSWER_LETTER_RE = re.compile(r"^[\[(]?([A-Za-z])[\])]?[.:]?$")


def _answer_letter(answer: str, choices: Sequence[str] | None) -> str | None:
  """Reference letter: "C", "(C)", "c." -> "C"; or the position of `answer` among `choices`."""
  m = _ANSWER_LETTER_RE.match(answer.strip())
  if m:
    return m.group(1).upper()
  return _choice_index_letter(answer, choices)


def _choice_index_letter(text: str, choices: Sequence[str] | None) -> str | None:
  if not choices:
    return None
  t = normalize_answer(text)
  if not t:
    return None
  for i, c in enumerate(choices[:26]):
    if normalize_answer(c) == t:
      return string.ascii_uppercase[i]
  return None


def multiple_choice_accuracy(pred: str, answers: Sequence[str],
                             choices: Sequence[str] | None = None) -> float:
  """1 if the option letter read from `pred` equals the reference letter.

  A reference given as option text is mapped to its letter through `choices`; a prediction that
  states the option text instead of a letter is mapped the same way. If no reference letter can be
  found at all, this degrades to `exact_match`.
  """
  refs = _refs(answers)
  if not pred.strip() or not refs:
    return 0.0
  targets = {t for t in (_answer_letter(a, choices) for a in refs) if t is not None}
  if not targets:
    return exact_match(pred, refs)
  got = parse_choice_letter(pred, choices)
  return float(got is not None and got in targets)


def exact_match(pred: str, answers: Sequence[str]) -> float:
  """`normalize_answer` equality with any reference; numbers compare by value ("12.0" == "12")."""
  refs = _refs(answers)
  p = normalize_answer(pred)
  if not p or not refs:
    return 0.0
  p_num = parse_number(pred)
  for a in refs:
    if normalize_answer(a) == p:
      return 1.0
    a_num = parse_number(a)
    if p_num is not None and a_num is not None and math.isclose(p_num, a_num, rel_tol=1e-9,
                                                                 abs_tol=1e-12):
      return 1.0
  return 0.0


MetricFn = Callable[..., float]
METRICS: dict[str, MetricFn] = {
    "relaxed": relaxed_accuracy,
    "anls": anls,
    "vqa": vqa_soft_accuracy,
    "textvqa": textvqa_accuracy,
    "counting": counting_accuracy,
    "box_iou": box_iou_accuracy,
    "points": point_accuracy,
    "multiple_choice": multiple_choice_accuracy,
    "exact": exact_match,
}

# ----------------------------------------------------------------------------------------------
# Source dataset -> metric
# ----------------------------------------------------------------------------------------------

# Benchmarks that mix lettered options with free-form answers: "multiple_choice" here is the
# default, refined per item by `metric_for_source(source, answers, choices)`.
_MIXED_MC_SOURCES = (
    "ai2d", "mmbench", "mmmu", "mmmupro", "realworldqa", "mme-realworld-ocr", "mme-realworld-ad",
    "mme-realworld-mo", "mme-realworld-dt", "mathvista", "mathverse_reasoning", "mathverse_wo",
    "mathvision", "logicvista",
)

METRIC_BY_SOURCE: dict[str, str] = {
    "chartqa": "relaxed", "chartqapro": "relaxed",
    # CharXiv's own grader is an LLM judge; relaxed (numbers +-5%, else case-insensitive string
    # match) is the closest rule-based stand-in for its mostly short numeric/label answers.
    "charxiv_descriptive": "relaxed", "charxiv_reasoning": "relaxed",
    "docvqa": "anls", "infovqa": "anls",
    "ocr-vqa": "textvqa", "text-vqa": "textvqa",
    "vqa-v2": "vqa",
    "countbench": "counting", "tallyqa": "counting",
    "refcoco_testA": "box_iou", "refcoco_testB": "box_iou", "refcoco_plus_testA": "box_iou",
    "refcoco_plus_testB": "box_iou", "refcoco_m_val": "box_iou", "refcocog_test": "box_iou",
    "pixmo_points_eval": "points",
    **{s: "multiple_choice" for s in _MIXED_MC_SOURCES},
    "cc-ocr-doc_parsing": "anls", "cc-ocr-kie": "anls", "cc-ocr-multi_scene_ocr": "anls",
    "ocrbench-v2": "anls",
    "easyvqa": "exact",
}

# Whole-output answers: the last-line heuristic of `extract_answer` would cut a transcription.
FULL_TEXT_SOURCES = frozenset({"cc-ocr-doc_parsing", "cc-ocr-kie", "cc-ocr-multi_scene_ocr"})


def _key(source: str) -> str:
  # Case and "-" vs "_" differ between dumps of the same benchmark; match on a canonical form.
  return source.strip().lower().replace("_", "-")


_BY_KEY = {_key(k): k for k in METRIC_BY_SOURCE}


def canonical_source(source: str) -> str | None:
  """The `METRIC_BY_SOURCE` key for `source` (case / `-` vs `_` insensitive), or None if unknown."""
  return _BY_KEY.get(_key(source or ""))


def is_known_source(source: str) -> bool:
  return canonical_source(source) is not None


def metric_for_source(source: str, answers: Sequence[str] | str | None = None,
                      choices: Sequence[str] | None = None) -> str:
  """Metric name for an item; unknown sources give "exact" (check `is_known_source` to count them).

  For mixed benchmarks (`_MIXED_MC_SOURCES`) the answer decides: a single letter, or an answer that
  is one of the given `choices`, is scored as multiple choice; anything else (free-form math,
  numeric MMMU answers) by numeric-aware `exact` match, since +-5% slack is too loose for math.
  Without answers the per-source default is returned.
  """
  key = canonical_source(source)
  if key is None:
    return "exact"
  metric = METRIC_BY_SOURCE[key]
  refs = _refs(answers)
  if metric == "multiple_choice" and refs:
    first = refs[0]
    if _ANSWER_LETTER_RE.match(first.strip()) or _choice_index_letter(first, choices):
      return "multiple_choice"
    return "exact"
  return metric


@dataclasses.dataclass(frozen=True)
class ItemScore:
  """One scored prediction; `fallback` marks an unknown source scored by exact match."""

  score: float
  metric: str
  extracted: str
  fallback: bool

  @property
  def correct(self) -> bool:
    return self.score >= 0.5


def score_item(prediction: str, answers: Sequence[str], source: str,
               choices: Sequence[str] | None = None) -> ItemScore:
  """Extract the answer from `prediction` and score it with the metric for (source, answers)."""
  key = canonical_source(source)
  fallback = key is None
  extracted = extract_answer(prediction or "", keep_all_lines=key in FULL_TEXT_SOURCES)
  metric = metric_for_source(source, answers, choices)
  refs = _refs(answers)
  if metric == "multiple_choice":
    score = multiple_choice_accuracy(extracted, refs, choices)
  else:
    score = METRICS[metric](extracted, refs)
  score = float(min(max(score, 0.0), 1.0))
  return ItemScore(score=score, metric=metric, extracted=extracted, fallback=fallback)


# ----------------------------------------------------------------------------------------------
# Confidence intervals
# ----------------------------------------------------------------------------------------------


def bootstrap_ci(scores: Sequence[float], n_resamples: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
  """Percentile-bootstrap (1 - alpha) CI of the mean; the same seed gives the same interval."""
  x = np.asarray(scores, dtype=np.float64).reshape(-1)
  n = x.size
  if n == 0:
    return math.nan, math.nan
  if n == 1:
    return float(x[0]), float(x[0])
  rng = np.random.default_rng(seed)
  # Resample in chunks so a 45k-item eval does not materialise a 1000 x 45k index matrix at once.
  chunk = max(1, min(n_resamples, 4_000_000 // n))
  means = np.empty(n_resamples, dtype=np.float64)
  for start in range(0, n_resamples, chunk):
    stop = min(start + chunk, n_resamples)
    idx = rng.integers(0, n, size=(stop - start, n))
    means[start:stop] = x[idx].mean(axis=1)
  lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
  return float(lo), float(hi)
