"""python -m jaxprune.eval — accuracy and cost of visual-token pruning plans, on blind-filtered data.

    python -m jaxprune.eval --model llava --tasks datbench:chart --method none,latesim,fastv \\
        --layer 2,16 --keep 64,0.25 --limit 500 --output-path out/chart --drop-blind out/blind/blind_correct.json

`--method/--layer/--keep` lists form a grid (`none` is the unpruned baseline); a `--method` entry may also be a
full plan (`fastv@8:288+fastv@16:144`), exactly as results rows print it. Every finished batch is appended to
DIR/samples.jsonl and flushed, so rerunning a killed command resumes where it stopped and ends with the same
results.json. `--blind` answers every item with the image removed from the prompt and writes the ids it got
right (DIR/blind_correct.json); `--drop-blind FILE` removes those items from a later run. With no arguments it
runs the offline demo on the shipped easy-VQA model.

The parts, by job: `cli` (flags, `main`), `grid` (the plans asked for), `runner` (model side), `loop` (the run
loop), `records` (sample log, run identity, blind file), `summary` (results rows).
"""

from jaxprune.eval.cli import DEMO_ARGS, DTYPES, LmmsEvalParser, main, parse_args, parse_model_args
from jaxprune.eval.common import BLIND, NONE, EvalError

__all__ = ["BLIND", "DEMO_ARGS", "DTYPES", "NONE", "EvalError", "LmmsEvalParser", "build_grid", "main", "parse_args",
           "parse_model_args", "run", "summarise"]


def __getattr__(name: str):
  """The run loop and its parts load jax and transformers: imported on first use, on purpose, so that
  `--help` and flag errors answer at once."""
  if name in ("run", "evaluate_task", "judge_items"):
    from jaxprune.eval import loop
    return getattr(loop, name)
  if name == "build_grid":
    from jaxprune.eval.grid import build_grid
    return build_grid
  if name == "summarise":
    from jaxprune.eval.summary import summarise
    return summarise
  if name == "Runner":
    from jaxprune.eval.runner import Runner
    return Runner
  if name in ("SampleLog", "weights_fingerprint", "check_resume", "read_blind_file"):
    from jaxprune.eval import records
    return getattr(records, name)
  raise AttributeError(f"module 'jaxprune.eval' has no attribute {name!r}")
