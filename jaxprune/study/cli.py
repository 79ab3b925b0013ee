"""`python -m jaxprune.study --model M --tasks T --output-path DIR`: the where-to-prune study in one command.

Three eval runs, each in its own folder under DIR and each resuming where it stopped (`jaxprune.eval`):

    full/    every item unpruned: the reference accuracy
    blind/   the text-only control: which items the model answers without the image
    sweep/   the items the blind control got wrong x every registered method at every layer where its signal
             exists, `random` (a fresh draw per item, one plan per --seeds entry) and `uniform` at the same
             layers, and the `oracle` / `anti-oracle` bounds where the task gives relevance

then `analysis.json` (every number the report shows) and `README.md` + plots, rendered from `analysis.json`
alone (`--render-only` re-renders a finished study). Flags are the eval's (lmms-eval spellings too); the study
sets --method, --layer and --keep itself, from the model's depth and visual token count unless given.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jaxprune.data.tasks import task_for
from jaxprune.eval.cli import SEED_MAX, build_parser
from jaxprune.eval.cli import parse_args as parse_eval_args
from jaxprune.eval.common import EvalError, split_list

# Flags the study sets for each stage itself; a user value for them would be silently overridden, so refuse it.
OWNED = ("blind", "drop_blind", "per_plan", "no_plots", "output_path", "method", "layer", "keep")
# Budgets as fractions of one image's visual tokens: 576 (LLaVA-1.5) -> 16, 32, 64, 128; 144 (scenes) -> 4..32.
BUDGET_FRACTIONS = (1 / 36, 1 / 18, 1 / 9, 2 / 9)


class StudyError(EvalError):
  """A bad flag or an unusable stage result: one line, exit 2."""


def build_study_parser() -> argparse.ArgumentParser:
  p = build_parser()
  p.prog, p.description = "python -m jaxprune.study", __doc__.split("\n\n")[0]
  # timing is off: the report reads FLOPs, and timing a plan's prefill compiles it once more
  p.set_defaults(method=None, keep=None, output_path=None, time_batches=0)
  for action in p._actions:  # the study's meaning of the flags it plans itself
    if action.dest == "method":
      action.help = "methods to sweep (comma list of names; default: every registered method the model can run)"
    elif action.dest == "layer":
      action.help = "layers to prune at (default: first, second, a quarter, half, three quarters, last two)"
    elif action.dest == "keep":
      action.help = "visual-token budgets (default: 1/36, 1/18, 1/9, 2/9 of one image's tokens)"
    elif action.dest in ("blind", "drop_blind", "per_plan", "no_plots"):
      action.help = argparse.SUPPRESS  # the study runs its own stages (and refuses these) and its own plots
    elif action.dest == "time_batches":
      action.help = "batches per plan whose prefill is timed (default 0: the report reads FLOPs; timing compiles more)"
    elif action.dest == "fork_rows":
      action.help = ("rows (plans x batch) per stacked continuation; raise it on small models: compiles dominate a "
                     "study, and a stack of plans is one program (benchmarks/study_cost.py)")
    elif action.dest == "output_path":
      action.help = "the study's directory (required): full/, blind/, sweep/, analysis.json, README.md"
  p.add_argument("--seeds", default="0,1,2", help="draws of the `random` control, one plan each (e.g. 0,1,2)")
  p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples per paired comparison")
  p.add_argument("--render-only", action="store_true", help="re-render README.md and plots from analysis.json")
  return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  """Study flags -> namespace (StudyError, one line); the eval's own checks apply to the flags it shares."""
  argv = list(argv)
  args = build_study_parser().parse_args(argv)
  if not args.output_path:
    raise StudyError("--output-path: required (the study's directory)")
  if args.render_only:
    return args
  for flag in ("blind", "drop_blind", "per_plan"):
    if getattr(args, flag):
      raise StudyError(f"--{flag.replace('_', '-')}: the study runs its own full, blind and sweep stages")
  try:
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]  # repeats kept: they are refused below
  except ValueError:
    raise StudyError(f"--seeds {args.seeds}: expected comma-separated integers") from None
  if not args.seeds or any(not 0 <= s <= SEED_MAX for s in args.seeds) or len(set(args.seeds)) < len(args.seeds):
    raise StudyError(f"--seeds {','.join(map(str, args.seeds))}: give distinct integers in [0, {SEED_MAX}]")
  if args.bootstrap < 100:
    raise StudyError(f"--bootstrap {args.bootstrap}: use at least 100 resamples")
  # the eval's own checks, before anything loads; its namespace has --model-args merged into the flags
  args.eval = parse_eval_args([*stage_argv(args), "--output-path", args.output_path])
  for task in split_list(args.eval.tasks):
    try:
      task_for(task)  # the registry alone: no data is read yet
    except ValueError as e:
      raise StudyError(f"--tasks {task}: {e}") from None
  return args


def stage_argv(args: argparse.Namespace) -> list[str]:
  """The flags the user gave that every stage shares, spelled for `jaxprune.eval` (defaults left out)."""
  out = []
  for action in build_parser()._actions:
    if not action.option_strings or action.dest in OWNED or action.dest == "help":
      continue
    value = getattr(args, action.dest, action.default)
    if value == action.default:
      continue
    flag = action.option_strings[-1]
    out += [flag] if isinstance(action, argparse._StoreTrueAction) else [flag, str(value)]
  return out + ["--no-plots"]


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    args = parse_args(argv)
  except EvalError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  out = Path(args.output_path)
  try:
    from jaxprune.study import report  # matplotlib and the analysis: lazy, so flag errors answer first
    if args.render_only:
      return report.render(out)
    from jaxprune.study.run import run_study  # jax, transformers: lazy on purpose
    run_study(args, stage_argv(args))
    report.render(out)
  except KeyboardInterrupt:
    print(f"interrupted: every finished batch is kept under {out}; rerun the same command to resume",
          file=sys.stderr)
    return 130
  except EvalError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"study: {out / 'README.md'}", file=sys.stderr)
  return 0
