"""Per-item scoring identical to DatBench's official harness, plus the bootstrap CI.

Every DatBench source is scored the way the official harness (github.com/datologyai/DatBench, MIT,
`datbench/evaluator.py` + `datbench/datasets_scoring/*.py`) scores it: the same answer extraction,
normalisation, per-item continuous score and the same ground-truth fields, including the ones the harness
takes from the item's `metadata` JSON (RefCOCO `bbox`; PixMo `points_target`/`points_mask`/`has_target`;
TallyQA `is_simple`; VQAv2 `answer_type`/`question_type`; `options`/`index2ans`/`all_choices` for
multiple choice; MathVision `options_struct`/`correct_choice_letter`; CC-OCR `l2_category`; OCRBench v2
`type`/`eval`; ChartQAPro `question_type`/`year_flags`/`all_answers`; CharXiv `question_type`).
The code is written from reading the harness, not copied; where the harness has a quirk (e.g. AI2D compares
an int option index with the string answer and so never scores, InfoVQA reads only `answer`), it is kept,
because a score that differs from the official one cannot be compared with published numbers.

Vocabulary, as in the harness:
- `score`: the scorer's continuous value in [0, 1] (ANLS, VQA soft accuracy, token F1, ...);
- `correct`: `score >= 0.5` (the harness's `is_correct`).
The eval's result rows call the mean `score` over the direct items **`accuracy`** (the harness's
aggregation, sum of scores / number of items, over the items it scores by rule), and report the mean of
`correct` as `correct_rate`. Items with `eval_mode == "judge"` are scored by an LLM judge (`jaxprune/judge.py`)
when one is given and are otherwise reported on their own, never folded into `accuracy`. The harness's own
`compute_metrics` does fold them in: it scores every answered item with the rule scorer, judge items included,
and its `capability_accuracy` is the mean over all of them; rows report that number as **`harness_accuracy`**
(equal to `accuracy` when a capability has no judge items; None where an item is `supported=False`, see
`summarise_scores`). Sources the harness scores only through a judge (MathVerse) and OCRBench v2's full-page
OCR items (see `ocrbench_v2`) come back with `supported=False`. An empty `all_answers` list reaches the scorers
empty, as in the harness (`jaxprune.data.datbench.row_to_item`): OCRBench v2 then scores against nothing (0).

The package, one module per concern (each says which official file it mirrors):
- `extract`: answer extraction (`extract_final_answer`), VQA normalisers, shared string helpers, `Sample`/`Details`;
- `numeric`: number and percent parsing;
- `vqa`: VQAv2 and TextVQA soft accuracy;
- `documents`: DocVQA, InfoVQA, OCR-VQA (ANLS);
- `ocrbench_v2`: OCRBench v2, every task type the harness scores by rule (KIE F1, TEDS tables, box IoU, ...);
- `cc_ocr`: CC-OCR multi-scene OCR, KIE (tree edit distance) and document parsing;
- `grounding`: RefCOCO boxes, PixMo points in masks;
- `counting`: CountBench, TallyQA;
- `charts`: ChartQA, ChartQAPro, CharXiv;
- `choice`: the MMMU-style multiple-choice parser, MMBench, MMMU(-Pro), AI2D, RealWorldQA, MME-RealWorld,
  LogicVista;
- `mathqa`: MathVista, MathVision, MathVerse;
- `score`: `SCORERS` (source -> scorer), `check_item`, `scorer_sample`, `score_item`, `summarise_scores`,
  `bootstrap_ci`.
Every name the modules define, underscore-prefixed ones included, is re-exported here, so `jaxprune.metrics.<name>`
reaches what it reached when this was a single module.
"""

# The underscore-prefixed names are re-exported on purpose: tests and callers reach them as `metrics._name`.
from jaxprune.metrics.cc_ocr import (
  _DOC_PREAMBLE,
  _char_tokens,
  _edit_similarity,
  _first_json,
  _halfwidth,
  _kie_f1,
  _kie_norm,
  _kie_pairs,
  _kie_text,
  _kie_tree,
  _strip_fences,
  _table_html,
  _teds_or_edit,
  _Tree,
  score_cc_ocr_doc_parsing,
  score_cc_ocr_kie,
  score_cc_ocr_multi_scene,
  tree_edit_distance,
)
from jaxprune.metrics.charts import (
  _chartqapro_relaxed,
  _chartqapro_single,
  _literal_list,
  _mc_letter_prefix,
  _punct_free,
  _quote_bare_list,
  _sorted_list_items,
  chartqa_relaxed,
  score_chartqa,
  score_chartqapro,
  score_charxiv,
)
from jaxprune.metrics.choice import (
  _LONE_LETTER_RE,
  _RWQA_NUMBERS,
  _alnum_words,
  _best_option_by_overlap,
  _choices_of,
  _letter_class_match,
  _letters_for,
  _logicvista_letters,
  _mc_from_extraction,
  _mme_letter,
  _realworldqa_letter,
  _score_lettered,
  _words_normalised,
  mmmu_candidate_letter,
  score_ai2d,
  score_logicvista,
  score_mmbench,
  score_mme_realworld,
  score_mmmu,
  score_mmmupro,
  score_realworldqa,
)
from jaxprune.metrics.counting import (
  _ONES,
  _SMALL_NUMBER_WORDS,
  _TALLY_FINAL_PATTERNS,
  _TALLY_SENTENCE_PATTERNS,
  _TALLY_WORDS,
  _TENS,
  _word_or_digits,
  score_countbench,
  score_tallyqa,
  tallyqa_number,
)
from jaxprune.metrics.documents import _anls_package, score_docvqa, score_infovqa, score_ocrvqa
from jaxprune.metrics.extract import (
  _ANSWER_LINE_RE,
  _BOXED_FLAT_RE,
  _PIPE_BOX_RE,
  _PLACEHOLDERS,
  _TEXTVQA_DIGIT_COMMA_RE,
  _VQA_ARTICLES,
  _VQA_CONTRACTIONS,
  _VQA_DIGIT_COMMA_RE,
  _VQA_DIGITS,
  _VQA_PERIOD_RE,
  _VQA_PUNCT,
  _WRAPPER_TAGS,
  Details,
  Sample,
  _anls_raw,
  _clean_answer,
  _nonempty,
  _squash_lower,
  _vqa_punctuation,
  _vqa_words,
  extract_final_answer,
  levenshtein,
  textvqa_normalize,
  vqav2_normalize,
)
from jaxprune.metrics.grounding import (
  _NO_TARGET_PHRASES,
  _PAIR,
  _REFCOCO_THRESHOLDS,
  _clip01,
  _in_mask,
  _pixmo_gt_point,
  _pixmo_gt_points,
  _pixmo_points,
  _pixmo_pred_point,
  _refcoco_box,
  box_iou,
  score_pixmo_points,
  score_refcoco,
)
from jaxprune.metrics.mathqa import (
  _MATHVISION_FLAGS,
  MissingDependencyError,
  _find_math_answer,
  _fix_a_slash_b,
  _fix_fracs,
  _fix_sqrt,
  _key_subresponses,
  _latex2sympy,
  _math_equal,
  _math_value,
  _mathvista_norm,
  _mathvista_open_eval,
  _mathvista_open_parse,
  _strip_math,
  _tuple_values,
  score_mathverse,
  score_mathvision,
  score_mathvista,
)
from jaxprune.metrics.numeric import (
  _align_percent,
  _float_pct,
  _hundredths_ratio,
  _numbers_in,
  _numeric_core,
  _parse_float,
)
from jaxprune.metrics.ocrbench_v2 import (
  _OCRB_KIE,
  _OCRB_STRUCTURED,
  _OCRB_VQA_TYPES,
  OCRBENCH_UNSUPPORTED,
  _box_iou,
  _dict_from_text,
  _field_f1,
  _gt_combinations,
  _last_box,
  _ocrb_cn_vqa,
  _ocrb_contains_or_anls,
  _ocrb_counting,
  _ocrb_kie,
  _ocrb_letters,
  _ocrb_position,
  _ocrb_table,
  _ocrb_vqa,
  _wrap_table,
  score_ocrbench_v2,
  teds,
)
from jaxprune.metrics.score import (
  _MCQ_KEYS,
  _OPTIONAL_METADATA,
  _REFCOCO,
  _RENAMED_METADATA,
  FULL_TEXT_SOURCES,
  REQUIRED_METADATA,
  SCORERS,
  ItemError,
  ItemScore,
  Scorer,
  bootstrap_ci,
  check_item,
  easyvqa_exact,
  item_metadata,
  missing_fields,
  one_word_item,
  score_item,
  scorer_sample,
  summarise_scores,
)
from jaxprune.metrics.vqa import _CURRENCY_SYMBOLS, score_textvqa, score_vqav2, vqa_leave_one_out

__all__ = ["Details", "FULL_TEXT_SOURCES", "ItemError", "ItemScore", "MissingDependencyError", "OCRBENCH_UNSUPPORTED",
           "REQUIRED_METADATA", "SCORERS", "Sample", "Scorer", "bootstrap_ci", "box_iou", "chartqa_relaxed",
           "check_item", "easyvqa_exact", "extract_final_answer", "item_metadata", "levenshtein", "missing_fields",
           "mmmu_candidate_letter", "one_word_item",
           "score_ai2d", "score_cc_ocr_doc_parsing", "score_cc_ocr_kie", "score_cc_ocr_multi_scene", "score_chartqa",
           "score_chartqapro", "score_charxiv", "score_countbench", "score_docvqa", "score_infovqa", "score_item",
           "score_logicvista", "score_mathverse", "score_mathvision", "score_mathvista", "score_mmbench",
           "score_mme_realworld", "score_mmmu", "score_mmmupro", "score_ocrbench_v2", "score_ocrvqa",
           "score_pixmo_points", "score_realworldqa", "score_refcoco", "score_tallyqa", "score_textvqa", "score_vqav2",
           "scorer_sample", "summarise_scores", "tallyqa_number", "teds", "textvqa_normalize", "tree_edit_distance",
           "vqa_leave_one_out", "vqav2_normalize"]
