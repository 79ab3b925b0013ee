"""DatBench scores equal to the official harness's, on 211 hand-made (prediction, item) cases.

Each group names the file and function of the official harness (github.com/datologyai/DatBench, MIT,
commit bd2ecaf) its expected scores come from. The expected values were worked out by reading that code and
checked by running it once, outside this repository, on exactly these items (its evaluator's
`_convert_sample_for_scorer` + the source's `score_sample`); nothing here imports it. Items carry their
ground truth where the real dataset does: RefCOCO boxes, PixMo points/masks, TallyQA and VQAv2 fields and
multiple-choice options in the `metadata` JSON string.

Several rows pin behaviours a description-based metric gets wrong: relaxed accuracy with a percent on one
side and a fraction on the other, list answers in any order, TextVQA currency signs, DocVQA's continuous ANLS
below 0.5, VQA accuracy averaged over the ten leave-one-annotator-out subsets, AI2D's string answer never
equal to the parsed index, InfoVQA reading `answer` only.
"""

from __future__ import annotations

import collections
import json

import pytest

from jaxprune import metrics as M

# PixMo masks: a 3x3 blob at rows/cols 2-4 (MASK_A) and 6-8 (MASK_B) of a 10x10 grid.
MASK_A = [[int(2 <= x <= 4 and 2 <= y <= 4) for x in range(10)] for y in range(10)]
MASK_B = [[int(6 <= x <= 8 and 6 <= y <= 8) for x in range(10)] for y in range(10)]


def _with_masks(metadata: str) -> str:
  meta = json.loads(metadata)
  meta["points_mask"] = [{"MASK_A": MASK_A, "MASK_B": MASK_B}[m] for m in meta["points_mask"]]
  return json.dumps(meta)


# (source, model output, answer, all_answers, metadata JSON, question, expected official score)
CASES = [
    # datbench/datasets_scoring/refcoco.py :: score_sample
    ('refcoco_testA', '[0.1, 0.2, 0.5, 0.6]', '', None, '{"bbox":[0.1,0.2,0.5,0.6]}', '', 1.0),
    ('refcoco_testB', '\\boxed{100, 200, 500, 600}', '', None, '{"bbox":[0.1,0.2,0.5,0.6]}', '', 1.0),
    ('refcoco_plus_testA', '[0.6, 0.6, 0.9, 0.9]', '', None, '{"bbox":[0.1,0.2,0.5,0.6]}', '', 0.0),
    ('refcoco_plus_testB', 'The box is [0.12, 0.22, 0.52, 0.62].', '', None, '{"bbox":[0.1,0.2,0.5,0.6]}', '', 1.0),
    ('refcoco_m_val', 'no box here', '', None, '{"bbox":[0.1,0.2,0.5,0.6]}', '', 0.0),
    ('refcocog_test', '[0.1, 0.2, 0.3, 0.4]', '', None, '{"bbox":[0.1,0.2,0.5,0.6]}', '', 0.0),
    ('refcoco_testA', '[-50, 0, 500, 600]', '', None, '{"bbox":[0.1,0.2,0.5,0.6]}', '', 1.0),
    ('refcoco_testA', '[0.1,0.2,0.5]', '', None, '{"bbox":[0.1,0.2,0.5,0.6]}', '', 0.0),
    ('refcoco_testA', 'coords 0.1 0.2 0.5 0.6', '', None, '{"bbox":[0.1,0.2,0.5,0.6]}', '', 0.0),
    ('refcoco_testB', '\\boxed{0.1, 0.2, 0.45, 0.6} then [0,0,1,1]', '', None, '{"bbox":[0.1,0.2,0.5,0.6]}', '',
     1.0),
    ('refcoco_testB', '[1.2, 0.2, 1.4, 0.6]', '', None, '{"bbox":[0.8,0.1,1.0,0.7]}', '', 0.0),
    # datbench/datasets_scoring/pixmo_points_eval.py :: score_sample
    ('pixmo_points_eval', '(300, 300), (700, 700)', '', None,
     _with_masks('{"points_target":[[30,30],[70,70]],"points_mask":["MASK_A","MASK_B"],"has_target":true}'), '',
     1.0),
    ('pixmo_points_eval', '(300, 300)', '', None,
     _with_masks('{"points_target":[[30,30],[70,70]],"points_mask":["MASK_A","MASK_B"],"has_target":true}'), '',
     0.6666666666666666),
    ('pixmo_points_eval', '\\boxed{300, 300, 950, 950}', '', None,
     _with_masks('{"points_target":[[30,30],[70,70]],"points_mask":["MASK_A","MASK_B"],"has_target":true}'), '',
     0.5),
    ('pixmo_points_eval', '[0.3, 0.3] and [0.9, 0.1]', '', None,
     _with_masks('{"points_target":[[30,30],[70,70]],"points_mask":["MASK_A","MASK_B"],"has_target":true}'), '',
     0.5),
    ('pixmo_points_eval', 'There is no such object.', '', None,
     '{"points_target":[],"points_mask":[],"has_target":false}', '', 1.0),
    ('pixmo_points_eval', '(500, 500)', '', None, '{"points_target":[],"points_mask":[],"has_target":false}', '',
     0.0),
    ('pixmo_points_eval', 'nothing', '', None,
     _with_masks('{"points_target":[[30,30],[70,70]],"points_mask":["MASK_A","MASK_B"],"has_target":true}'), '',
     0.0),
    ('pixmo_points_eval', '310, 320', '', None,
     _with_masks('{"points_target":[{"x":30,"y":30}],"points_mask":["MASK_A"],"has_target":true}'), '', 1.0),
    # datbench/datasets_scoring/countbench.py :: score_sample / _extract_number
    ('countbench', '3', '3', None, '{}', '', 1.0),
    ('countbench', 'There are 4 apples.', '4', None, '{}', '', 1.0),
    ('countbench', '\\boxed{7}', '7', None, '{}', '', 1.0),
    ('countbench', 'seven', '7', None, '{}', '', 1.0),
    ('countbench', 'none', '1', None, '{}', '', 1.0),
    ('countbench', 'Answer: 12', '12', None, '{}', '', 1.0),
    ('countbench', 'I see 2 or 3', '3', None, '{}', '', 1.0),
    ('countbench', 'many', '2', None, '{}', '', 0.0),
    ('countbench', '5', 'five', None, '{}', '', 0.0),
    # datbench/datasets_scoring/tallyqa.py :: score_sample / _extract_number
    ('tallyqa', '2', '2', None, '{"is_simple":true}', '', 1.0),
    ('tallyqa', 'There are three dogs in the image.', '3', None, '{"is_simple":true}', '', 1.0),
    ('tallyqa', 'twenty-one', '21', None, '{"is_simple":true}', '', 1.0),
    ('tallyqa', 'So the answer is five', '5', None, '{"is_simple":true}', '', 1.0),
    ('tallyqa', 'I count 4 birds', '4', None, '{"is_simple":true}', '', 1.0),
    ('tallyqa', 'Final answer: 0', '0', None, '{"is_simple":true}', '', 1.0),
    ('tallyqa', '0123456789012 items', '1', None, '{"is_simple":true}', '', 0.0),
    ('tallyqa', 'maybe eleven.', '11', None, '{"is_simple":true}', '', 1.0),
    ('tallyqa', 'nothing', '0', None, '{"is_simple":true}', '', 0.0),
    ('tallyqa', '3', '4', None, '{"is_simple":true}', '', 0.0),
    # datbench/datasets_scoring/vqav2.py :: score_sample / _compute_vqav2_soft_accuracy
    ('vqa-v2', 'yes', 'yes', ['yes', 'yes', 'no', 'no', 'no', 'no', 'no', 'no', 'no', 'no'],
     '{"answer_type":"yes/no","question_type":"is the"}', '', 0.6),
    ('vqa-v2', 'no', 'no', ['yes', 'yes', 'no', 'no', 'no', 'no', 'no', 'no', 'no', 'no'],
     '{"answer_type":"yes/no","question_type":"is the"}', '', 1.0),
    ('vqa-v2', 'Yes.', 'yes', ['yes', 'yes', 'yes', 'no', 'no', 'no', 'no', 'no', 'no', 'no'],
     '{"answer_type":"yes/no","question_type":"is the"}', '', 0.9),
    ('vqa-v2', 'two', '2', ['2', '2', '2', '2', '3', '3', '3', '3', '3', '3'],
     '{"answer_type":"yes/no","question_type":"is the"}', '', 1.0),
    ('vqa-v2', 'the dog', 'dog', ['dog', 'dog', 'dog', 'dog', 'dog', 'dog', 'dog', 'dog', 'dog', 'dog'],
     '{"answer_type":"yes/no","question_type":"is the"}', '', 1.0),
    ('vqa-v2', 'Answer: red', 'red', ['red', 'red', 'red', 'blue', 'blue', 'blue', 'blue', 'blue', 'blue', 'blue'],
     '{"answer_type":"yes/no","question_type":"is the"}', '', 0.9),
    ('vqa-v2', 'dont know', "don't know",
     ["don't know", "don't know", "don't know", "don't know", "don't know", 'no', 'no', 'no', 'no', 'no'],
     '{"answer_type":"yes/no","question_type":"is the"}', '', 1.0),
    ('vqa-v2', 'black-and-white', 'black and white',
     ['black and white', 'black and white', 'black and white', 'black and white', 'black and white', 'black and white', 'black and white', 'black and white', 'black and white', 'black and white'],
     '{"answer_type":"yes/no","question_type":"is the"}', '', 1.0),
    ('vqa-v2', '1,000', '1000', ['1000', '1000', '1000', '1000', '1000', '1000', '1000', '1000', '1000', '1000'],
     '{"answer_type":"yes/no","question_type":"is the"}', '', 1.0),
    ('vqa-v2', 'cat', 'dog', ['dog', 'dog', 'dog', 'dog', 'dog', 'dog', 'dog', 'dog', 'dog', 'dog'],
     '{"answer_type":"yes/no","question_type":"is the"}', '', 0.0),
    ('vqa-v2', 'yes', 'yes', ['yes'], '{"answer_type":"yes/no","question_type":"is the"}', '', 0.0),
    ('vqa-v2', 'ANSWER: Two dogs', '2 dogs',
     ['2 dogs', '2 dogs', '2 dogs', '2 dogs', '2 dogs', '2 dogs', '2 dogs', '2 dogs', '2 dogs', '2 dogs'],
     '{"answer_type":"yes/no","question_type":"is the"}', '', 1.0),
    ('vqa-v2', 'a. b. c. d.', 'b c d',
     ['b c d', 'b c d', 'b c d', 'b c d', 'b c d', 'b c d', 'b c d', 'b c d', 'b c d', 'b c d'],
     '{"answer_type":"yes/no","question_type":"is the"}', '', 1.0),
    # datbench/datasets_scoring/textvqa.py :: score_sample / _compute_textvqa_accuracy
    ('text-vqa', 'Coca Cola', 'coca cola',
     ['coca cola', 'coca cola', 'coca cola', 'coca cola', 'coca cola', 'coca cola', 'coca cola', 'coke', 'coke', 'coke'],
     '{}', '', 1.0),
    ('text-vqa', 'coke', 'coke',
     ['coca cola', 'coca cola', 'coca cola', 'coca cola', 'coca cola', 'coca cola', 'coca cola', 'coke', 'coke', 'coke'],
     '{}', '', 0.9),
    ('text-vqa', '$5.99', '5.99', ['5.99', '5.99', '5.99', '5.99', '5.99', '5.99', '5.99', '5.99', '5.99', '5.99'],
     '{}', '', 1.0),
    ('text-vqa', '5.99', '$5.99',
     ['$5.99', '$5.99', '$5.99', '$5.99', '$5.99', '$5.99', '$5.99', '$5.99', '$5.99', '$5.99'], '{}', '', 1.0),
    ('text-vqa', '12%', '12',
     ['12', '12', 'twelve', 'twelve', 'twelve', 'twelve', 'twelve', 'twelve', 'twelve', 'twelve'], '{}', '', 1.0),
    ('text-vqa', '€1,200', '1200', ['1200', '1200', '1200', '1200', '1200', '1200', '1200', '1200', '1200', '1200'],
     '{}', '', 1.0),
    ('text-vqa', 'pepsi', 'coca cola',
     ['coca cola', 'coca cola', 'coca cola', 'coca cola', 'coca cola', 'coca cola', 'coca cola', 'coke', 'coke', 'coke'],
     '{}', '', 0.0),
    ('text-vqa', 'stop', 'stop', ['stop', 'stop', 'STOP', 'halt', 'halt', 'halt', 'halt', 'halt', 'halt', 'halt'],
     '{}', '', 0.9),
    ('text-vqa', "it's", 'its', ['its', 'its', 'its', 'its', 'its', 'its', 'its', 'its', 'its', 'its'], '{}', '',
     0.0),
    ('text-vqa', 'Answer: 3', 'three',
     ['three', 'three', 'three', 'three', 'three', 'three', 'three', 'three', 'three', 'three'], '{}', '', 1.0),
    ('text-vqa', 'Answer: £3', '3', ['3', '3', '3'], '{}', '', 1.0),
    # datbench/datasets_scoring/docvqa.py :: score_sample / _compute_anls_raw
    ('docvqa', '1995', '1995', ['1995', '1996'], '{}', '', 1.0),
    ('docvqa', 'Smith John', 'John Smith', ['John Smith'], '{}', '', 0.0),
    ('docvqa', 'abcdef', 'abcxyz', ['abcxyz'], '{}', '', 0.5),
    ('docvqa', 'ab', 'abcdefgh', ['abcdefgh'], '{}', '', 0.25),
    ('docvqa', '  Hello   World ', 'hello world', ['hello world'], '{}', '', 1.0),
    ('docvqa', '', 'x', ['x'], '{}', '', 0.0),
    ('docvqa', 'Answer: 42 dollars', '42', ['42', '$42'], '{}', '', 0.19999999999999996),
    ('docvqa', 'xyz', 'a', None, '{}', '', 0.0),
    ('docvqa', 'Answer:   ACME  Corp ', 'acme corp', ['acme corp'], '{}', '', 1.0),
    # datbench/datasets_scoring/infovqa.py :: score_sample (anls.anls_score)
    ('infovqa', 'abcdef', 'abcxyz', ['abcxyz', 'abcdef'], '{}', '', 0.0),
    ('infovqa', 'abcdef', 'abcdeg', ['zzz'], '{}', '', 0.8333333333333334),
    ('infovqa', 'ab', 'abcdefgh', ['abcdefgh'], '{}', '', 0.0),
    ('infovqa', 'hello', 'Hello', ['Hello'], '{}', '', 1.0),
    ('infovqa', 'Answer: 15%', '15%', ['15%', '15'], '{}', '', 1.0),
    ('infovqa', '', 'abc', ['abc'], '{}', '', 0.0),
    # datbench/datasets_scoring/ocrvqa.py :: score_sample / _compute_anls_raw
    ('ocr-vqa', 'Harry Potter', 'harry potter', ['harry potter'], '{}', '', 1.0),
    ('ocr-vqa', 'Harry', 'harry potter', ['harry potter'], '{}', '', 0.41666666666666663),
    ('ocr-vqa', 'Yes', 'no', ['no'], '{}', '', 0.0),
    ('ocr-vqa', 'The Cookbook', 'Cookbook', None, '{}', '', 0.6666666666666667),
    # datbench/datasets_scoring/chartqa.py :: score_sample / _relaxed_correctness
    ('chartqa', '24%', '0.24', ['0.24'], '{}', '', 1.0),
    ('chartqa', '0.24', '24%', ['24%'], '{}', '', 1.0),
    ('chartqa', '24', '0.24', ['0.24'], '{}', '', 0.0),
    ('chartqa', '25', '24', ['24'], '{}', '', 1.0),
    ('chartqa', '26', '24', ['24'], '{}', '', 0.0),
    ('chartqa', '1%', '1', ['1'], '{}', '', 1.0),
    ('chartqa', '[A, B]', '[b, a]', ['[b, a]'], '{}', '', 1.0),
    ('chartqa', '[A, C]', '[A, B]', ['[A, B]'], '{}', '', 0.0),
    ('chartqa', '1,200', '1200', ['1200'], '{}', '', 1.0),
    ('chartqa', 'Yes', 'yes', ['yes'], '{}', '', 1.0),
    ('chartqa', '0', '0', ['0'], '{}', '', 1.0),
    ('chartqa', 'Answer: 15.5', '15', ['15'], '{}', '', 1.0),
    ('chartqa', '1e3', '1000', ['1000'], '{}', '', 1.0),
    ('chartqa', 'nan', 'nan', ['nan'], '{}', '', 1.0),
    ('chartqa', 'Dec.', 'dec', ['dec'], '{}', '', 1.0),
    ('chartqa', '0.5%', '50', ['50'], '{}', '', 0.0),
    ('chartqa', '2019', '2018', ['2018', '2019'], '{}', '', 1.0),
    ('chartqa', '<|begin_of_box|>42<|end_of_box|>', '42', ['42'], '{}', '', 1.0),
    ('chartqa', 'reasoning...\n<answer>17</answer>', '17', ['17'], '{}', '', 1.0),
    ('chartqa', 'Final Answer: `blue`', 'blue', ['blue'], '{}', '', 1.0),
    ('chartqa', '\\boxed{\\frac{1}{2}}', '0.5', ['0.5'], '{}', '', 0.0),
    ('chartqa', 'First line\n\n  last line  ', 'last line', ['last line'], '{}', '', 1.0),
    ('chartqa', 'Answer: <answer>', 'x', ['x'], '{}', '', 0.0),
    # datbench/datasets_scoring/chartqapro.py :: score_sample / _relaxed_correctness_chartqapro
    ('chartqapro', '24%', '0.24', ['0.24'], '{"question_type":"Factoid","year_flags":["NO"]}', '', 1.0),
    ('chartqapro', '0.25', '25', ['25'], '{"question_type":"Factoid","year_flags":["NO"]}',
     'What percentage of people?', 1.0),
    ('chartqapro', '2019', '2020', ['2020'], '{"question_type":"Factoid","year_flags":["YES"]}', '', 0.0),
    ('chartqapro', '2019', '2020', ['2020'], '{"question_type":"Factoid","year_flags":["NO"]}', '', 1.0),
    ('chartqapro', '[apple, pear]', '[apple, banana]', ['[apple, banana]'],
     '{"question_type":"Factoid","year_flags":["NO"]}', '', 0.0),
    ('chartqapro', "['apple', 'banana']", '[apple, banana]', ['[apple, banana]'],
     '{"question_type":"Factoid","year_flags":["NO"]}', '', 1.0),
    ('chartqapro', 'b) 20', 'B', ['B'], '{"question_type":"Multi Choice","year_flags":["NO"]}', '', 1.0),
    ('chartqapro', 'True', 'true', ['true'], '{"question_type":"Fact Checking","year_flags":["NO"]}', '', 1.0),
    ('chartqapro', '0', '0', ['0'], '{"question_type":"Factoid","year_flags":["NO"]}', '', 1.0),
    ('chartqapro', '12', '10', ['10'], '{"question_type":"Conversational","year_flags":["NO","NO"]}', '', 0.0),
    ('chartqapro', '10.4', '10', ['10'], '{"question_type":"Factoid"}', '', 1.0),
    ('chartqapro', '5', '5', ['4', '5'],
     '{"question_type":"Conversational","year_flags":["NO","NO"],"is_multi_turn":true}', '', 0.0),
    # datbench/datasets_scoring/charxiv.py :: score_sample
    ('charxiv_descriptive', 'Not Applicable', 'Not applicable', None, '{"question_type":"descriptive"}', '', 1.0),
    ('charxiv_descriptive', '1,000', '1000', None, '{"question_type":"descriptive"}', '', 1.0),
    ('charxiv_descriptive', '5%', '5', None, '{"question_type":"descriptive"}', '', 1.0),
    ('charxiv_descriptive', 'red line', 'red', None, '{"question_type":"descriptive"}', '', 0.0),
    ('charxiv_reasoning', 'the red line', 'red', None, '{"question_type":"reasoning"}', '', 1.0),
    ('charxiv_reasoning', 'blue', 'red', None, '{"question_type":"reasoning"}', '', 0.0),
    ('charxiv_reasoning', '3', '3.0', None, '{}', '', 1.0),
    # datbench/datasets_scoring/ai2d.py :: score_sample
    ('ai2d', 'B', '1', None, '{"options":["a","b","c","d"]}', '', 0.0),
    ('ai2d', 'A', 'A', None, '{}', '', 0.0),
    # datbench/datasets_scoring/mmbench.py :: score_sample / _parse_multi_choice_response
    ('mmbench', 'B', 'B', None, '{"options":["cat","dog","bird","fish"]}', '', 1.0),
    ('mmbench', '(C)', 'C', None, '{"options":["cat","dog","bird","fish"]}', '', 1.0),
    ('mmbench', 'The answer is D.', 'D', None, '{"options":["cat","dog","bird","fish"]}', '', 1.0),
    ('mmbench', 'Answer: a', 'A', None, '{"options":["cat","dog","bird","fish"]}', '', 1.0),
    ('mmbench', 'I think it is a dog', 'B', None, '{"options":["cat","dog","bird","fish"]}', '', 0.0),
    ('mmbench', 'The picture clearly shows a small bird sitting there', 'C', None,
     '{"options":["cat","dog","bird","fish"]}', '', 0.0),
    ('mmbench', 'E', 'E', None, '{"options":["cat","dog","bird","fish"]}', '', 0.0),
    ('mmbench', '', 'A', None, '{"options":["cat","dog","bird","fish"]}', '', 0.0),
    ('mmbench', 'B', 'C', None, '{"options":["cat","dog","bird","fish"]}', '', 0.0),
    ('mmbench', 'B', 'B', None, '{"index2ans":{"A":"x","B":"y"},"all_choices":["A","B"]}', '', 1.0),
    # datbench/datasets_scoring/mmmu.py :: score_sample / _parse_multi_choice_response
    ('mmmu', 'Answer: B', 'B', None, '{"index2ans":{"A":"red","B":"green","C":"blue"},"all_choices":["A","B","C"]}',
     '', 1.0),
    ('mmmu', '(A)', 'A', None, '{"index2ans":{"A":"red","B":"green","C":"blue"},"all_choices":["A","B","C"]}', '',
     1.0),
    ('mmmu', 'I pick C.', 'C', None, '{"index2ans":{"A":"red","B":"green","C":"blue"},"all_choices":["A","B","C"]}',
     '', 1.0),
    ('mmmu', 'It is green obviously, and not anything else', 'B', None,
     '{"index2ans":{"A":"red","B":"green","C":"blue"},"all_choices":["A","B","C"]}', '', 1.0),
    ('mmmu', 'A or B', 'B', None, '{"index2ans":{"A":"red","B":"green","C":"blue"},"all_choices":["A","B","C"]}',
     '', 1.0),
    ('mmmu', 'final answer: c', 'C', None,
     '{"index2ans":{"A":"red","B":"green","C":"blue"},"all_choices":["A","B","C"]}', '', 1.0),
    ('mmmu', 'none', 'A', None, '{"index2ans":{"A":"red","B":"green","C":"blue"},"all_choices":["A","B","C"]}', '',
     0.0),
    # datbench/datasets_scoring/mmmupro.py :: score_sample / _parse_multi_choice_response
    ('mmmupro', '\\boxed{C}', 'C', None, '{"options":"[\'1\', \'2\', \'3\', \'4\']"}', '', 1.0),
    ('mmmupro', 'answer: (b)', 'B', None, '{"options":"[\'1\', \'2\', \'3\', \'4\']"}', '', 1.0),
    ('mmmupro', 'D.', 'D', None, '{"options":"[\'1\', \'2\', \'3\', \'4\']"}', '', 1.0),
    ('mmmupro', 'the answer is 3 which is option C', 'C', None, '{"options":"[\'1\', \'2\', \'3\', \'4\']"}', '',
     1.0),
    # datbench/datasets_scoring/realworldqa.py :: score_sample
    ('realworldqa', 'B', 'B', None, '{}', 'Which way?\nA. left\nB. right\nC. straight', 1.0),
    ('realworldqa', 'right', 'B', None, '{}', 'Which way?\nA. left\nB. right\nC. straight', 1.0),
    ('realworldqa', 'Answer: C', 'C', None, '{}', 'Which way?\nA. left\nB. right\nC. straight', 1.0),
    ('realworldqa', 'The car turns left.', 'A', None, '{}', 'Which way?\nA. left\nB. right\nC. straight', 1.0),
    ('realworldqa', 'two', '2', None, '{}', 'How many?', 1.0),
    ('realworldqa', 'Yes.', 'yes', None, '{}', 'How many?', 1.0),
    ('realworldqa', 'b', 'B', None, '{}', 'Which way?\nA. left\nB. right\nC. straight', 1.0),
    # datbench/datasets_scoring/mme_realworld.py :: score_sample / _extract_letter
    ('mme-realworld-ocr', 'The answer is (B).', 'B', None, '{"options":["(A) 1","(B) 2","(C) 3"]}', '', 1.0),
    ('mme-realworld-ad', 'C', 'C', None, '{"options":["(A) 1","(B) 2","(C) 3"]}', '', 1.0),
    ('mme-realworld-mo', 'a', 'B', None, '{"options":["(A) 1","(B) 2","(C) 3"]}', '', 0.0),
    ('mme-realworld-dt', "I think it's a car", 'A', None, '{"options":["(A) 1","(B) 2","(C) 3"]}', '', 1.0),
    ('mme-realworld-ocr', '3', 'C', None, '{"options":["(A) 1","(B) 2","(C) 3"]}', '', 1.0),
    ('mme-realworld-ad', '', 'A', None, '{"options":["(A) 1","(B) 2","(C) 3"]}', '', 1.0),
    # datbench/datasets_scoring/mathvista.py :: score_sample (free-form branch)
    ('mathvista', '\\boxed{5}', '5', None, '{}', '', 1.0),
    ('mathvista', 'The answer is 3.14', '3.14', None, '{}', '', 0.0),
    ('mathvista', 'Answer: 3.141', '3.14', None, '{}', '', 1.0),
    ('mathvista', '1,000', '1000', None, '{}', '', 1.0),
    ('mathvista', 'Answer: yes', 'Yes', None, '{}', '', 1.0),
    ('mathvista', 'b', 'b', None, '{}', '', 1.0),
    ('mathvista', 'The value is 12 units', '12', None, '{}', '', 0.0),
    ('mathvista', '(B) 7', '7', None, '{}', '', 0.0),
    ('mathvista', '8', '7', None, '{}', '', 0.0),
    # datbench/datasets_scoring/mathvision.py :: score_sample -> evaluation_utils/mathvision_utils.py mathvision_process_results
    ('mathvision', 'The answer is B.', 'B', None, '{"options":["1","2","3","4","5"]}', '', 1.0),
    ('mathvision', '\\boxed{2}', 'B', None, '{"options":["1","2","3","4","5"]}', '', 1.0),
    ('mathvision', '\\boxed{C}', 'C', None, '{"options":["1","2","3","4","5"]}', '', 1.0),
    ('mathvision', 'so the answer is 4', 'D', None, '{"options":["1","2","3","4","5"]}', '', 1.0),
    ('mathvision', '\\boxed{3}', 'A', None, '{"options":["1","2","3","4","5"]}', '', 0.0),
    ('mathvision', 'A\nbecause', 'A', None, '{"options":["1","2","3","4","5"]}', '', 1.0),
    ('mathvision', '\\boxed{12}', '12', None, '{}', '', 1.0),
    ('mathvision', 'x = 7', '7', None, '{}', '', 1.0),
    ('mathvision', 'the answer is 0.5', '0.5', None, '{}', '', 1.0),
    # datbench/datasets_scoring/logicvista.py :: score_sample / _parse_answer_letters
    ('logicvista', 'B', 'B', None, '{}', 'Pick one.\nA. circle\nB. square\nC. triangle\nD. hexagon', 1.0),
    ('logicvista', 'Answer: C', 'C', None, '{}', 'Pick one.\nA. circle\nB. square\nC. triangle\nD. hexagon', 1.0),
    ('logicvista', 'The answer is B', 'B', None, '{}', 'Pick one.\nA. circle\nB. square\nC. triangle\nD. hexagon',
     0.0),
    ('logicvista', 'A, C', 'A, C', None, '{}', 'Pick one.\nA. circle\nB. square\nC. triangle\nD. hexagon', 1.0),
    ('logicvista', 'D', 'A', None, '{}', 'Pick one.\nA. circle\nB. square\nC. triangle\nD. hexagon', 0.0),
    # datbench/datasets_scoring/cc_ocr_multi_scene_ocr.py :: score_sample
    ('cc-ocr-multi_scene_ocr', 'HELLO WORLD', 'hello world', None, '{}', '', 1.0),
    ('cc-ocr-multi_scene_ocr', 'hello', 'hello world', None, '{}', '', 0.6666666666666666),
    ('cc-ocr-multi_scene_ocr', '', '', None, '{}', '', 1.0),
    ('cc-ocr-multi_scene_ocr', 'abc', '', None, '{}', '', 0.0),
    ('cc-ocr-multi_scene_ocr', 'xyz', 'abc', None, '{}', '', 0.0),
    ('cc-ocr-multi_scene_ocr', 'Line1\nLine2', 'line1 line2', None, '{}', '', 1.0),
    # datbench/datasets_scoring/cc_ocr_kie.py :: score_sample / _compute_f1 / _compute_nted
    ('cc-ocr-kie', '{"name": "ACME", "total": "12.00"}', '{"name": "ACME", "total": "12.00"}', None, '{}', '',
     0.999999750000125),
    ('cc-ocr-kie', '```json\n{"name": "ACME"}\n```', '{"name": "ACME", "total": "12.00"}', None, '{}', '',
     0.5555553333334815),
    ('cc-ocr-kie', '{"name": "ACMF", "total": "12.00"}', '{"name": "ACME", "total": "12.00"}', None, '{}', '',
     0.7222220972222847),
    ('cc-ocr-kie', 'no json', '{"a": "1"}', None, '{}', '', 0.0),
    ('cc-ocr-kie', '{"items": [{"n": "x"}, {"n": "y"}]}', '{"items": [{"n": "x"}, {"n": "z"}]}', None, '{}', '',
     0.7299998750000625),
    # datbench/datasets_scoring/cc_ocr_doc_parsing.py :: score_sample / _score_doc|_score_formula|_score_molecular|_score_table
    ('cc-ocr-doc_parsing', '\\documentclass{article}\\begin{document}Hello world\\end{document}', 'Hello  world',
     None, '{"l2_category":"doc"}', '', 1.0),
    ('cc-ocr-doc_parsing', 'x^2 + y', 'x^2+y^2', None, '{"l2_category":"formula"}', '', 0.7142857142857143),
    ('cc-ocr-doc_parsing', '<smiles>CCO</smiles>', 'CCO', None, '{"l2_category":"molecular"}', '', 1.0),
    ('cc-ocr-doc_parsing', 'abc', 'abd', None, '{}', '', 0.6666666666666667),
    ('cc-ocr-doc_parsing', '<table><tr><td>1</td></tr></table>', '<table><tr><td>1</td><td>2</td></tr></table>',
     None, '{"l2_category":"table"}', '', 0.75),
    # datbench/datasets_scoring/ocrbench_v2.py :: score_sample
    ('ocrbench-v2', 'The text says STOP here', 'STOP', ['STOP'], '{"type":"text recognition en"}', '', 1.0),
    ('ocrbench-v2', 'stop', 'STOP', ['STOP'], '{"type":"text recognition en","eval":"case sensitive"}', '', 0.0),
    ('ocrbench-v2', '(B)', 'B', ['B'], '{"type":"science QA en","eval":"multiple choice"}', '', 1.0),
    ('ocrbench-v2', 'the quick brown fox jumped', 'the quick brown fox jumps', ['the quick brown fox jumps'],
     '{"type":"cognition VQA en"}', '', 0.9230769230769231),
    ('ocrbench-v2', 'x ^ 2', 'x^2', ['x^2'], '{"type":"formula recognition en"}', '', 1.0),
    ('ocrbench-v2', 'There are 9', '10', ['10'], '{"type":"text counting en","eval":"regression"}', '', 0.9),
    ('ocrbench-v2', 'There are 10', '10', ['10'], '{"type":"text counting en"}', '', 1.0),
    ('ocrbench-v2', '北京 大学', '北京大学', ['北京大学'], '{"type":"cognition VQA cn"}', '', 1.0),
    ('ocrbench-v2', '\\text{ab}c', 'abc', ['\\text{ab}c'], '{"type":"formula recognition cn"}', '', 1.0),
    ('ocrbench-v2', '42', '42', ['42'], '{"type":"math QA en"}', '', 1.0),
    ('ocrbench-v2', 'hello', 'hello', ['hello'], '{}', '', 1.0),
    # datbench/evaluator.py :: DatBenchEvaluator.compute_metrics (no scoring module: exact match)
    ('pixmo_count', 'Answer: Three', 'three', None, '{}', '', 1.0),
    ('some_new_set', '4', '5', None, '{}', '', 0.0),
]


def _item(i, source, answer, all_answers, metadata, question):
  return {"id": f"case{i}", "source": source, "answer": answer, "all_answers": all_answers or [answer],
          "metadata": metadata, "question": question, "eval_mode": "direct"}


@pytest.mark.parametrize("i", range(len(CASES)))
def test_official_score(i):
  source, output, answer, all_answers, metadata, question, expected = CASES[i]
  scored = M.score_item(output, _item(i, source, answer, all_answers, metadata, question))
  assert abs(scored.score - expected) <= 1e-6, (source, output, scored.score, expected)
  assert scored.correct == (expected >= 0.5)  # the harness's is_correct


def test_battery_covers_every_official_source():
  sources = {c[0] for c in CASES}
  scored_by_rules = set(M.SCORERS) - {"mathverse_reasoning", "mathverse_wo"}  # judge-only in the harness
  assert scored_by_rules <= sources, sorted(scored_by_rules - sources)
  assert len(CASES) >= 150
  # Not a degenerate battery: every score level occurs, and both verdicts occur for most sources.
  counts = collections.Counter(c[-1] >= 0.5 for c in CASES)
  assert counts[True] > 30 and counts[False] > 30
  assert sum(0 < c[-1] < 1 for c in CASES) >= 15


def test_metadata_ground_truth_is_required():
  # The harness raises when RefCOCO has no metadata bbox; so does jaxprune, naming the item and the field.
  item = _item(0, "refcoco_testA", "", None, "{}", "")
  with pytest.raises(M.ItemError, match=r"item case0 \(refcoco_testA\): missing required field metadata.bbox"):
    M.score_item("[0, 0, 1, 1]", item)
  with pytest.raises(M.ItemError, match="metadata.answer_type, metadata.question_type"):
    M.score_item("yes", _item(1, "vqa-v2", "yes", ["yes"], "{}", ""))
  with pytest.raises(M.ItemError, match="metadata.points_target, metadata.points_mask, metadata.has_target"):
    M.score_item("(1, 2)", _item(2, "pixmo_points_eval", "", None, "{}", ""))
  with pytest.raises(M.ItemError, match="metadata.is_simple"):
    M.score_item("2", _item(3, "tallyqa", "2", None, "{}", ""))
  with pytest.raises(M.ItemError, match="not valid JSON"):
    M.score_item("2", _item(4, "countbench", "2", None, "{oops", ""))


def test_judge_only_and_unreproduced_types_are_flagged():
  assert not M.score_item("x", _item(0, "mathverse_wo", "x", None, "{}", "")).supported
  item = _item(1, "ocrbench-v2", "a", ["a"], json.dumps({"type": "full-page OCR en"}), "")  # NLTK-scored
  assert not M.score_item("a", item).supported
  assert M.score_item("x", _item(2, "unknown_set", "x", None, "{}", "")).fallback
