"""OCRBench v2's structured task types and MathVision's LaTeX answers, scored as DatBench's harness does.

Same form as `test_datbench_official.py`: each group names the official file and function
(github.com/datologyai/DatBench, MIT, commit bd2ecaf) its expected scores were derived from by reading the code,
and every expected value was checked by running that code once, outside this repository, on exactly these items
(the evaluator's `_convert_sample_for_scorer` + the source's `score_sample`, with the harness's dependencies and
`distance` installed so that its TEDS module imports). Nothing here imports the official code.

Worked values, for the fractional ones: TEDS = 1 - tree edit distance / elements under the larger table, where
renaming a cell costs its content's normalised token edit distance (one wrong character of "ab" -> 0.5 over
3 elements: 1 - 0.5/3); KIE F1 counts a wrong value as one false positive and one false negative; a position
answer is 0.5 * answer score + 0.5 * IoU.
"""

from __future__ import annotations

import collections
import json
import sys

import pytest

from jaxprune import metrics as M

HTML_Q = "Convert the table in the image to HTML."
GT_ROW = "<table><tr><td>a</td><td>b</td></tr></table>"
GT_2X2 = "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>"
RECEIPT = "{'name': 'ACME', 'total': '12.50'}"
BOX = [100, 100, 200, 200]


def _ocrb(ttype: str, **extra) -> str:
  return json.dumps({"type": ttype, **extra})


KIE_EN, KIE_MAP, KIE_CN = "key information extraction en", "key information mapping en", "key information extraction cn"
TABLE_EN, TABLE_CN = _ocrb("table parsing en"), _ocrb("table parsing cn")
VQA_POS, GROUNDING = _ocrb("VQA with position en", bbox=BOX), _ocrb("text grounding en", bbox=BOX)
SPOTTING, HANDWRITTEN = _ocrb("text spotting en"), _ocrb("handwritten answer extraction cn")
OPTIONS_12 = '{"options":["1","2"]}'
OPTIONS_FRAC = json.dumps({"options": ["\\frac{1}{2}", "\\frac{1}{3}"]})

# (source, model output, answer, all_answers, metadata JSON, question, expected official score)
CASES = [
    # datbench/datasets_scoring/ocrbench_v2.py :: _kie_f1_evaluation (+ _extract_dict_from_text,
    # _generate_combinations, _compute_kie_f1)
    ('ocrbench-v2', '{"name": "ACME", "total": "12.50"}', RECEIPT, [RECEIPT], _ocrb(KIE_EN), '', 1.0),
    ('ocrbench-v2', '```json\n{"name": "ACME", "total": "13.00"}\n```', RECEIPT, [RECEIPT], _ocrb(KIE_EN), '', 0.5),
    ('ocrbench-v2', '{"name": "acme"}', RECEIPT, [RECEIPT], _ocrb(KIE_EN), '', 0.6666666666666666),
    ('ocrbench-v2', '{"name": "ACME", "total": "12.50", "date": "2020"}', RECEIPT, [RECEIPT], _ocrb(KIE_EN), '', 0.8),
    ('ocrbench-v2', '{"company": "ACME  corp\\n"}', "{'company': 'Acme Corp'}", ["{'company': 'Acme Corp'}"],
     _ocrb(KIE_EN), '', 1.0),
    ('ocrbench-v2', '{"total": "$12.50", "name": "ACME"}', "{'total': ['12.50', '$12.50'], 'name': 'ACME'}",
     ["{'total': ['12.50', '$12.50'], 'name': 'ACME'}"], _ocrb(KIE_EN), '', 1.0),
    ('ocrbench-v2', 'name: ACME\ntotal: 12.50', RECEIPT, [RECEIPT], _ocrb(KIE_EN), '', 1.0),
    ('ocrbench-v2', 'total: 1,250.00', "{'total': '1,250.00'}", ["{'total': '1,250.00'}"], _ocrb(KIE_EN), '', 0.0),
    ('ocrbench-v2', 'I cannot read the receipt.', RECEIPT, [RECEIPT], _ocrb(KIE_EN), '', 0.0),
    ('ocrbench-v2', '{"name": "ACME"}', 'not a dict', ['not a dict'], _ocrb(KIE_EN), '', 0.0),
    ('ocrbench-v2', "{'name': 'ACME', 'total': 12.5}", RECEIPT, [RECEIPT], _ocrb(KIE_MAP), '', 0.5),
    ('ocrbench-v2', '{"公司": "北京 大学", "日期": "2021年"}', "{'公司': '北京大学', '日期': '2020年'}",
     ["{'公司': '北京大学', '日期': '2020年'}"], _ocrb(KIE_CN), '', 0.5),
    ('ocrbench-v2', '{"a": "", "b": "x"}', "{'a': '', 'b': 'x'}", ["{'a': '', 'b': 'x'}"], _ocrb(KIE_EN), '', 1.0),
    ('ocrbench-v2', '{"b": "x"}', "{'a': '', 'b': 'x'}", ["{'a': '', 'b': 'x'}"], _ocrb(KIE_EN), '',
     0.6666666666666666),
    ('ocrbench-v2', '{"a": "x"}', "{'a': []}", ["{'a': []}"], _ocrb(KIE_EN), '', 0.0),
    # ocrbench_v2.py :: _chart_parsing_evaluation / _doc_parsing_evaluation (the KIE F1 above)
    ('ocrbench-v2', '```python\n{"2019": "10", "2020": "12"}\n```', "{'2019': '10', '2020': '12'}",
     ["{'2019': '10', '2020': '12'}"], _ocrb("chart parsing en"), '', 1.0),
    ('ocrbench-v2', '{"2019": "10", "2020": "15", "2021": "9"}', "{'2019': '10', '2020': '12'}",
     ["{'2019': '10', '2020': '12'}"], _ocrb("chart parsing en"), '', 0.4),
    ('ocrbench-v2', '# Title\nbody text', '# Title\nbody text', ['# Title\nbody text'], _ocrb("document parsing en"),
     '', 0.0),
    ('ocrbench-v2', '{"标题": "通知"}', "{'标题': '通知'}", ["{'标题': '通知'}"], _ocrb("document parsing cn"), '', 1.0),
    # ocrbench_v2.py :: _table_parsing_evaluation + evaluation_utils/ocrbench_v2_teds.py :: TEDS.evaluate
    ('ocrbench-v2', GT_ROW, GT_ROW, [GT_ROW], TABLE_EN, HTML_Q, 1.0),
    ('ocrbench-v2', '<table><tr><td>ax</td><td>c</td></tr></table>', '', ['<table><tr><td>ab</td><td>c</td></tr></table>'],
     TABLE_EN, HTML_Q, 0.8333333333333334),
    ('ocrbench-v2', GT_ROW, GT_2X2, [GT_2X2], TABLE_EN, HTML_Q, 0.5),
    ('ocrbench-v2', '<table><tr><td>a</td><td></td></tr></table>', '', ['<table><tr><td colspan="2">a</td></tr></table>'],
     TABLE_EN, HTML_Q, 0.33333333333333337),
    ('ocrbench-v2', 'Here is the table:\n<table><tr><td>a</td><td>b</td></tr></table>\nDone.', GT_ROW, [GT_ROW],
     TABLE_EN, HTML_Q, 1.0),
    ('ocrbench-v2', '| a | b |', GT_ROW, [GT_ROW], TABLE_EN, HTML_Q, 0.0),
    ('ocrbench-v2', '| a | b |', 'a | b', ['a | b'], TABLE_EN, 'Convert the table to Markdown.', 1.0),
    ('ocrbench-v2', '<table><tr><td>a</td><td>b</td></tr>', GT_ROW, [GT_ROW], TABLE_EN, HTML_Q, 1.0),
    ('ocrbench-v2', '<table><tr><td><b>a</b></td></tr></table>', '', ['<table><tr><td>a</td></tr></table>'], TABLE_EN,
     HTML_Q, 0.7777777777777778),
    ('ocrbench-v2', '<table><tr><td>a</td><td>b</td></tr></table>', '', ['<table><tr><th>a</th><th>b</th></tr></table>'],
     TABLE_EN, HTML_Q, 0.33333333333333337),
    ('ocrbench-v2', '<html><body><table><tr><td>a</td><td>b</td></tr></table></body></html>', GT_ROW, [GT_ROW],
     TABLE_EN, HTML_Q, 1.0),
    ('ocrbench-v2', '<table></table>', '<table></table>', ['<table></table>'], TABLE_EN, HTML_Q, 0.0),
    ('ocrbench-v2', '<table><tr><td>北京</td><td>上海</td></tr></table>', '',
     ['<table><tr><td>北京</td><td>上海市</td></tr></table>'], TABLE_CN, '请将表格转换为HTML格式。', 0.8888888888888888),
    # ocrbench_v2.py :: _vqa_with_position_evaluation (+ _try_parse_as_dict, _extract_coordinates, _calculate_iou)
    ('ocrbench-v2', '{"answer": "STOP", "bbox": [100, 100, 200, 200]}', 'stop', ['stop'], VQA_POS, '', 1.0),
    ('ocrbench-v2', '{"answer": "STOP", "bbox": [150, 100, 250, 200]}', 'stop', ['stop'], VQA_POS, '',
     0.6666666666666666),
    ('ocrbench-v2', '{"answer": "GO", "bbox": [100, 100, 200, 200]}', 'stop', ['stop'], VQA_POS, '', 0.5),
    ('ocrbench-v2', 'The word STOP is at [100, 100, 200, 200].', 'stop', ['stop'], VQA_POS, '', 1.0),
    ('ocrbench-v2', 'STOP (100, 100, 2000, 200)', 'stop', ['stop'], VQA_POS, '', 0.5),
    ('ocrbench-v2', '[0, 0, 10, 10] then [100, 100, 200, 200]', 'go', ['go'], VQA_POS, '', 0.5),
    ('ocrbench-v2', "{'answer': 'STOP', 'bbox': '(100, 100, 200, 200)'}", 'stop', ['stop'], VQA_POS, '', 1.0),
    ('ocrbench-v2', '{"answer": "STOP", "bbox": [100.9, 100.9, 200.9, 200.9]}', 'stop', ['stop'], VQA_POS, '', 1.0),
    ('ocrbench-v2', '{"answer": 42, "bbox": [100, 100, 200, 150]}', '42', ['42'], VQA_POS, '', 0.75),
    ('ocrbench-v2', '{"answer": "STOP", "bbox": [100, 100, 200, 200]}', 'stop', ['stop'], _ocrb("VQA with position en"),
     '', 0.5),
    ('ocrbench-v2', '[100, 100, 200, 200]', '[100, 100, 200, 200]', ['[100, 100, 200, 200]'], GROUNDING, '', 1.0),
    ('ocrbench-v2', '[110, 100, 200, 200]', '[100, 100, 200, 200]', ['[100, 100, 200, 200]'], GROUNDING, '', 0.45),
    # ocrbench_v2.py :: _text_spotting_evaluation (the VQA rule on the raw output)
    ('ocrbench-v2', 'STOP [10, 20, 30, 40]', 'stop', ['stop'], SPOTTING, '', 1.0),
    ('ocrbench-v2', 'Answer: foo\nSTOP', 'stop', ['stop'], SPOTTING, '', 1.0),
    ('ocrbench-v2', 'YIELD [10, 20, 30, 40]', 'stop', ['stop'], SPOTTING, '', 0.0),
    ('ocrbench-v2', 'the quick brown fox jumped over', '', ['the quick brown fox jumps over'], SPOTTING, '',
     0.935483870967742),
    # ocrbench_v2.py :: _handwritten_extraction_evaluation (no "简答": _cn_vqa_evaluation)
    ('ocrbench-v2', '答案是 a', 'A', ['A'], HANDWRITTEN, '请识别学生的答案', 1.0),
    ('ocrbench-v2', '13', '12', ['12'], HANDWRITTEN, '请识别学生的答案', 0.0),
    # datbench/datasets_scoring/mathvision.py :: score_sample -> evaluation_utils/mathvision_utils.py
    # mathvision_process_results / is_equal / eval_tuple (round(eval(str(latex2sympy(x))), 2))
    ('mathvision', '\\boxed{\\frac{1}{2}}', '0.5', None, '{}', '', 1.0),
    ('mathvision', '\\boxed{2^{3}}', '8', None, '{}', '', 1.0),
    ('mathvision', '\\boxed{\\sqrt{2}}', '1.41', None, '{}', '', 0.0),
    ('mathvision', '\\boxed{3 \\times 4}', '12', None, '{}', '', 1.0),
    ('mathvision', '\\boxed{(\\frac{1}{2}, 2)}', '(0.5,2)', None, '{}', '', 1.0),
    ('mathvision', '\\boxed{\\frac{3}{4}}', '0.75', None, '{}', '', 1.0),
    ('mathvision', '\\boxed{\\pi}', '3.14', None, '{}', '', 0.0),
    ('mathvision', '\\boxed{1.005}', '1', None, '{}', '', 1.0),
    ('mathvision', 'the answer is \\frac{4}{2}', '2', None, '{}', '', 1.0),
    ('mathvision', '\\boxed{0.50}', 'A', None, OPTIONS_FRAC, '', 1.0),
    ('mathvision', '\\boxed{2.001}', 'B', None, OPTIONS_12, '', 1.0),
    ('mathvision', '\\boxed{x+1}', '1+x', None, '{}', '', 0.0),
    ('mathvision', '\\boxed{\\dfrac{6}{4}}', '1.5', None, '{}', '', 1.0),
    ('mathvision', '\\boxed{2\\sqrt{2}}', '2.83', None, '{}', '', 0.0),
    ('mathvision', '\\boxed{-\\frac{1}{4}}', '-0.25', None, '{}', '', 1.0),
    ('mathvision', '\\boxed{0.33}', '\\frac{1}{3}', None, '{}', '', 1.0),
    ('mathvision', '\\boxed{0.3}', '\\frac{1}{3}', None, '{}', '', 0.0),
]


def _item(i, source, answer, all_answers, metadata, question):
  return {"id": f"case{i}", "source": source, "answer": answer, "all_answers": all_answers or [answer],
          "metadata": metadata, "question": question, "eval_mode": "direct"}


@pytest.mark.parametrize("i", range(len(CASES)))
def test_official_score(i):
  source, output, answer, all_answers, metadata, question, expected = CASES[i]
  scored = M.score_item(output, _item(i, source, answer, all_answers, metadata, question))
  assert scored.supported, (source, output)
  assert abs(scored.score - expected) <= 1e-6, (source, output, scored.score, expected)
  assert scored.correct == (expected >= 0.5)  # the harness's is_correct


def test_battery_covers_every_structured_type_and_is_not_degenerate():
  types = {json.loads(c[4])["type"] for c in CASES if c[0] == "ocrbench-v2"}
  assert set(M._OCRB_STRUCTURED) | {"handwritten answer extraction cn"} <= types
  assert len(CASES) >= 40
  counts = collections.Counter(c[-1] >= 0.5 for c in CASES)
  assert counts[True] > 15 and counts[False] > 10
  assert sum(0 < c[-1] < 1 for c in CASES) >= 12


@pytest.mark.parametrize("ttype,question", [("full-page OCR en", "Read all the text."),
                                            ("full-page OCR cn", "请识别图中所有文字。"),
                                            ("handwritten answer extraction cn", "请识别简答题的答案")])
def test_nltk_scored_types_stay_unsupported(ttype, question):
  # BLEU + METEOR (NLTK's WordNet, not obtainable offline) + F-measure + edit distance: not reproduced.
  scored = M.score_item("some text", _item(0, "ocrbench-v2", "some text", None, _ocrb(ttype), question))
  assert not scored.supported
  summary = M.summarise_scores([{"score": scored.score, "eval_mode": "direct", "supported": scored.supported}])
  assert summary["n_unsupported"] == 1 and summary["accuracy"] is None


def test_teds_is_one_only_for_the_same_table():
  doc = lambda table: f"<html><body>{table}</body></html>"
  assert M.teds(doc(GT_2X2), doc(GT_2X2)) == 1.0
  assert M.teds(doc(GT_ROW), doc(GT_2X2)) == M.teds(doc(GT_2X2), doc(GT_ROW)) == 0.5
  assert M.teds(doc("<p>no table</p>"), doc(GT_ROW)) == 0.0


def test_mathvision_without_latex2sympy2_says_so(monkeypatch):
  monkeypatch.setitem(sys.modules, "latex2sympy2", None)  # makes `import latex2sympy2` raise ImportError
  with pytest.raises(M.MissingDependencyError, match=r"needs latex2sympy2.*pip install latex2sympy2==1\.9\.1"):
    M.score_item("\\boxed{2^{3}}", _item(0, "mathvision", "8", None, "{}", ""))
