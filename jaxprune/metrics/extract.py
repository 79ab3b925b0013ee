"""Answer extraction and normalisation shared by the scorers, and the types every scorer uses.

- `extract_final_answer`: the short answer of a (chain-of-thought) output, as the official harness's
  `datbench/datasets_scoring/erma_utils.py` (`extract_final_answer`) reads it;
- string helpers several scorers share (`levenshtein`, ANLS without threshold, whitespace squashing);
- VQA answer normalisation: `vqav2_normalize` (`vqav2.py` / `vqav2_eval`) and `textvqa_normalize`
  (`textvqa_eval.EvalAIAnswerProcessor`), also used by the easy-VQA exact match and RealWorldQA's number words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

Sample = dict[str, Any]  # the dict the harness hands a scorer (`_convert_sample_for_scorer`)
Details = dict[str, Any]


# ----------------------------------------------------------------------------------------------
# Answer extraction (erma_utils.extract_final_answer): box, then last "Answer:" line, then last line
# ----------------------------------------------------------------------------------------------

_PIPE_BOX_RE = re.compile(r"<\|begin_of_box\|>(.*?)<\|end_of_box\|>", re.DOTALL)
_BOXED_FLAT_RE = re.compile(r"\\+boxed\{([^}]+)\}")  # no nested braces: \boxed{\frac{1}{2}} -> "\frac{1"
_ANSWER_LINE_RE = re.compile(r"(?im)^\s*(?:final\s+answer|answer)\s*:\s*(.+)$")
_WRAPPER_TAGS = ("answer", "final_answer", "final")
_PLACEHOLDERS = frozenset({"<answer>", "<final>", "<final answer>", "<final_answer>"})


def _clean_answer(text: str) -> str:
  s = (text or "").strip().strip("\"'` ")
  for tag in _WRAPPER_TAGS:  # <answer>x</answer> -> x
    m = re.match(rf"^<\s*{tag}\s*>\s*(.*?)\s*<\s*/\s*{tag}\s*>$", s.strip(), re.IGNORECASE | re.DOTALL)
    if m:
      s = m.group(1).strip()
      break
  else:
    s = s.strip()
  s = re.sub(r"\s+", " ", s).strip()
  low = s.lower()
  if not s or low in _PLACEHOLDERS or re.fullmatch(r"<\s*answer\s*>", low):
    return ""
  return s


def extract_final_answer(text: Any) -> str:
  """The short answer of a (chain-of-thought) output, as the harness reads it."""
  if not isinstance(text, str):
    return ""
  for rx in (_PIPE_BOX_RE, _BOXED_FLAT_RE, _ANSWER_LINE_RE):
    found = list(rx.finditer(text))
    if found:
      return _clean_answer(found[-1].group(1))
  lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
  return _clean_answer(lines[-1]) if lines else ""


# ----------------------------------------------------------------------------------------------
# String helpers shared by several scorers
# ----------------------------------------------------------------------------------------------


def levenshtein(a: str, b: str) -> int:
  """Unit-cost edit distance; one numpy pass per character of the longer string."""
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
    cur[1:] = np.minimum(prev[1:] + 1, prev[:-1] + cost)
    cur = np.minimum.accumulate(cur - cols) + cols  # insertions chain along the row
    prev = cur
  return int(prev[-1])


def _squash_lower(s: str) -> str:
  return " ".join((s or "").strip().lower().split())


def _anls_raw(pred: str, gt: str) -> float:
  """1 - normalised edit distance, no threshold (docvqa/ocrvqa `_compute_anls_raw`)."""
  if not pred and not gt:
    return 1.0
  if not pred or not gt:
    return 0.0
  return 1.0 - levenshtein(pred, gt) / max(len(pred), len(gt))


def _nonempty(values: Sequence[Any]) -> list[Any]:
  return [v for v in values if v]


# VQA answer normalisation (vqav2_eval / textvqa_eval EvalAIAnswerProcessor). The contraction table is
# the VQA evaluation's own (including its odd entries), written as `written=normalised` pairs.
_VQA_CONTRACTIONS = dict(pair.split("=", 1) for pair in """
aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've
couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've
hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's howd=how'd
howll=how'll hows=how's Id've=I'd've I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd itd've=it'd've
it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't mightnt've=mightn't've
mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've neednt=needn't notve=not've
oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at 'ow'sat='ow's'at shant=shan't
shed've=she'd've she'dve=she'd've she's=she's shouldve=should've shouldnt=shouldn't
shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd somebodyd've=somebody'd've
somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's someoned=someone'd
someoned've=someone'd've someone'dve=someone'd've someonell=someone'll someones=someone's
somethingd=something'd somethingd've=something'd've something'dve=something'd've somethingll=something'll
thats=that's thered=there'd thered've=there'd've there'dve=there'd've therere=there're theres=there's
theyd=they'd theyd've=they'd've they'dve=they'd've theyll=they'll theyre=they're theyve=they've
twas='twas wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've werent=weren't whatll=what'll
whatre=what're whats=what's whatve=what've whens=when's whered=where'd wheres=where's whereve=where've
whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll whos=who's whove=who've whyll=why'll
whyre=why're whys=why's wont=won't wouldve=would've wouldnt=wouldn't wouldnt've=wouldn't've
wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll yall'd've=y'all'd've
y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've you'dve=you'd've youll=you'll
youre=you're youve=you've""".split())
_VQA_DIGITS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
               "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_VQA_ARTICLES = frozenset({"a", "an", "the"})
_VQA_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?",
              "!")
# The reference's "(?!<=\d)" is a (malformed) lookahead, so in effect: a period not followed by a digit.
_VQA_PERIOD_RE = re.compile(r"(?!<=\d)(\.)(?!\d)")
_VQA_DIGIT_COMMA_RE = re.compile(r"(\d)(,)(\d)")           # vqav2_eval.RE_COMMA_STRIP
_TEXTVQA_DIGIT_COMMA_RE = re.compile(r"(?<=\d)(\,)+(?=\d)")  # EvalAIAnswerProcessor.COMMA_STRIP


def _vqa_punctuation(text: str, digit_comma: re.Pattern) -> str:
  out = text
  drop_all = digit_comma.search(text) is not None  # "1,000" anywhere: every mark is dropped, not spaced
  for p in _VQA_PUNCT:
    if drop_all or (p + " ") in text or (" " + p) in text:
      out = out.replace(p, "")
    else:
      out = out.replace(p, " ")
  # The reference passes re.UNICODE (= 32) as `count`: at most 32 periods are stripped.
  return _VQA_PERIOD_RE.sub("", out, count=int(re.UNICODE))


def _vqa_words(text: str) -> str:
  words = [_VQA_DIGITS.get(w, w) for w in text.lower().split() if w not in _VQA_ARTICLES]
  return " ".join(_VQA_CONTRACTIONS.get(w, w) for w in words)


def vqav2_normalize(answer: str) -> str:
  """vqav2.py `_process_answer`."""
  if not answer:
    return ""
  text = answer.lower().strip().replace("\n", " ").replace("\t", " ").strip()
  return _vqa_words(_vqa_punctuation(text, _VQA_DIGIT_COMMA_RE))


def textvqa_normalize(answer: str) -> str:
  """textvqa_eval.EvalAIAnswerProcessor.__call__."""
  text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
  text = text.replace("\n", " ").replace("\t", " ").strip()
  return _vqa_words(_vqa_punctuation(text, _TEXTVQA_DIGIT_COMMA_RE))
