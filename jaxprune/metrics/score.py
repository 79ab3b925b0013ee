"""Dispatch and aggregation: source -> scorer, the harness's sample conversion, `score_item`, `check_item`,
`summarise_scores` and `bootstrap_ci`.

Mirrors `datbench/evaluator.py` (`_convert_sample_for_scorer`, the exact-match fallback of `compute_metrics`,
`capability_accuracy`) and `datbench/datasets_scoring/__init__.py` (`DATASET_SCORING_MODULES`, here `SCORERS`).
Also the one-word exact match of jaxprune's own tasks (easy-VQA, scenes), which their task modules hook in.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxprune.metrics.cc_ocr import score_cc_ocr_doc_parsing, score_cc_ocr_kie, score_cc_ocr_multi_scene
from jaxprune.metrics.charts import score_chartqa, score_chartqapro, score_charxiv
from jaxprune.metrics.choice import (
  score_ai2d,
  score_logicvista,
  score_mmbench,
  score_mme_realworld,
  score_mmmu,
  score_mmmupro,
  score_realworldqa,
)
from jaxprune.metrics.counting import score_countbench, score_tallyqa
from jaxprune.metrics.documents import score_docvqa, score_infovqa, score_ocrvqa
from jaxprune.metrics.extract import Details, Sample, extract_final_answer, vqav2_normalize
from jaxprune.metrics.grounding import score_pixmo_points, score_refcoco
from jaxprune.metrics.mathqa import score_mathverse, score_mathvision, score_mathvista
from jaxprune.metrics.ocrbench_v2 import score_ocrbench_v2
from jaxprune.metrics.vqa import score_textvqa, score_vqav2

# ----------------------------------------------------------------------------------------------
# Dispatch: source -> scorer, metadata the harness requires, the harness's sample conversion
# ----------------------------------------------------------------------------------------------

Scorer = Callable[[Sample, Any], Details]
_REFCOCO = ("refcoco_testA", "refcoco_testB", "refcoco_plus_testA", "refcoco_plus_testB", "refcoco_m_val",
            "refcocog_test")
SCORERS: dict[str, Scorer] = {
    "pixmo_points_eval": score_pixmo_points, **{s: score_refcoco for s in _REFCOCO},
    "docvqa": score_docvqa, "ocr-vqa": score_ocrvqa, "infovqa": score_infovqa,
    "cc-ocr-doc_parsing": score_cc_ocr_doc_parsing, "cc-ocr-kie": score_cc_ocr_kie,
    "ocrbench-v2": score_ocrbench_v2,
    "countbench": score_countbench, "tallyqa": score_tallyqa,
    "text-vqa": score_textvqa, "cc-ocr-multi_scene_ocr": score_cc_ocr_multi_scene,
    "vqa-v2": score_vqav2, "ai2d": score_ai2d, "mmbench": score_mmbench, "mmmu": score_mmmu,
    "mmmupro": score_mmmupro,
    "realworldqa": score_realworldqa, **{f"mme-realworld-{s}": score_mme_realworld for s in ("ocr", "ad", "mo", "dt")},
    "chartqa": score_chartqa, "chartqapro": score_chartqapro, "charxiv_descriptive": score_charxiv,
    "charxiv_reasoning": score_charxiv,
    "mathvista": score_mathvista, "mathverse_reasoning": score_mathverse, "mathverse_wo": score_mathverse,
    "mathvision": score_mathvision, "logicvista": score_logicvista,
}

# metadata keys the harness raises on when absent (evaluator._convert_sample_for_scorer)
REQUIRED_METADATA: dict[str, tuple[str, ...]] = {
    "tallyqa": ("is_simple",), "vqa-v2": ("answer_type", "question_type"),
    **{s: ("bbox",) for s in _REFCOCO},
    "pixmo_points_eval": ("points_target", "points_mask", "has_target"),
}
_MCQ_KEYS = ("options", "index2ans", "all_choices")
# metadata key -> scorer key, per source, copied when present
_OPTIONAL_METADATA: dict[str, dict[str, str]] = {
    "mathvision": {"options": "options", "options_struct": "options_struct",
                   "correct_choice_letter": "correct_choice_letter"},
    "logicvista": {"options": "options"},
    **{s: {"l2_category": "l2_category"} for s in ("cc-ocr-doc_parsing", "cc-ocr-kie", "cc-ocr-multi_scene_ocr")},
    "ocrbench-v2": {k: k for k in ("type", "eval", "bbox", "bbox_list", "content")},
    "chartqapro": {"question_type": "question_type", "year_flags": "year_flags", "is_multi_turn": "is_multi_turn"},
    **{s: {"question_type": "question_type"} for s in ("charxiv_descriptive", "charxiv_reasoning")},
}
_RENAMED_METADATA = {"pixmo_points_eval": {"points_target": "points", "points_mask": "masks",
                                           "has_target": "has_target"}}
# Benchmarks whose answer is a whole transcription (scored on the raw output, not an extracted line).
FULL_TEXT_SOURCES = frozenset({"cc-ocr-doc_parsing", "cc-ocr-kie", "cc-ocr-multi_scene_ocr"})


class ItemError(ValueError):
  """An item lacks a field its scorer needs (one line: item id and field)."""


def item_metadata(item: Mapping[str, Any]) -> dict[str, Any]:
  """The item's metadata as a dict (DatBench stores it as a JSON string)."""
  meta = item.get("metadata")
  if meta is None or meta == "":
    return {}
  if isinstance(meta, str):
    try:
      meta = json.loads(meta)
    except ValueError:
      raise ItemError(f"item {item.get('id', '?')}: metadata is not valid JSON") from None
  if not isinstance(meta, Mapping):
    raise ItemError(f"item {item.get('id', '?')}: metadata is a {type(meta).__name__}, not a JSON object")
  return dict(meta)


def missing_fields(item: Mapping[str, Any]) -> list[str]:
  """`metadata.<key>` names the harness requires for this item's source and the item lacks."""
  meta = item_metadata(item)
  return [f"metadata.{k}" for k in REQUIRED_METADATA.get(item.get("source", ""), ()) if k not in meta]


def check_item(item: Mapping[str, Any]) -> None:
  """Raises `ItemError` naming the item and the field when a required field is missing."""
  missing = missing_fields(item)
  if missing:
    raise ItemError(f"item {item.get('id', '?')} ({item.get('source', '?')}): missing required field "
                    f"{', '.join(missing)}")


def scorer_sample(item: Mapping[str, Any]) -> Sample:
  """The dict the harness hands a scorer (evaluator `_convert_sample_for_scorer`)."""
  check_item(item)
  source = item.get("source", "")
  meta = item_metadata(item)
  answer = item.get("answer", "")
  all_answers = list(item.get("all_answers") or [])
  sample: Sample = {"question_id": item.get("id"), "question": item.get("question", ""), "answer": answer,
                    "all_answers": all_answers}
  sample.update({k: meta[k] for k in _MCQ_KEYS if k in meta})
  for key in REQUIRED_METADATA.get(source, ()):
    sample[_RENAMED_METADATA.get(source, {}).get(key, key)] = meta[key]
  for src_key, dst_key in _OPTIONAL_METADATA.get(source, {}).items():
    if src_key in meta:
      sample[dst_key] = meta[src_key]
  if source == "ocrbench-v2":
    sample["answers"] = all_answers
  if source == "chartqapro":
    meta_answers = meta.get("all_answers")
    sample["all_answers"] = (meta_answers if isinstance(meta_answers, list) and meta_answers
                             else all_answers or [answer])
  return sample


@dataclasses.dataclass(frozen=True)
class ItemScore:
  """One scored prediction.

  score: the scorer's continuous value; correct: score >= 0.5 (the harness's `is_correct`);
  fallback: the source is unknown to the harness and was scored by its exact-match fallback;
  supported: False where the harness's rule is not reproduced or it has none (then `score` means nothing).
  """

  score: float
  metric: str
  extracted: str
  fallback: bool
  supported: bool = True
  details: dict = dataclasses.field(default_factory=dict, compare=False)

  @property
  def correct(self) -> bool:
    return self.score >= 0.5


def score_item(prediction: str, item: Mapping[str, Any] | Sequence[str], source: str | None = None,
               choices: Sequence[str] | None = None) -> ItemScore:
  """Scores `prediction` for `item` (a loaded record: answer, all_answers, source, metadata, ...) the way
  the harness does. The old call form `score_item(pred, answers, source, choices)` still works."""
  if not isinstance(item, Mapping):  # legacy (answers, source, choices) call
    answers = [item] if isinstance(item, str) else list(item or [])
    item = {"id": "?", "answer": answers[0] if answers else "", "all_answers": answers, "source": source or "",
            "metadata": {"options": list(choices)} if choices else {}}
  prediction = prediction or ""
  src = item.get("source", "")
  scorer = SCORERS.get(src)
  if scorer is None:
    # evaluator.compute_metrics fallback: lowercase equality of the extracted answer and `answer`.
    extracted = extract_final_answer(prediction)
    ok = extracted.strip().lower() == str(item.get("answer", "")).strip().lower()
    return ItemScore(float(ok), "exact_fallback", extracted, True)
  details = scorer(scorer_sample(item), prediction)
  supported = bool(details.get("supported", True))
  extracted = prediction.strip() if src in FULL_TEXT_SOURCES else extract_final_answer(prediction)
  return ItemScore(float(details.get("score", 0.0)), scorer.__name__.removeprefix("score_"), extracted, False,
                   supported, details)


# ----------------------------------------------------------------------------------------------
# easy-VQA (jaxprune's own task, not DatBench): normalised exact match
# ----------------------------------------------------------------------------------------------


def easyvqa_exact(prediction: str, item: Mapping[str, Any]) -> float:
  """VQA-normalised equality with any reference (easy-VQA's one-word answers)."""
  p = vqav2_normalize(extract_final_answer(prediction))
  refs = [r for r in (item.get("all_answers") or [item.get("answer", "")]) if r]
  return float(bool(p) and any(vqav2_normalize(r) == p for r in refs))


def one_word_item(prediction: str, item: Mapping[str, Any]) -> ItemScore:
  """The scorer of jaxprune's own one-word-answer tasks (easy-VQA, scenes: their modules' `score_item` hook)."""
  prediction = prediction or ""
  return ItemScore(easyvqa_exact(prediction, item), "exact", prediction.strip(), False)


# ----------------------------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------------------------


def summarise_scores(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """Capability summary as the harness computes it, over records with `score`, `correct`, `eval_mode`,
  `supported` and, for judged items, `judge_score`.

  accuracy = mean score over direct, supported items; correct_rate = share of those with score >= 0.5; judge
  items: judge_accuracy over the judged ones, never mixed into `accuracy`; accuracy_with_judge = mean over
  direct + judged items.

  harness_accuracy = the number the official harness's `compute_metrics` reports as `capability_accuracy`: it
  scores *every* answered item with its rule scorer, judge items included (their judge verdicts are not read
  there), and divides by all of them. None when an item is one the harness cannot score that way here
  (`supported=False`: MathVerse, whose rule scorer raises in the harness, and OCRBench v2's full-page OCR,
  whose metric is not reproduced), since any number would not be the harness's.
  """
  direct = [r for r in records if r.get("eval_mode") != "judge" and r.get("supported", True)]
  judge = [r for r in records if r.get("eval_mode") == "judge"]
  judged = [r for r in judge if r.get("judge_score") is not None]
  unsupported = [r for r in records if r.get("eval_mode") != "judge" and not r.get("supported", True)]
  mean = lambda xs: float(np.mean(xs)) if xs else None
  combined = [r["score"] for r in direct] + [r["judge_score"] for r in judged]
  return {
      "accuracy": mean([r["score"] for r in direct]),
      "correct_rate": mean([float(r["score"] >= 0.5) for r in direct]),
      "n_direct": len(direct), "n_judge": len(judge), "n_judged": len(judged), "n_unsupported": len(unsupported),
      "judge_accuracy": mean([r["judge_score"] for r in judged]),
      "accuracy_with_judge": mean(combined) if judged else None,
      "harness_accuracy": None if any(not r.get("supported", True) for r in records)
      else mean([r["score"] for r in records]),
  }


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
