"""Hand-computed cases for `jaxprune.metrics` (answer extraction, per-benchmark metrics, bootstrap CI)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxprune import metrics as M

# ---------------------------------------------------------------------------------------------
# extract_answer
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("", ""),
    ("   \n  ", ""),
    ("The value is \\boxed{42}.", "42"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
    ("first \\boxed{7} then \\boxed{ {a}{b} } done", "{a}{b}"),  # last boxed wins
    ("\\boxed{\\text{B}}", "B"),  # a text wrapper is peeled off
    ("Answer: 12\n\\boxed{13}", "13"),  # boxed beats an Answer: line
    ("Let me think.\nAnswer: Paris\nHope that helps!", "Paris"),  # Answer: line beats last line
    ("answer: one\nANSWER:  two  \nbye", "two"),  # last Answer: line, case-insensitive
    ("**Answer:** C", "C"),  # markdown decoration around the marker
    ("Some reasoning\n\n  final words  \n\n", "final words"),  # last non-empty line
    ("The answer: is not a line start\nlast", "last"),
    ("\\boxed{unclosed 5", "unclosed 5"),  # truncated generation
])
def test_extract_answer(text: str, expected: str) -> None:
  assert M.extract_answer(text) == expected


def test_extract_answer_keep_all_lines() -> None:
  text = "line one\nline two\n"
  assert M.extract_answer(text) == "line two"
  assert M.extract_answer(text, keep_all_lines=True) == "line one\nline two"


# ---------------------------------------------------------------------------------------------
# normalize_answer
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [
    ("The Two dogs!", "2 dogs"),
    ("  a   Cat  ", "cat"),
    ("1,000", "1000"),
    ("3.5", "3.5"),  # decimal point kept
    ("It is red.", "it is red"),  # sentence period dropped
    ("black-white", "black white"),  # in-word punctuation separates
    ("yes - no", "yes no"),  # spaced punctuation is dropped
    ("dont", "don't"),
    ("Ten", "10"),
    ("none", "0"),
    ("", ""),
])
def test_normalize_answer(raw: str, expected: str) -> None:
  assert M.normalize_answer(raw) == expected


# ---------------------------------------------------------------------------------------------
# relaxed_accuracy (ChartQA)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pred, answers, expected", [
    ("105", ["100"], 1.0),  # exactly 5% off is still within tolerance
    ("105.1", ["100"], 0.0),
    ("95", ["100"], 1.0),
    ("94.9", ["100"], 0.0),
    ("12%", ["12"], 1.0),
    ("12 %", ["12.4"], 1.0),  # 0.4/12.4 = 3.2%
    ("1,234", ["1234"], 1.0),
    ("$1,200", ["1234"], 1.0),  # 34/1234 = 2.8%
    (" -$5 ", ["-5.1"], 1.0),
    ("7.", ["7"], 1.0),  # trailing sentence period
    ("0", ["0"], 1.0),
    ("0.001", ["0"], 0.0),  # zero target needs exact zero
    ("Yes", ["yes"], 1.0),
    ("Paris.", [" paris "], 1.0),
    ("Pariss", ["paris"], 0.0),
    ("ten", ["10"], 0.0),  # strings vs numbers: exact string match only
    ("50", ["10", "49"], 1.0),  # max over references
    ("", ["0"], 0.0),
    ("5", [], 0.0),
    ("5", [""], 0.0),
])
def test_relaxed_accuracy(pred: str, answers: list[str], expected: float) -> None:
  assert M.relaxed_accuracy(pred, answers) == expected


@pytest.mark.parametrize("s, expected", [
    ("12", 12.0), ("-3.5", -3.5), ("12%", 12.0), ("1,234,567.5", 1234567.5), ("$5", 5.0),
    ("$-5", -5.0), ("1e3", 1000.0), ("abc", None), ("1,23", None), ("3 4", None), ("", None),
    ("nan", None), ("inf", None),
])
def test_parse_number(s: str, expected: float | None) -> None:
  assert M.parse_number(s) == expected


# ---------------------------------------------------------------------------------------------
# anls (DocVQA / InfoVQA)
# ---------------------------------------------------------------------------------------------


def test_levenshtein() -> None:
  assert M.levenshtein("kitten", "sitting") == 3
  assert M.levenshtein("", "abc") == 3
  assert M.levenshtein("abc", "") == 3
  assert M.levenshtein("flaw", "lawn") == 2
  assert M.levenshtein("héllo", "hello") == 1


@pytest.mark.parametrize("pred, answers, expected", [
    ("Hello  World", ["hello world"], 1.0),  # case and whitespace normalised
    ("abc", ["abcd"], 0.75),  # NL = 1/4
    ("ab", ["abcd"], 0.0),  # NL = 2/4 = threshold -> 0
    ("abcde", ["abcdefghij"], 0.0),  # NL = 0.5 -> 0
    ("abcdef", ["abcdefghij"], 0.6),  # NL = 0.4
    ("xyz", ["abc", "xyw"], 1 - 1 / 3),  # max over answers
    ("", ["abc"], 0.0),
    ("abc", [], 0.0),
])
def test_anls(pred: str, answers: list[str], expected: float) -> None:
  assert M.anls(pred, answers) == pytest.approx(expected)


def test_anls_threshold_argument() -> None:
  # NL = 0.5: rejected at the default threshold, accepted with a looser one.
  assert M.anls("ab", ["abcd"], threshold=0.5) == 0.0
  assert M.anls("ab", ["abcd"], threshold=0.6) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# VQA / TextVQA soft accuracy
# ---------------------------------------------------------------------------------------------

TEN = ["two", "2", "2", "3", "three", "3", "3", "4", "dog", "a dog"]


@pytest.mark.parametrize("pred, expected", [
    ("4", 1 / 3),  # 1 match
    ("Dog", 2 / 3),  # "dog" and "a dog" -> 2 matches
    ("2", 1.0),  # "two", "2", "2" -> 3 matches
    ("three", 1.0),  # 4 matches, capped at 1
    ("5", 0.0),
    ("", 0.0),
])
def test_vqa_soft_accuracy(pred: str, expected: float) -> None:
  assert M.vqa_soft_accuracy(pred, TEN) == pytest.approx(expected)
  assert M.textvqa_accuracy(pred, TEN) == pytest.approx(expected)


def test_vqa_soft_accuracy_few_references() -> None:
  # Single-reference sets (OCR-VQA): a match is full credit, not capped at 1/3.
  assert M.textvqa_accuracy("The Hobbit", ["the hobbit"]) == 1.0
  assert M.vqa_soft_accuracy("yes", ["yes", "no"]) == pytest.approx(0.5)
  assert M.vqa_soft_accuracy("yes", []) == 0.0


# ---------------------------------------------------------------------------------------------
# counting
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pred, answers, expected", [
    ("3", ["3"], 1.0),
    ("three", ["3"], 1.0),
    ("Three", ["three"], 1.0),
    ("There are 3.", ["3"], 1.0),
    ("3 apples", ["3"], 1.0),
    ("I see two cats and 5 dogs", ["2"], 1.0),  # first number wins
    ("I see two cats and 5 dogs", ["5"], 0.0),
    ("zero", ["0"], 1.0),
    ("4", ["3"], 0.0),
    ("2.5", ["2"], 0.0),  # not an integer
    ("someone", ["1"], 0.0),  # "one" inside a word is not a count
    ("many", ["3"], 0.0),
    ("", ["3"], 0.0),
    ("3", [], 0.0),
])
def test_counting_accuracy(pred: str, answers: list[str], expected: float) -> None:
  assert M.counting_accuracy(pred, answers) == expected


# ---------------------------------------------------------------------------------------------
# box IoU (RefCOCO)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s, expected", [
    ("[0.1, 0.2, 0.3, 0.4]", (0.1, 0.2, 0.3, 0.4)),
    ("(100, 200, 300, 400)", (0.1, 0.2, 0.3, 0.4)),  # 0-1000 scale
    ("100 200 300 400", (0.1, 0.2, 0.3, 0.4)),
    ("The box is [0, 0.5, 1, 1].", (0.0, 0.5, 1.0, 1.0)),
    ("(100,200),(300,400)", (0.1, 0.2, 0.3, 0.4)),  # two-corner form
    ("[1, 2, 3]", None),
    ("no box here", None),
    ("", None),
])
def test_parse_box(s: str, expected: tuple[float, ...] | None) -> None:
  got = M.parse_box(s)
  if expected is None:
    assert got is None
  else:
    assert got == pytest.approx(expected)


@pytest.mark.parametrize("pred, answer, expected", [
    ("[0.0, 0.0, 0.5, 0.5]", "[0.0, 0.0, 0.5, 0.5]", 1.0),
    ("[0.0, 0.0, 0.5, 0.26]", "[0.0, 0.0, 0.5, 0.5]", 1.0),  # IoU 0.52
    ("[0.0, 0.0, 0.5, 0.24]", "[0.0, 0.0, 0.5, 0.5]", 0.0),  # IoU 0.48
    ("[0.0, 0.0, 0.5, 0.25]", "[0.0, 0.0, 0.5, 0.5]", 1.0),  # IoU exactly 0.5
    ("[0, 0, 500, 260]", "[0.0, 0.0, 0.5, 0.5]", 1.0),  # 0-1000 pred vs 0-1 answer
    ("[0, 0, 500, 240]", "[0, 0, 500, 500]", 0.0),  # both 0-1000, IoU 0.48
    ("0,0,500,260", "(0, 0, 500, 500)", 1.0),
    ("[0.6, 0.6, 0.9, 0.9]", "[0.0, 0.0, 0.5, 0.5]", 0.0),  # disjoint
    ("somewhere on the left", "[0.0, 0.0, 0.5, 0.5]", 0.0),
    ("[0.0, 0.0, 0.5, 0.5]", "not a box", 0.0),
])
def test_box_iou_accuracy(pred: str, answer: str, expected: float) -> None:
  assert M.box_iou_accuracy(pred, [answer]) == expected


def test_box_iou_value() -> None:
  assert M.box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
  assert M.box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_point_accuracy() -> None:
  box = "[0.2, 0.2, 0.6, 0.6]"
  assert M.point_accuracy('<point x="40.0" y="30.5" alt="cat">cat</point>', [box]) == 1.0
  assert M.point_accuracy('<point x="70.0" y="30.5">cat</point>', [box]) == 0.0
  assert M.point_accuracy("(400, 300)", [box]) == 1.0  # 0-1000 scale
  assert M.point_accuracy("no point", [box]) == 0.0
  assert M.point_accuracy("cat", ["Cat"]) == 1.0  # non-box reference: exact fallback


# ---------------------------------------------------------------------------------------------
# multiple choice
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pred, expected", [
    ("B", "B"),
    ("b", "B"),
    ("(b)", "B"),
    ("B.", "B"),
    ("[C]", "C"),
    ("Answer: C", "C"),
    ("answer: c", "C"),
    ("The answer is (D)", "D"),
    ("The ANSWER IS (d).", "D"),
    ("The answer is B because (A) is wrong", "B"),
    ("B) Paris", "B"),
    ("c. Paris", "C"),
    ("Option C is right", "C"),
    ("I think it is B.", "B"),
    ("The answer is a cat", None),  # article, not option a
    ("a cat sits on a mat", None),
    ("e.g. the cat", None),
    ("", None),
])
def test_parse_choice_letter(pred: str, expected: str | None) -> None:
  assert M.parse_choice_letter(pred) == expected


def test_parse_choice_letter_respects_choices() -> None:
  choices = ["cat", "dog", "bird"]
  assert M.parse_choice_letter("Dog", choices) == "B"  # option text maps to its letter
  assert M.parse_choice_letter("E", choices) is None  # beyond the three options


@pytest.mark.parametrize("pred, answers, choices, expected", [
    ("B", ["B"], None, 1.0),
    ("(b)", ["(B)"], None, 1.0),
    ("The answer is (D).", ["D"], None, 1.0),
    ("The answer is (D).", ["C"], None, 0.0),
    ("c", ["C"], None, 1.0),
    ("The answer is a cat", ["A"], None, 0.0),
    ("B", ["dog"], ["cat", "dog", "bird"], 1.0),  # text answer mapped through choices
    ("bird", ["C"], ["cat", "dog", "bird"], 1.0),  # text prediction mapped through choices
    ("A", ["dog"], ["cat", "dog", "bird"], 0.0),
    ("dog", ["Dog"], None, 1.0),  # no letter anywhere: exact match
    ("", ["A"], None, 0.0),
    ("A", [], None, 0.0),
])
def test_multiple_choice_accuracy(pred: str, answers: list[str], choices: list[str] | None,
                                  expected: float) -> None:
  assert M.multiple_choice_accuracy(pred, answers, choices) == expected


# ---------------------------------------------------------------------------------------------
# exact match
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pred, answers, expected", [
    ("The Cat.", ["cat"], 1.0),
    ("12.0", ["12"], 1.0),  # numbers compare by value
    ("12.5", ["12"], 0.0),
    ("cat", ["dog", "CAT"], 1.0),
    ("cats", ["cat"], 0.0),
    ("", [""], 0.0),
    ("cat", [], 0.0),
])
def test_exact_match(pred: str, answers: list[str], expected: float) -> None:
  assert M.exact_match(pred, answers) == expected


# ---------------------------------------------------------------------------------------------
# source -> metric, score_item
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source, answers, expected", [
    ("chartqa", None, "relaxed"),
    ("charxiv_reasoning", None, "relaxed"),
    ("docvqa", None, "anls"),
    ("ocr-vqa", None, "textvqa"),
    ("vqa-v2", None, "vqa"),
    ("tallyqa", None, "counting"),
    ("refcoco_plus_testB", None, "box_iou"),
    ("pixmo_points_eval", None, "points"),
    ("cc-ocr-kie", None, "anls"),
    ("ocrbench-v2", None, "anls"),
    ("easyvqa", None, "exact"),
    ("mmmu", ["C"], "multiple_choice"),
    ("mmmu", ["(C)"], "multiple_choice"),
    ("mathvista", ["3.5"], "exact"),  # free-form answer inside a mixed benchmark
    ("mathvista", None, "multiple_choice"),  # per-source default without an answer
    ("DocVQA", None, "anls"),  # case-insensitive
    ("ocr_vqa", None, "textvqa"),  # "-" vs "_" insensitive
    ("some-new-bench", None, "exact"),
])
def test_metric_for_source(source: str, answers: list[str] | None, expected: str) -> None:
  assert M.metric_for_source(source, answers) == expected


def test_metric_for_source_choice_text_answer() -> None:
  assert M.metric_for_source("ai2d", ["dog"], ["cat", "dog"]) == "multiple_choice"
  assert M.metric_for_source("ai2d", ["dog"]) == "exact"


def test_all_sources_have_a_metric() -> None:
  for source, metric in M.METRIC_BY_SOURCE.items():
    assert metric in M.METRICS, source
    assert M.is_known_source(source)
  assert not M.is_known_source("nope")


def test_score_item_unknown_source_falls_back() -> None:
  item = M.score_item("Answer: the cat", ["Cat"], "brand-new-benchmark")
  assert item == M.ItemScore(score=1.0, metric="exact", extracted="the cat", fallback=True)
  assert item.correct


def test_score_item_known_sources() -> None:
  item = M.score_item("Reasoning...\n**Answer:** (c)", ["C"], "mmbench")
  assert (item.score, item.metric, item.extracted, item.fallback) == (1.0, "multiple_choice",
                                                                      "(c)", False)
  item = M.score_item("The bars add up.\nAnswer: 1,234", ["1200"], "chartqa")
  assert item.metric == "relaxed" and item.score == 1.0  # 2.8% off
  item = M.score_item("I count them.\nThere are four birds.", ["4"], "countbench")
  assert item.score == 1.0 and item.extracted == "There are four birds."
  item = M.score_item("\\boxed{[100, 100, 500, 500]}", ["[0.1, 0.1, 0.5, 0.5]"], "refcoco_testA")
  assert item.metric == "box_iou" and item.score == 1.0
  item = M.score_item("abc", ["abcd"], "docvqa")
  assert item.score == pytest.approx(0.75) and item.correct
  item = M.score_item("ab", ["abcd"], "infovqa")
  assert item.score == 0.0 and not item.correct


def test_score_item_full_text_sources_keep_lines() -> None:
  # A transcription is scored whole, not by its last line.
  item = M.score_item("hello\nworld", ["hello\nworld"], "cc-ocr-doc_parsing")
  assert item.extracted == "hello\nworld" and item.score == 1.0
  item = M.score_item("hello\nworld", ["hello world"], "docvqa")
  assert item.extracted == "world" and item.score == 0.0


@pytest.mark.parametrize("source", sorted(M.METRIC_BY_SOURCE) + ["unknown"])
def test_score_item_empty_inputs_never_raise(source: str) -> None:
  for pred, answers in [("", []), ("", ["A"]), ("A", []), ("   ", [""])]:
    item = M.score_item(pred, answers, source)
    assert item.score == 0.0
    assert 0.0 <= item.score <= 1.0


# ---------------------------------------------------------------------------------------------
# bootstrap_ci
# ---------------------------------------------------------------------------------------------


def test_bootstrap_ci_edge_cases() -> None:
  lo, hi = M.bootstrap_ci([])
  assert math.isnan(lo) and math.isnan(hi)
  assert M.bootstrap_ci([0.7]) == (0.7, 0.7)
  assert M.bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)


def test_bootstrap_ci_deterministic_and_contains_mean() -> None:
  rng = np.random.default_rng(123)
  scores = (rng.random(500) < 0.6).astype(float).tolist()
  mean = float(np.mean(scores))
  ci = M.bootstrap_ci(scores, n_resamples=2000, seed=7)
  assert ci == M.bootstrap_ci(scores, n_resamples=2000, seed=7)
  assert ci != M.bootstrap_ci(scores, n_resamples=2000, seed=8)
  lo, hi = ci
  assert lo < mean < hi
  # Binomial standard error is ~0.022 here, so a 95% interval is ~0.086 wide.
  assert 0.06 < hi - lo < 0.11
  # A wider confidence level gives a wider interval.
  lo99, hi99 = M.bootstrap_ci(scores, n_resamples=2000, seed=7, alpha=0.01)
  assert lo99 <= lo and hi <= hi99 and (hi99 - lo99) > (hi - lo)
