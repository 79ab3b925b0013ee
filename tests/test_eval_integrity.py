"""Issue 31, the eval's records, data and metrics: nothing wrong without a word.

One module-scoped run on a tiny random LLaVA (a DatBench-shaped source with judge items and a question holding
`<image>`, judged by a tiny always-"true" judge) is shared by the resume, identity and crash-safety checks;
everything else is unit-level or refused before anything compiles.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import statistics
from pathlib import Path

import pytest
from test_data import datbench_row, png_bytes, write_parquet

from jaxprune import eval as jeval


def _argv(model, tfds_dir, src, out, *extra, tasks="datbench:counting"):
  return ["--model", str(model), "--batch-size", "2", "--data-dir", str(tfds_dir), "--datbench-dir", str(src),
          "--max-new-tokens", "2", "--time-batches", "0", "--no-plots", "--output-path", str(out),
          "--tasks", tasks, *extra]


def _counting(root: Path, rows: list[dict]) -> Path:
  write_parquet(root / "counting.parquet", rows)
  return root


def _row(i: int, *, eval_mode="direct", question=None, image=None, **extra) -> dict:
  return datbench_row("counting", i, source="countbench", eval_mode=eval_mode, prompt_format=None,
                      image=png_bytes(i, (32, 32)) if image is None else image,
                      question=question or f"how many shapes {i} ?", answer=str(i % 3), **extra)


def _one_error(capsys, argv, *needles) -> str:
  assert jeval.main(argv) == 2
  err = capsys.readouterr().err
  lines = [line for line in re.split(r"[\r\n]", err) if line.startswith("error")]  # past tfds's progress bars
  assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
  for needle in needles:
    assert needle in lines[0], lines[0]
  return lines[0]


def _lines(out: Path) -> list[dict]:
  return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def _judge(root: Path, verdict: str) -> Path:
  from test_datbench_e2e import _judge_model
  return _judge_model(root, verdict)


# ---------------------------------------------------------------------------------- the shared run


@pytest.fixture(scope="module")
def shared(tiny_eval_model, tmp_path_factory):
  """(argv, output dir, judge dirs, tfds dir, source dir) of one finished run: 6 items (2 judge items, item 1's
  question holds `<image>`), two configs, judged by an always-"true" judge."""
  root = tmp_path_factory.mktemp("integrity")
  rows = [_row(0), _row(1, question="what is in <image> here ?"), _row(2), _row(3, eval_mode="judge"), _row(4),
          _row(5, eval_mode="judge")]
  src = _counting(root / "src", rows)
  judges = {v: _judge(root, v) for v in ("true", "false")}
  out = root / "out"
  argv = _argv(tiny_eval_model, root / "tfds", src, out, "--method", "none,random@1", "--keep", "4", "--judge",
               str(judges["true"]))
  assert jeval.main(argv) == 0
  return argv, out, judges, root / "tfds", src


def _results(out: Path) -> dict:
  return json.loads((out / "results.json").read_text())


def test_image_placeholder_in_a_question_fails_that_item_alone(shared):
  _, out, _, _, _ = shared
  rows = _results(out)["rows"]
  assert [(r["n"], r["n_failed"], r["n_total"]) for r in rows] == [(5, 1, 6)] * 2
  failed = [r for r in _lines(out) if r["failed"]]
  assert {r["id"] for r in failed} == {"counting_001"}
  assert all("counting_001" in r["failed"] and "image placeholder '<image>'" in r["failed"] for r in failed)


def test_harness_accuracy_beside_accuracy(shared):
  _, out, _, _, _ = shared
  records = {(r["config"], r["id"]): r for r in _lines(out)}  # the judged copies last
  for row in _results(out)["rows"]:
    answered = [r for (c, _), r in records.items() if c == row["plan"] and not r["failed"]]
    direct = [r["score"] for r in answered if r["eval_mode"] == "direct"]
    assert row["accuracy"] == pytest.approx(statistics.mean(direct))
    # compute_metrics: every answered item by its rule scorer, judge items included
    assert row["harness_accuracy"] == pytest.approx(statistics.mean(r["score"] for r in answered))
    assert row["n_judged"] == 2 and row["judge_accuracy"] == 1.0


def test_summarise_scores_reports_the_harness_number():
  from jaxprune.metrics import summarise_scores
  records = [{"score": 1.0, "eval_mode": "direct"}, {"score": 0.0, "eval_mode": "direct"},
             {"score": 1.0, "eval_mode": "judge", "judge_score": 0.0}, {"score": 1.0, "eval_mode": "judge"}]
  s = summarise_scores(records)
  assert s["accuracy"] == 0.5 and s["harness_accuracy"] == 0.75
  records.append({"score": 0.0, "eval_mode": "judge", "supported": False})  # MathVerse: the harness raises
  assert summarise_scores(records)["harness_accuracy"] is None


def test_empty_all_answers_scores_against_nothing():
  from jaxprune.data import common
  from jaxprune.data.datbench import row_to_item
  from jaxprune.metrics import score_item
  row = datbench_row("document", 0, source="ocrbench-v2", eval_mode="direct", image=None, answer="yes",
                     all_answers=[], metadata=json.dumps({"type": "text recognition en", "eval": "None"}))
  item = common.decode_record(common.encode_item(row_to_item(row, "document", 0)))  # as stored and read back
  assert item["all_answers"] == []
  assert score_item("yes", item).score == 0.0  # the harness: `answers` is empty, nothing to match
  absent = row_to_item({**row, "all_answers": None}, "document", 0)
  assert absent["all_answers"] == ["yes"] and score_item("yes", absent).score == 1.0


# ---------------------------------------------------------------------------------- run identity


def _copy(out: Path, dst: Path) -> Path:
  return Path(shutil.copytree(out, dst))


def test_resume_with_another_judge_is_refused(shared, tmp_path, capsys):
  argv, out, judges, _, _ = shared
  copy = _copy(out, tmp_path / "copy")
  other = [a if a != str(judges["true"]) else str(judges["false"]) for a in argv]
  other[other.index("--output-path") + 1] = str(copy)
  _one_error(capsys, other, "judge differ")
  (copy / "run.json").unlink()  # the records say which judge judged them
  _one_error(capsys, other, "judged by another --judge")


def test_resume_without_judge_keeps_its_verdicts(shared, tmp_path):
  argv, out, judges, _, _ = shared
  copy = _copy(out, tmp_path / "copy")
  plain = argv[:argv.index("--judge")] + ["--output-path", str(copy)]
  assert jeval.main(plain) == 0
  assert _results(copy)["rows"] == _results(out)["rows"] and _results(copy)["judge"] == str(judges["true"])
  assert json.loads((copy / "run.json").read_text())["judge"] == json.loads((out / "run.json").read_text())["judge"]


def test_samples_without_run_json_are_checked_by_their_own_identity(shared, tmp_path, capsys):
  argv, out, _, _, _ = shared
  copy = _copy(out, tmp_path / "copy")
  (copy / "run.json").unlink()
  other = argv + ["--output-path", str(copy), "--max-new-tokens", "1"]
  _one_error(capsys, other, "samples.jsonl:1: a sample of a different run")
  legacy = [{k: v for k, v in r.items() if k != "run"} for r in _lines(copy)]  # as older versions wrote them
  (copy / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in legacy))
  _one_error(capsys, other, "without a run identity and no run.json")
  assert not (copy / "run.json").exists()  # refused: nothing rewritten to claim the new settings


# ---------------------------------------------------------------------------------- crash-safe appends


def test_a_kill_at_any_byte_of_the_last_record_loses_nothing_else(shared, tmp_path):
  """The record layer at every byte offset of the last record: read back, the cut record is either whole (the
  kill fell after its `}`) or gone; appending what is missing, and then the next batch, gives the uninterrupted
  log's records, one per line, and the same result rows."""
  from jaxprune.eval.records import SampleLog
  from jaxprune.eval.summary import summarise
  _, out, _, _, _ = shared
  data = (out / "samples.jsonl").read_bytes()
  whole = SampleLog(out / "samples.jsonl", writer=False).records
  start = data.rstrip(b"\n").rfind(b"\n") + 1
  path = tmp_path / "samples.jsonl"

  def rows(records):
    task = "datbench:counting"
    return [summarise(task, c, [r for (t, cc, _), r in records.items() if (t, cc) == (task, c)], 6, 16, 0)
            for c in ("none", "random@1:4")]
  path.write_bytes(data[:start])
  before = SampleLog(path, writer=False).records  # what the log held before its last record
  last = json.loads(data[start:])
  nxt = {**last, "task": "datbench:other"}  # a record of a later batch (another task: the rows stay comparable)
  key = (nxt["task"], nxt["config"], nxt["id"])
  for cut in range(start, len(data) + 1):
    path.write_bytes(data[:cut])
    log = SampleLog(path)
    kept = cut >= len(data) - 1  # the kill fell after the record's `}`
    assert log.records == (whole if kept else before)
    log.append([] if kept else [last])  # the resume writes what is missing
    log.append([nxt])  # and goes on
    again = SampleLog(path, writer=False)
    assert again.records == {**whole, key: nxt} and rows(again.records) == rows(whole)
    assert all(line.startswith(b"{") and line.count(b'"task"') == 1 for line in path.read_bytes().splitlines())


def test_records_joined_on_one_line_are_both_read(tmp_path):
  from jaxprune.eval.records import SampleLog
  recs = [{"task": "t", "config": "none", "id": str(i), "index": i, "eval_mode": "direct", "failed": None,
           "score": 1.0} for i in range(3)]
  path = tmp_path / "samples.jsonl"
  path.write_text(json.dumps(recs[0]) + json.dumps(recs[1]) + "\n" + json.dumps(recs[2]) + "\n")  # older bug
  assert len(SampleLog(path).records) == 3


@pytest.mark.parametrize("where", ["mid-record", "after-brace"])
def test_killed_append_resumes_to_the_same_results(shared, where):
  """End to end: the log cut inside the last answer record (its item answered again, then judged) or right
  after its `}` (kept; the judge's appends start on a new line) ends in the uninterrupted results.json."""
  argv, out, _, _, _ = shared
  saved = {name: (out / name).read_bytes() for name in ("samples.jsonl", "results.json", "run.json")}
  try:
    lines = saved["samples.jsonl"].splitlines(keepends=True)
    answers = [i for i, line in enumerate(lines) if b'"judge_score"' not in line]
    last = lines[answers[-1]]
    head = b"".join(lines[:answers[-1]])
    cut = last[:len(last) // 2] if where == "mid-record" else last.rstrip(b"\n")
    (out / "samples.jsonl").write_bytes(head + cut)  # the judged copies after it never written
    (out / "results.json").unlink()
    assert jeval.main(argv) == 0
    assert (out / "results.json").read_bytes() == saved["results.json"]
    assert all(line.startswith("{") and line.count('"task"') == 1
               for line in (out / "samples.jsonl").read_text().splitlines())
  finally:
    for name, content in saved.items():
      (out / name).write_bytes(content)


# ---------------------------------------------------------------------------------- inputs checked at load


def test_duplicate_ids_are_refused_naming_the_id(tiny_eval_model, tmp_path, capsys):
  src = _counting(tmp_path / "src", [_row(0), _row(1), {**_row(2), "id": "counting_000"}])
  _one_error(capsys, _argv(tiny_eval_model, tmp_path / "tfds", src, tmp_path / "out"),
             "--tasks datbench:counting", "'counting_000' appears twice", "items 0 and 2")


def test_missing_judge_is_refused_before_any_item(tiny_eval_model, tmp_path, capsys):
  src = _counting(tmp_path / "src", [_row(0), _row(1, eval_mode="judge")])
  _one_error(capsys, _argv(tiny_eval_model, tmp_path / "tfds", src, tmp_path / "out", "--judge",
                           str(tmp_path / "no_such_judge")), "--judge", "no_such_judge")
  assert not (tmp_path / "out" / "samples.jsonl").exists()


def test_judge_without_judge_items_says_it_is_unused(capsys):
  from argparse import Namespace

  from jaxprune.eval.loop import judge_setup
  datasets = {"datbench:counting": [(0, {"id": "a", "eval_mode": "direct"})]}
  assert judge_setup(Namespace(judge="/no/such/judge", dtype=None, datbench_dir=None), datasets) is None
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("note: --judge /no/such/judge") and "not used" in err[0]


def test_max_new_tokens_beyond_the_positions_is_refused(tiny_eval_model, tmp_path, capsys):
  model = shutil.copytree(tiny_eval_model, tmp_path / "short")
  config = json.loads((model / "config.json").read_text())
  config["text_config"]["max_position_embeddings"] = 30
  (model / "config.json").write_text(json.dumps(config))
  src = _counting(tmp_path / "src", [_row(0)])
  argv = _argv(model, tmp_path / "tfds", src, tmp_path / "out")
  argv[argv.index("--max-new-tokens") + 1] = "20"
  _one_error(capsys, argv, "--max-new-tokens 20", "max_position_embeddings 30")


def test_qwen_without_its_image_processor_is_refused(tmp_path, capsys):
  from families.qwen2_5_vl import save_tiny_qwen
  from test_qwen2_5_vl import local_processor_files
  model = tmp_path / "qwen"
  save_tiny_qwen(model, seed=2)
  local_processor_files(model)
  (model / "preprocessor_config.json").unlink()
  src = _counting(tmp_path / "src", [_row(0)])
  _one_error(capsys, _argv(model, tmp_path / "tfds", src, tmp_path / "out"), f"--model {model}",
             "preprocessor_config.json")


def test_every_item_failed_is_an_error(tiny_eval_model, tmp_path, capsys):
  bad = b"\x89PNG not an image"
  src = _counting(tmp_path / "src", [_row(0, image=bad), _row(1, image=bad)])
  line = _one_error(capsys, _argv(tiny_eval_model, tmp_path / "tfds", src, tmp_path / "out"), "every item failed",
                    "counting_000")
  assert "cannot be opened as an image" in line
  assert (tmp_path / "out" / "results.json").exists()  # still written: the rows say what failed


# ---------------------------------------------------------------------------------- timing under load


class LoadedMachine:
  """A fake clock on a busy machine: a call costs its FLOPs times the load, which jumps every few calls (another
  job starting or stopping), times a small per-call jitter."""

  def __init__(self, seed: int, jitter: float = 0.02):
    self.rng, self.jitter, self.now, self.left, self.load = random.Random(seed), jitter, 0.0, 0, 1.0

  def clock(self) -> float:
    return self.now

  def call(self, flops: float):
    def run():
      if self.left == 0:
        self.load, self.left = self.rng.uniform(1.0, 4.0), self.rng.randint(1, 12)
      self.left -= 1
      self.now += flops * self.load * (1 + self.rng.uniform(-self.jitter, self.jitter))
    return run


def test_interleaved_rounds_rotate_every_call_through_every_round():
  from jaxprune.eval.runner import interleaved_rounds
  order = []
  calls = [lambda k=k: order.append(k) for k in range(3)]
  times = interleaved_rounds(calls, 4, clock=lambda: 0.0, sync=lambda x: x)
  assert len(times) == 3 and all(len(t) == 4 for t in times)
  warmup, rounds = order[:3], [order[3 + 3 * r:6 + 3 * r] for r in range(4)]
  assert warmup == [0, 1, 2] and rounds == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]


def _table_ms(table: str) -> dict[str, float]:
  """plan -> the prefill ms cell of each row of a summary table."""
  lines = [re.split(r"\s{2,}", line.strip()) for line in table.splitlines()]
  col = lines[0].index("prefill ms")
  return {cells[1]: float(cells[col]) for cells in lines[2:] if cells[0] == "t"}


def test_a_cheaper_plan_is_never_shown_slower_from_load(monkeypatch):
  """Plans at 100%..55% of the unpruned FLOPs, each timed on two batches in interleaved rounds on a machine
  whose load jumps between 1x and 4x: the table never shows one slower than unpruned when its FLOPs are lower by
  more than the noise it reports. Timed one batch per plan, one after the other (the old way), some are."""
  from jaxprune import report
  from jaxprune.eval.runner import TIME_ROUNDS, interleaved_rounds
  from jaxprune.eval.summary import prefill_reference, prefill_timing, summarise
  flops = {"none": 1.0, **{f"fastv@1:{k}": 0.55 + 0.05 * k for k in range(1, 9)}}
  plans = list(flops)
  old_inverted, checked = 0, 0
  for seed in range(30):
    machine = LoadedMachine(seed)
    records = {p: [] for p in plans}
    for batch in range(2):
      times = interleaved_rounds([machine.call(flops["none"])] + [machine.call(flops[p]) for p in plans],
                                 TIME_ROUNDS, clock=machine.clock, sync=lambda x: x)
      for p, t in zip(plans, times[1:]):
        records[p].append({"index": batch, "failed": None, "score": 1.0, "eval_mode": "direct",
                           "flops": flops[p], "kv_bytes": 1, "batch_prefill_ms": {"plan": t, "none": times[0]}})
    reference = prefill_reference([r for rs in records.values() for r in rs])
    rows = [summarise("t", p, records[p], 2, 16, 0, reference) for p in plans]
    noise = max(prefill_timing(records[p])["noise"] for p in plans)
    results = {"num_visual": 16, "rows": rows, "prefill_noise": noise, "prefill": {"rounds": TIME_ROUNDS}}
    table = report.summary_table(results)
    assert f"timing noise ±{100 * noise:.1f}%" in table
    shown = _table_ms(table)
    for p in plans[1:]:
      if flops[p] < flops["none"] * (1 - noise):
        checked += 1
        assert shown[p] < shown["none"], (seed, p, table)
    one_shot = {p: machine.call(flops[p]) for p in plans}
    single = {}
    for p in plans:  # the old way: each plan's one timed call, plan after plan
      start = machine.clock()
      one_shot[p]()
      single[p] = machine.clock() - start
    old_inverted += sum(single[p] > single["none"] for p in plans[1:])
  assert checked > 60 and old_inverted > 0  # the claim is tested often, and the scenario inverts one-shot timings
