"""Math: MathVista, MathVision and MathVerse.

Mirrors `datbench/datasets_scoring/mathvista.py` (free-form branch), `mathvision.py` + `mathvision_utils.py`
(lmms-eval's MathVision rules, comparing LaTeX values through latex2sympy2 as the harness does;
without it MathVision scoring raises `MissingDependencyError`) and `mathverse.py` (judge only: no
rule-based score). Named `mathqa`, not `math`, so that it never shadows the standard library module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from jaxprune.metrics.extract import Details, Sample, extract_final_answer
from jaxprune.metrics.numeric import _numbers_in, _parse_float

# ----------------------------------------------------------------------------------------------
# MathVista
# ----------------------------------------------------------------------------------------------


# MathVista: the harness never passes `question_type`, so every item takes the free-form path.
def _mathvista_norm(s: str) -> list[Any]:
  """mathvista `_normalize_str`: a number -> [round(value, 2)]; a string -> lowercase (padded if 1 char)."""
  s = s.strip()
  if _parse_float(s.replace(",", "")) is not None:
    return [round(float(s.replace(",", "")), 2)]
  s = s.lower()
  return [" " + s, s + " "] if len(s) == 1 else [s]


def _key_subresponses(response: str) -> list[str]:
  """The shortest tail after an indicator word ("so ", "is ", ...) in each sentence (MMMU heuristic)."""
  response = response.strip().strip(".").lower()
  parts = re.split(r"\.\s(?=[A-Z])|\n", response)
  indicators = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result "]
  keys = []
  for i, part in enumerate(parts):
    if i == len(parts) - 1:
      indicators.append("=")
    shortest = None
    for ind in indicators:
      if ind in part:
        tail = part.split(ind)[-1].strip()
        if not shortest or len(tail) < len(shortest):
          shortest = tail
    if shortest and shortest.strip() not in (":", ",", ".", "!", "?", ";", "'"):
      keys.append(shortest)
  return keys or [response]


def _mathvista_open_parse(output: str) -> list[Any]:
  short = extract_final_answer(output)
  keys = [short] if short else _key_subresponses(output)
  preds: list[Any] = list(keys)
  for k in keys:
    preds.extend(_numbers_in(k))
  normed = []
  for p in preds:
    normed.extend(_mathvista_norm(p))
  return list(dict.fromkeys(normed))  # set semantics; order does not affect the verdict


def _mathvista_open_eval(gold: Any, preds: Sequence[Any]) -> bool:
  golds = []
  for g in (gold if isinstance(gold, list) else [gold]):
    golds.extend(_mathvista_norm(g))
  for p in preds:
    if isinstance(p, str):
      if any(isinstance(g, str) and g in p for g in golds):
        return True
    elif p in golds:
      return True
  return False


def score_mathvista(sample: Sample, output: str) -> Details:
  """mathvista.py `score_sample`, free-form branch: the normalised extracted answer (a rounded number or
  a lowercase string) contains / equals a normalised reference."""
  gold = sample.get("answer")
  extracted = extract_final_answer(str(output)).strip()
  parsed = _mathvista_norm(extracted) if extracted else _mathvista_open_parse(output)
  return {"score": float(_mathvista_open_eval(gold, parsed)), "parsed_response": parsed}


# ----------------------------------------------------------------------------------------------
# MathVision (mathvision_utils: lmms-eval's MathVision rules)
# ----------------------------------------------------------------------------------------------


class MissingDependencyError(ImportError):
  """A scorer needs a package that is not installed (one line: the package and how to install it)."""


def _latex2sympy() -> Callable[[str], Any]:
  """latex2sympy2's parser, imported lazily so that only MathVision scoring needs it."""
  try:
    from latex2sympy2 import latex2sympy
  except ImportError:
    raise MissingDependencyError("MathVision scoring needs latex2sympy2, as DatBench's harness does: "
                                 "pip install latex2sympy2==1.9.1") from None
  return latex2sympy


def _math_value(expr: str) -> Any:
  """round(eval(str(latex2sympy(expr))), 2), the harness's rule. The sympy expression is printed and the
  text evaluated as Python, so only plain arithmetic survives (1/2, 2**3); anything naming a symbol or a
  sympy function (pi, sqrt(2), x) raises, and the comparison fails, as in the harness. The namespace is
  empty: the harness evaluates in its module's, whose names no sympy printout uses."""
  return round(eval(str(_latex2sympy()(expr)), {}), 2)


def _tuple_values(s: str) -> str:
  """"(a, b)" / "[a, b]" with each element evaluated and rounded; unchanged on any failure."""
  if len(s) < 2 or s[0] + s[-1] not in ("()", "[]"):
    return s
  parts = s[1:-1].split(",")
  if len(parts) <= 1:
    return s
  try:
    vals = [str(_math_value(p)) if "infty" not in p and p not in ("a", "-a") else p for p in parts]
  except Exception:  # the reference swallows every evaluation error here
    return s
  return f"{s[0]}{','.join(vals)}{s[-1]}"


def _math_equal(answer: str, gold: str) -> bool:
  """mathvision_utils `is_equal`."""
  a, g = answer.lower(), gold.lower()
  if not a.replace(" ", "") or not g.replace(" ", ""):
    return False
  if g.strip() == a.strip():
    return True
  a, g = _tuple_values(a), _tuple_values(g)
  if g == a:
    return True
  try:
    return _math_value(g) == _math_value(a)
  except Exception:
    return False


def _fix_sqrt(s: str) -> str:
  pieces = s.split("\\sqrt")
  out = pieces[0]
  for p in pieces[1:]:
    out += ("\\sqrt{" + p[0] + "}" + p[1:]) if p and p[0] != "{" else "\\sqrt" + p
  return out


def _fix_fracs(s: str) -> str:
  pieces = s.split("\\frac")
  out = pieces[0]
  for p in pieces[1:]:
    out += "\\frac"
    if p and p[0] == "{":
      out += p
    elif len(p) < 2:
      return s
    elif p[1] != "{":
      out += "{" + p[0] + "}{" + p[1] + "}" + p[2:]
    else:
      out += "{" + p[0] + "}" + p[1:]
  return out


def _fix_a_slash_b(s: str) -> str:
  parts = s.split("/")
  if len(parts) != 2:
    return s
  try:
    a, b = int(parts[0]), int(parts[1])
  except ValueError:
    return s
  return "\\frac{" + str(a) + "}{" + str(b) + "}" if s == f"{a}/{b}" else s


def _strip_math(s: str) -> str:
  """mathvision_utils `_strip_string` (the MATH dataset's answer normaliser)."""
  for old, new in (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"),
                   ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", ""), ("$", "")):
    s = s.replace(old, new)
  s = s.split("\\text{ ")[0]
  s = s.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
  if not s:
    return s
  if s[0] == ".":
    s = "0" + s
  if len(s.split("=")) == 2:
    s = s.split("=")[-1]
  if len(s.split("\\approx")) == 2:
    s = s.split("\\approx")[-1]
  if "sqrt" in s:
    s = _fix_sqrt(s)
  s = s.replace(" ", "")
  if "sqrt" in s:
    s = _fix_fracs(s)
  if s == "0.5":
    s = "\\frac{1}{2}"
  return _fix_a_slash_b(s)


def _find_math_answer(s: str) -> str:
  s = s.lower().replace("{}", "")
  boxed = re.findall(r"\\+boxed\{(.*)\}", s, flags=re.S)  # greedy: to the last brace
  ans = boxed[-1] if boxed else s
  if "}" in ans and ("{" not in ans or ans.find("}") < ans.find("{")):
    ans = ans.split("}")[0]
  ans = ans.split("=")[-1].split("\\approx")[-1]
  for old, new in ((" ", ""), ("\\,", ""), ("∞", "\\infty"), ("+\\infty", "\\infty"), ("\\\\", "\\"),
                   ("\n", ""), ("\\text", ""), ("\\mbox", ""), ("bmatrix", "pmatrix"), ("\\left", ""),
                   ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("{m}^3", ""), ("m^3", ""),
                   ("{units}", ""), ("units", ""), ("{km}", ""), ("km", "")):
    ans = ans.replace(old, new)
  return _strip_math(ans)


_MATHVISION_FLAGS = ("the final answer is", "the answer is", "the correct answer is", "the answer should be")


def score_mathvision(sample: Sample, output: str) -> Details:
  """mathvision.py `score_sample` -> mathvision_utils `mathvision_process_results`."""
  _latex2sympy()  # fail with one clear line up front, not inside the comparisons that swallow errors
  pairs = sample.get("options_struct")
  if not pairs:
    pairs = [{"label": chr(ord("A") + i), "text": str(o).strip() or chr(ord("A") + i)}
             for i, o in enumerate(sample.get("options") or [])]
  gold = str(sample.get("correct_choice_letter") or sample.get("answer") or "").strip()
  options = [p["text"] for p in pairs]
  gold_value = ""
  if options and len(gold) == 1 and 0 <= ord(gold) - ord("A") < len(options):
    gold_value = options[ord(gold) - ord("A")]
  ans = str(output).strip()
  for c in "ABCDE":
    if (ans.endswith(f" {c}.") or ans.endswith(f" ({c}).") or ans.startswith(f"{c}\n")
        or ans.startswith(f"({c})\n") or ans.startswith(f"({c}) {c}\n")):
      ans = c
  tail = ans.split("is ")[-1].rstrip(".")
  if _parse_float(tail) is not None:
    ans = tail
  if "\\boxed{" not in ans and "\\\\boxed{" not in ans:
    for flag in _MATHVISION_FLAGS:
      for f in (flag, flag.replace("the", "The")):
        before = ans
        ans = ans.split(f)[-1].strip()
        if f in before:
          ans = ans.split("\n")[0].split(". ")[0]
  elif ans.count("\\\\boxed{") > 1:
    ans = "\\\\boxed{" + ans.split("\\\\boxed{")[-1]
  elif ans.count("\\boxed{") > 1:
    ans = "\\boxed{" + ans.split("\\boxed{")[-1]
  ans = _find_math_answer(ans)
  for c in "abcde":
    ans = ans.replace(f"({c})", c)
  for c in "abcde":
    ans = ans.replace("{" + c + "}", c)
  ans = ans.rstrip(".").lstrip(":").strip()
  ok = _math_equal(gold, ans) or _math_equal(gold_value, ans)
  return {"score": float(ok), "normalized_prediction": ans}


# ----------------------------------------------------------------------------------------------
# MathVerse
# ----------------------------------------------------------------------------------------------


def score_mathverse(sample: Sample, output: str) -> Details:
  """mathverse.py: the harness has no rule-based scorer (LLM judge only)."""
  return {"score": 0.0, "supported": False}
