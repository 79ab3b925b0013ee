"""Building blocks of `jaxprune.metrics`: extraction, normalisers, edit distances, dispatch, aggregation, CI.

The per-source scores themselves are pinned to DatBench's official harness in test_datbench_official.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxprune import metrics as M

# ---------------------------------------------------------------------------------------------
# erma_utils.extract_final_answer
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("so \\boxed{B} and then \\boxed{ C }", "C"),  # last box wins
    ("\\boxed{\\frac{1}{2}}", "\\frac{1"),  # the reference's box regex stops at the first "}"
    ("<|begin_of_box|> 7 <|end_of_box|> \\boxed{8}", "7"),  # the pipe box outranks \boxed
    ("Reasoning.\nAnswer: Paris\nmore text", "Paris"),  # the last Answer: line, even mid-text
    ("Final Answer: 'blue'", "blue"),  # quotes stripped
    ("<answer>female</answer>", "female"),
    ("thinking\n\n  the   last   line  \n", "the last line"),
    ("Answer: <answer>", ""),  # a placeholder is no answer
    ("", ""),
])
def test_extract_final_answer(text, expected):
  assert M.extract_final_answer(text) == expected


def test_extract_final_answer_non_string():
  assert M.extract_final_answer(None) == ""


# ---------------------------------------------------------------------------------------------
# VQA normalisation and the leave-one-annotator-out average
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [
    ("The Dog.", "dog"),
    ("Two", "2"),
    ("black-and-white", "black and white"),  # "-" inside a word separates
    ("yes !", "yes"),  # next to a space it is dropped
    ("1,000 cats", "1000 cats"),  # a digit comma anywhere drops every mark
    ("dont", "don't"),
    ("3.5", "3.5"),
    ("none", "0"),
])
def test_vqav2_normalize(raw, expected):
  assert M.vqav2_normalize(raw) == expected


def test_textvqa_normalize_differs_on_possessive_and_commas():
  assert M.textvqa_normalize("John's") == "john 's"
  assert M.vqav2_normalize("John's") == "john's"
  assert M.textvqa_normalize("a,b") == "ab"  # commas go before punctuation handling


def test_vqa_leave_one_out_is_the_average_over_annotator_subsets():
  # 3 of 10 annotators agree: 7 subsets keep all 3 (1.0), 3 subsets keep 2 (2/3) -> 0.9, not min(3/3, 1).
  gts = ["a"] * 3 + ["b"] * 7
  assert M.vqa_leave_one_out("a", gts) == pytest.approx(0.9)
  assert M.vqa_leave_one_out("a", ["a"] * 2 + ["b"] * 8) == pytest.approx(0.6)
  assert M.vqa_leave_one_out("a", ["a"]) == 0.0  # a single annotator leaves nobody to agree with
  assert M.vqa_leave_one_out("a", []) == 0.0


# ---------------------------------------------------------------------------------------------
# Edit distances
# ---------------------------------------------------------------------------------------------


def test_levenshtein():
  assert M.levenshtein("kitten", "sitting") == 3
  assert M.levenshtein("", "abc") == 3
  assert M.levenshtein("abc", "") == 3
  assert M.levenshtein("flaw", "lawn") == 2
  assert M.levenshtein("héllo", "hello") == 1


def _tree(label, *kids):
  return M._Tree(label, list(kids))


def test_tree_edit_distance_matches_zss_with_string_costs():
  # Values from zss.simple_distance with `editdistance` installed (label costs = string edit distance).
  acme = _tree("root", _tree("name", _tree("ACME")), _tree("total", _tree("12.00")))
  acmf = _tree("root", _tree("name", _tree("ACMF")))
  assert M.tree_edit_distance(acme, acmf) == 11  # drop total/12.00 (5 + 5) + ACME -> ACMF (1)
  assert M.tree_edit_distance(_tree("root"), acme) == 18  # insert every label: 4 + 4 + 5 + 5
  c = _tree("a", _tree("b", _tree("c"), _tree("d")), _tree("e"))
  d = _tree("a", _tree("c"), _tree("d", _tree("e")))
  assert M.tree_edit_distance(c, d) == 3 and M.tree_edit_distance(d, c) == 3
  assert M.tree_edit_distance(c, c) == 0


# ---------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------


def _item(source, answer, all_answers=None, metadata=None, eval_mode="direct"):
  return {"id": "x", "source": source, "answer": answer, "all_answers": all_answers or [answer],
          "metadata": metadata or {}, "question": "", "eval_mode": eval_mode}


def test_every_official_source_has_a_scorer():
  official = {"pixmo_points_eval", "refcoco_testA", "refcoco_testB", "refcoco_plus_testA", "refcoco_plus_testB",
              "refcoco_m_val", "refcocog_test", "docvqa", "ocr-vqa", "infovqa", "cc-ocr-doc_parsing", "cc-ocr-kie",
              "ocrbench-v2", "countbench", "tallyqa", "text-vqa", "cc-ocr-multi_scene_ocr", "vqa-v2", "ai2d",
              "mmbench", "mmmu", "mmmupro", "realworldqa", "mme-realworld-ocr", "mme-realworld-ad",
              "mme-realworld-mo", "mme-realworld-dt", "chartqa", "chartqapro", "charxiv_descriptive",
              "charxiv_reasoning", "mathvista", "mathverse_reasoning", "mathverse_wo", "mathvision", "logicvista"}
  assert set(M.SCORERS) == official  # datasets_scoring/__init__.py DATASET_SCORING_MODULES


def test_unknown_source_uses_the_harness_fallback():
  s = M.score_item("Answer: Three", _item("pixmo_count", "three"))
  assert s.fallback and s.score == 1.0 and s.metric == "exact_fallback"
  assert M.score_item("3", _item("pixmo_count", "three")).score == 0.0  # no number-word mapping there


def test_metadata_string_and_dict_are_the_same():
  meta = {"bbox": [0.1, 0.2, 0.5, 0.6]}
  as_dict = M.score_item("[0.1, 0.2, 0.5, 0.6]", _item("refcoco_testA", "", metadata=meta))
  as_json = M.score_item("[0.1, 0.2, 0.5, 0.6]", _item("refcoco_testA", "", metadata='{"bbox": [0.1, 0.2, 0.5, 0.6]}'))
  assert as_dict.score == as_json.score == 1.0
  assert as_dict.details["iou"] == pytest.approx(1.0)


def test_continuous_score_and_threshold_are_both_reported():
  s = M.score_item("ab", _item("docvqa", "abcdefgh"))  # ANLS 0.25, kept below the 0.5 threshold
  assert s.score == pytest.approx(0.25) and not s.correct
  assert s.details["anls_thresholded_0_5"] == 0.0 and s.details["threshold_0_5_accuracy"] == 0.0


def test_legacy_call_form_still_scores():
  assert M.score_item("24%", ["0.24"], "chartqa").score == 1.0


def test_easyvqa_is_normalised_exact_match():
  """jaxprune's one-word tasks (their modules hook this scorer in: tests/test_task_registry.py)."""
  assert M.one_word_item("Yes.", _item("easyvqa", "yes")).score == 1.0
  assert M.one_word_item("the circle", _item("easyvqa", "circle")).score == 1.0
  assert M.one_word_item("no", _item("easyvqa", "yes")).score == 0.0


def test_empty_outputs_never_raise():
  for source in sorted(M.SCORERS):
    meta = {k: v for k, v in {"bbox": [0, 0, 1, 1], "is_simple": True, "answer_type": "other",
                              "question_type": "what", "points_target": [], "points_mask": [],
                              "has_target": True}.items()
            if k in M.REQUIRED_METADATA.get(source, ())}
    s = M.score_item("", _item(source, "A", metadata=meta))
    assert 0.0 <= s.score <= 1.0, source


# ---------------------------------------------------------------------------------------------
# Aggregation (evaluator.compute_metrics: capability_accuracy = sum of scores / items)
# ---------------------------------------------------------------------------------------------


def test_summarise_scores_keeps_judge_items_apart():
  recs = [{"score": 0.25, "eval_mode": "direct"}, {"score": 1.0, "eval_mode": "direct"},
          {"score": 0.0, "eval_mode": "judge"}, {"score": 1.0, "eval_mode": "judge"},
          {"score": 0.0, "eval_mode": "direct", "supported": False}]
  s = M.summarise_scores(recs)
  assert s["accuracy"] == pytest.approx(0.625)  # mean continuous score of the two direct, supported items
  assert s["correct_rate"] == pytest.approx(0.5)
  assert (s["n_direct"], s["n_judge"], s["n_judged"], s["n_unsupported"]) == (2, 2, 0, 1)
  assert s["judge_accuracy"] is None and s["accuracy_with_judge"] is None
  recs[2]["judge_score"], recs[3]["judge_score"] = 1.0, 0.0
  s = M.summarise_scores(recs)
  assert s["accuracy"] == pytest.approx(0.625)  # unchanged: judged items never enter `accuracy`
  assert s["judge_accuracy"] == pytest.approx(0.5) and s["n_judged"] == 2
  assert s["accuracy_with_judge"] == pytest.approx((0.25 + 1.0 + 1.0 + 0.0) / 4)


# ---------------------------------------------------------------------------------------------
# Confidence intervals
# ---------------------------------------------------------------------------------------------


def test_bootstrap_ci_edge_cases():
  lo, hi = M.bootstrap_ci([])
  assert math.isnan(lo) and math.isnan(hi)
  assert M.bootstrap_ci([0.7]) == (0.7, 0.7)
  assert M.bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)


def test_bootstrap_ci_deterministic_and_contains_mean():
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
  lo99, hi99 = M.bootstrap_ci(scores, n_resamples=2000, seed=7, alpha=0.01)
  assert lo99 <= lo and hi <= hi99 and (hi99 - lo99) > (hi - lo)
