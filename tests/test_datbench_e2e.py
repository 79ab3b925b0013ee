"""DatBench end to end: a local parquet copy in the real schema for all 9 capabilities, the loader, the
scorer the eval loop uses, and `python -m jaxprune.eval` on a tiny random LLaVA (without and with --judge).

A random model cannot draw a correct box, so the grounding check scores recorded predictions through
`metrics.score_item` (what the eval loop calls) on the items the loader returns; the CLI runs show the same
path runs on every capability and that judge items are kept out of `accuracy` unless a judge scores them.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxprune import eval as jeval
from jaxprune import metrics
from jaxprune.data import load_task
from jaxprune.data.datbench import CAPABILITIES, check_items, row_extras, source_files

BOX = [0.1, 0.2, 0.5, 0.6]
JUDGE_RUBRIC = ("You are grading an answer to a math question. Decide whether the response is correct.\n"
                "Respond with exactly two lines:\nReason: <one sentence>\nanswer: <true|false>")


def _png(seed: int) -> bytes:
  from PIL import Image
  buf = io.BytesIO()
  Image.fromarray(np.random.RandomState(seed).randint(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
  return buf.getvalue()


def _row(cap: str, i: int, source: str, answer: str, *, all_answers=None, metadata=None, eval_mode="direct",
         question=None) -> dict:
  """One row exactly as DatBench's parquet stores it (metadata is a JSON string)."""
  return {
      "id": f"{cap}_{i}", "image": {"bytes": _png(i), "path": None},
      "question": question or f"{source} question {i}?",
      "prompt_format": {"prefix": "", "suffix": "\nAnswer briefly."},
      "answer": answer, "all_answers": all_answers if all_answers is not None else [answer],
      "eval_mode": eval_mode, "judge_prompt": JUDGE_RUBRIC if eval_mode == "judge" else "",
      "is_circular": False, "metadata": json.dumps(metadata or {}),
      "source_info": {"dataset": source, "original_idx": str(i)},
      "eval_metrics": {"discrimination": 0.3, "is_frontier": False},
  }


MASK = [[1 if 2 <= x <= 5 and 2 <= y <= 5 else 0 for x in range(10)] for y in range(10)]
VQA_META = {"answer_type": "number", "question_type": "how many"}


def _rows() -> dict[str, list[dict]]:
  return {
      "grounding": [
          _row("grounding", 0, "refcoco_testA", "", metadata={"bbox": BOX}),
          _row("grounding", 1, "refcocog_test", "", metadata={"bbox": [0.5, 0.5, 0.9, 0.9]}),
          _row("grounding", 2, "pixmo_points_eval", "",
               metadata={"points_target": [[35, 35]], "points_mask": [MASK], "has_target": True}),
      ],
      "chart": [
          _row("chart", 0, "chartqa", "0.24", all_answers=["0.24"]),
          _row("chart", 1, "chartqapro", "[apple, banana]",
               metadata={"question_type": "Factoid", "year_flags": ["NO"], "is_multi_turn": False}),
          _row("chart", 2, "charxiv_reasoning", "red", metadata={"question_type": "reasoning"}, eval_mode="judge"),
      ],
      "counting": [
          _row("counting", 0, "countbench", "3"),
          _row("counting", 1, "tallyqa", "2", metadata={"is_simple": True}),
          _row("counting", 2, "vqa-v2", "2", all_answers=["2"] * 6 + ["3"] * 4, metadata=VQA_META),
      ],
      "document": [
          _row("document", 0, "docvqa", "john smith", all_answers=["john smith", "j. smith"]),
          _row("document", 1, "infovqa", "15%"),
          _row("document", 2, "ocr-vqa", "Cookbook"),
      ],
      "general": [
          _row("general", 0, "vqa-v2", "yes", all_answers=["yes"] * 10,
               metadata={"answer_type": "yes/no", "question_type": "is the"}),
          _row("general", 1, "mmbench", "B", metadata={"options": ["cat", "dog", "bird"]}),
          _row("general", 2, "mmmu", "A", metadata={"index2ans": {"A": "red", "B": "blue"}, "all_choices": ["A", "B"]}),
      ],
      "math": [
          _row("math", 0, "mathvista", "5"),
          _row("math", 1, "mathvision", "B", metadata={"options": ["1", "2", "3"]}),
          _row("math", 2, "mathverse_wo", "12", eval_mode="judge"),
          _row("math", 3, "mathverse_reasoning", "4", eval_mode="judge"),
      ],
      "scene": [
          _row("scene", 0, "text-vqa", "5.99", all_answers=["5.99"] * 10),
          _row("scene", 1, "cc-ocr-multi_scene_ocr", "hello world", metadata={"l2_category": "scene"}),
      ],
      "spatial": [
          _row("spatial", 0, "realworldqa", "B", question="Which way?\nA. left\nB. right"),
          _row("spatial", 1, "mme-realworld-ocr", "C", metadata={"options": ["(A) 1", "(B) 2", "(C) 3"]}),
      ],
      "table": [
          _row("table", 0, "ocrbench-v2", "42", all_answers=["42"], metadata={"type": "math QA en"}),
          _row("table", 1, "cc-ocr-kie", '{"total": "12.00"}', metadata={"l2_category": "kie"}),
      ],
  }


def _write(root: Path, rows: dict[str, list[dict]]) -> Path:
  import pyarrow as pa
  import pyarrow.parquet as pq
  for cap, cap_rows in rows.items():
    (root / cap).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(cap_rows), root / cap / "test-00000-of-00001.parquet")
  return root


@pytest.fixture(scope="module")
def datbench_copy(tmp_path_factory):
  """(local DatBench copy with every capability, tfds data dir)."""
  return _write(tmp_path_factory.mktemp("datbench_real"), _rows()), tmp_path_factory.mktemp("datbench_tfds")


def test_fixture_covers_every_capability():
  assert set(_rows()) == set(CAPABILITIES)


def test_grounding_scores_a_correct_box_1_and_a_wrong_box_0(datbench_copy):
  src, data_dir = datbench_copy
  items = list(load_task("datbench:grounding", data_dir=data_dir, datbench_dir=src))
  check_items(items, "datbench:grounding")
  refcoco = items[0]
  assert refcoco["source"] == "refcoco_testA" and refcoco["metadata"]["bbox"] == BOX  # ground truth kept
  assert refcoco["answer"] == "" and refcoco["all_answers"] == [""]  # nothing to match in answer fields
  recorded = {  # recorded model outputs -> official score
      "The object is at [0.1, 0.2, 0.5, 0.6].": 1.0,
      "\\boxed{100, 200, 500, 600}": 1.0,  # 0-1000 grid
      "[0.6, 0.6, 0.9, 0.9]": 0.0,
      "[0.1, 0.2, 0.3, 0.4]": 0.0,  # IoU 0.25 < 0.5
      "I cannot tell.": 0.0,
  }
  for output, expected in recorded.items():
    scored = metrics.score_item(output, refcoco)
    assert scored.score == expected and scored.correct == bool(expected), output
  assert metrics.score_item("(350, 350)", items[2]).score == 1.0  # PixMo point inside its mask
  assert metrics.score_item("(900, 900)", items[2]).score == 0.0


def test_every_capability_loads_and_scores(datbench_copy):
  src, data_dir = datbench_copy
  for cap, rows in _rows().items():
    items = list(load_task(f"datbench:{cap}", data_dir=data_dir, datbench_dir=src))
    check_items(items, f"datbench:{cap}")
    assert [it["id"] for it in items] == [r["id"] for r in rows]
    for it, row in zip(items, rows):
      assert it["metadata"] == json.loads(row["metadata"]) and it["source"] == row["source_info"]["dataset"]
      ref = row["answer"] or "x"
      assert 0.0 <= metrics.score_item(ref, it).score <= 1.0
    extras = row_extras(source_files(cap, src))
    assert {i: e["judge_prompt"] for i, e in extras.items() if e["judge_prompt"]} == \
        {r["id"]: JUDGE_RUBRIC for r in rows if r["eval_mode"] == "judge"}


def test_a_row_without_its_scorer_field_is_refused(tmp_path, tiny_eval_model):
  row = _row("grounding", 0, "refcoco_testA", "", metadata={})  # no bbox: the harness raises too
  src = _write(tmp_path / "src", {"grounding": [row]})
  items = list(load_task("datbench:grounding", data_dir=tmp_path / "tfds", datbench_dir=src))
  with pytest.raises(ValueError, match=r"^datbench:grounding: item grounding_0 \(refcoco_testA\): missing required "
                                       r"field metadata.bbox$"):
    check_items(items, "datbench:grounding")
  argv = ["--model", str(tiny_eval_model), "--tasks", "datbench:grounding", "--datbench-dir", str(src),
          "--data-dir", str(tmp_path / "tfds"), "--output-path", str(tmp_path / "out"), "--no-plots"]
  with pytest.raises(jeval.EvalError, match="grounding_0.*metadata.bbox"):
    jeval.run(jeval.parse_args(argv))


def _cli(model, src, data_dir, out, tasks, *extra):
  return ["--model", str(model), "--tasks", tasks, "--datbench-dir", str(src), "--data-dir", str(data_dir),
          "--method", "none", "--batch-size", "4", "--max-new-tokens", "3", "--time-batches", "0", "--no-plots",
          "--output-path", str(out), "--log-samples", *extra]


def test_cli_grounding_subprocess(datbench_copy, tiny_eval_model, tmp_path):
  src, data_dir = datbench_copy
  cmd = [sys.executable, "-m", "jaxprune.eval", *_cli(tiny_eval_model, src, data_dir, tmp_path, "datbench:grounding")]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  (row,) = json.loads((tmp_path / "results.json").read_text())["rows"]
  assert row["task"] == "datbench:grounding" and row["n"] == 3 and row["n_judge"] == 0
  assert row["accuracy"] is not None and 0.0 <= row["accuracy"] <= 1.0


def test_cli_reports_every_capability_with_judge_items_apart(datbench_copy, tiny_eval_model, tmp_path):
  src, data_dir = datbench_copy
  tasks = ",".join(f"datbench:{c}" for c in CAPABILITIES)
  assert jeval.main(_cli(tiny_eval_model, src, data_dir, tmp_path, tasks)) == 0
  rows = {r["task"]: r for r in json.loads((tmp_path / "results.json").read_text())["rows"]}
  assert set(rows) == {f"datbench:{c}" for c in CAPABILITIES}
  samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
  for cap, cap_rows in _rows().items():
    row, task = rows[f"datbench:{cap}"], f"datbench:{cap}"
    n_judge = sum(r["eval_mode"] == "judge" for r in cap_rows)
    assert row["n"] == len(cap_rows) and row["n_failed"] == 0 and row["n_judge"] == n_judge
    assert row["n_judged"] == 0 and row["judge_accuracy"] is None  # no --judge: reported apart
    direct = [s for s in samples if s["task"] == task and s["eval_mode"] != "judge" and s.get("supported", True)]
    expected = float(np.mean([s["score"] for s in direct])) if direct else None
    assert row["accuracy"] == pytest.approx(expected)  # judge items never enter accuracy
    for s in (s for s in samples if s["task"] == task):  # the logged score is the official scorer's
      item = next(r for r in cap_rows if r["id"] == s["id"])
      loaded = {"id": item["id"], "source": item["source_info"]["dataset"], "answer": item["answer"],
                "all_answers": item["all_answers"], "metadata": item["metadata"], "question": item["question"]}
      assert s["score"] == metrics.score_item(s["output"], loaded).score
  assert rows["datbench:math"]["n_judge"] == 2 and rows["datbench:chart"]["n_judge"] == 1


def _judge_model(root: Path, verdict: str) -> Path:
  """A tiny random Llama whose final norm is zero: all logits tie, so it always emits token 0 = `verdict`."""
  import torch
  from safetensors.numpy import load_file, save_file
  from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
  from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
  words = [verdict, "<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(59)]
  tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
  tok.normalizer = normalizers.Lowercase()
  tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
  torch.manual_seed(0)
  cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, pad_token_id=1, bos_token_id=2, eos_token_id=3, max_position_embeddings=512)
  path = root / f"judge_{verdict}"
  LlamaForCausalLM(cfg).save_pretrained(path)
  PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                          unk_token="<unk>").save_pretrained(path)
  tensors = load_file(str(path / "model.safetensors"))
  tensors["model.norm.weight"] = np.zeros_like(tensors["model.norm.weight"])
  save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
  return path


@pytest.mark.parametrize("verdict", ["true", "false"])
def test_cli_judge_scores_judge_items(datbench_copy, tiny_eval_model, tmp_path, verdict):
  src, data_dir = datbench_copy
  judge = _judge_model(tmp_path, verdict)
  out = tmp_path / "out"
  assert jeval.main(_cli(tiny_eval_model, src, data_dir, out, "datbench:math", "--judge", str(judge))) == 0
  (row,) = json.loads((out / "results.json").read_text())["rows"]
  assert row["n_judge"] == 2 and row["n_judged"] == 2
  assert row["judge_accuracy"] == (1.0 if verdict == "true" else 0.0)
  direct = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
  judged = {s["id"]: s for s in direct if "judge_score" in s}
  assert set(judged) == {"math_2", "math_3"} and all(s["judge_verdict"] is (verdict == "true")
                                                     for s in judged.values())
  scores = [s["score"] for s in direct if s["eval_mode"] == "direct"]
  assert row["accuracy"] == pytest.approx(float(np.mean(scores)))  # judged items still not in accuracy
  assert row["accuracy_with_judge"] == pytest.approx(float(np.mean(scores + [row["judge_accuracy"]] * 2)))


def test_judge_request_matches_the_harness():
  from jaxprune.judge import harness_judge_prompt, parse_verdict, render_request
  rewritten = harness_judge_prompt(JUDGE_RUBRIC)  # schema.JudgeRequest.from_sample_and_response
  assert rewritten == ("You are grading an answer to a math question. Decide whether the response is correct."
                       "\n\nOutput exactly one boolean token: true or false. answer: ")
  assert harness_judge_prompt("Grade it.") == "Grade it."  # no two-line instruction: unchanged
  assert render_request("Is {response} equal to {ground_truth}?", "7", "7") == "Is 7 equal to 7?"
  assert render_request("Grade it.", "7", "8") == "Ground truth answer: 8\nModel response: 7\n\nGrade it."
  assert parse_verdict(" True.") is True and parse_verdict("false") is False and parse_verdict("maybe") is None
  assert parse_verdict("untrue") is None  # whole words only
