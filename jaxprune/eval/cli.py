"""The command line: flags (lmms-eval's spellings and --model_args too), their validation, and `main`.

Heavy modules (jax, transformers, the run loop) are imported inside functions on purpose, so that flag errors
answer before any of them loads; `--help` loads only the model registry (jax, no transformers), for the names it
lists under --model.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from jaxprune.eval.common import NONE, EvalError, split_list

DEMO_ARGS = ["--model", "llava-easyvqa", "--tasks", "easyvqa", "--method",
             "none,latesim@1,fastv@1,clsattn@0,embedsim@0,divprune@0,visionzip@0,random@0,random@1,uniform@0",
             "--keep", "8,16,32", "--limit", "300", "--output-path", "out/demo"]
DTYPES = ("float32", "bfloat16", "float16")
DESCRIPTION = "accuracy and cost of visual-token pruning plans, on blind-filtered data"


class _HelpFormatter(argparse.HelpFormatter):
  def _split_lines(self, text, width):  # never inside a name: qwen2.5-vl-7b, not "qwen2.5-vl-" / "7b"
    import textwrap
    return textwrap.wrap(self._whitespace_matcher.sub(" ", text).strip(), width, break_on_hyphens=False)


class LmmsEvalParser(argparse.ArgumentParser):
  """argparse that also takes lmms-eval's underscore spelling of every dashed long option (`--batch_size` for
  `--batch-size`), options added later included; `--help` lists only the dashed spelling.

  An action with a `lazy_help` callable gets its help text from it only when help is printed, so help that lists
  a registry needing heavy imports costs nothing on every other path."""

  def error(self, message: str):  # one line (exit 2), not the usage block and then the message
    self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

  def format_help(self):
    for action in self._actions:
      if callable(getattr(action, "lazy_help", None)):
        action.help = action.lazy_help()
    return super().format_help()

  def parse_known_args(self, args=None, namespace=None):
    args = sys.argv[1:] if args is None else list(args)
    known = self._option_string_actions  # every registered option string, argument groups included
    spelled = []
    for i, arg in enumerate(args):
      if arg == "--":  # the rest is positional
        spelled += args[i:]
        break
      name, eq, value = arg.partition("=")
      dashed = "--" + name[2:].replace("_", "-")
      if name.startswith("--") and name not in known and dashed in known:
        arg = dashed + eq + value
      spelled.append(arg)
    return super().parse_known_args(spelled, namespace)


# --model_args keys (lmms-eval's spelling) -> the flag each one stands for
MODEL_ARGS = {"pretrained": "--model", "path": "--model", "dtype": "--dtype", "mesh": "--mesh"}
MESH_AXES = ("data", "model")


def parse_model_args(text: str) -> dict[str, tuple[str, str]]:
  """`pretrained=DIR,dtype=float32,mesh=data=4,model=2` -> {flag: (key, value)}, e.g. {"--model": ("pretrained",
  DIR), "--dtype": ("dtype", "float32"), "--mesh": ("mesh", "data=4,model=2")}. A mesh keeps its `axis=N` pieces."""
  flags: dict[str, tuple[str, str]] = {}
  last_key = None
  for piece in filter(None, (s.strip() for s in text.split(","))):
    key, eq, value = (s.strip() for s in piece.partition("="))
    if last_key == "mesh" and key in MESH_AXES and eq:  # data=4,model=2 continues the mesh value
      flags["--mesh"] = ("mesh", f"{flags['--mesh'][1]},{key}={value}")
      continue
    if not eq or not value:
      raise EvalError(f"--model_args {piece}: expected key=value")
    if key not in MODEL_ARGS:
      raise EvalError(f"--model_args {key}: unknown key (known: {', '.join(MODEL_ARGS)})")
    flag = MODEL_ARGS[key]
    if flag in flags and flags[flag][1] != value:
      raise EvalError(f"--model_args {flags[flag][0]}={flags[flag][1]} and {key}={value}: conflicting values")
    flags[flag], last_key = (key, value), key
  return flags


def _same_model(a: str, b: str) -> bool:
  """Whether two --model values name the same checkpoint (`llava` and llava-hf/llava-1.5-7b-hf do)."""
  if a == b:
    return True
  from jaxprune.models.registry import LOCAL_PRESETS, PRESETS

  def identity(name: str) -> str:
    if name in LOCAL_PRESETS:
      return str(LOCAL_PRESETS[name].resolve())
    return PRESETS.get(name) or (str(Path(name).resolve()) if Path(name).exists() else name)
  return identity(a) == identity(b)


def _model_args_as_flags(parser: argparse.ArgumentParser, argv: Sequence[str], text: str) -> list[str]:
  """--model_args as the flags it stands for (`--dtype=float32`), so argparse checks their values as usual.
  A key that contradicts the same setting given as a flag is an error; agreeing twice is fine."""
  flags = parse_model_args(text)
  unset = object()  # marks flags not on the command line (argparse fills defaults only for missing attributes)
  dests = {flag: flag[2:].replace("-", "_") for flag in flags}
  direct = parser.parse_args(argv, argparse.Namespace(**{dest: unset for dest in dests.values()}))
  extra = []
  for flag, (key, value) in flags.items():
    given = getattr(direct, dests[flag])
    if given is unset:
      extra.append(f"{flag}={value}")
    elif not (_same_model(given, value) if flag == "--model" else given == value):
      raise EvalError(f"--model_args {key}={value} conflicts with {flag} {given}: give it one way")
  return extra


def _model_help() -> str:
  """--model's help: the registry's names as they are now (the registry loads the model families: jax)."""
  from jaxprune.models.registry import LOCAL_PRESETS, PRESETS
  names = ", ".join([*LOCAL_PRESETS, *PRESETS])
  return f"registry name ({names}), HF directory, orbax directory, .gguf file or hub id (default: %(default)s)"


def _tasks_help() -> str:
  from jaxprune.data.tasks import spelled_tasks  # light: no tfds, no jax
  return f"comma list: {', '.join(spelled_tasks())} (default: %(default)s)"


SEED_MAX = 2**32 - 1  # the `random` method's jax key and the bootstrap's numpy generator both take it


def build_parser() -> LmmsEvalParser:
  p = LmmsEvalParser(prog="python -m jaxprune.eval", description=DESCRIPTION, formatter_class=_HelpFormatter)
  p.add_argument("--model", default="llava-easyvqa").lazy_help = _model_help
  p.add_argument("--model-args", default=None, metavar="KEY=VALUE,...",
                 help="lmms-eval style: pretrained= or path= (the checkpoint, as --model), dtype=, "
                      "mesh=data=N,model=M")
  p.add_argument("--tasks", default="easyvqa", help=_tasks_help())
  p.add_argument("--method", default=NONE,
                 help="comma list of pruning methods, each optionally with its own layer (fastv@2), or full plans "
                      "as results rows print them (fastv@8:288+latesim@16:64[aggregate=max]); 'none' = unpruned")
  p.add_argument("--layer", default=None,
                 help="comma list of decoder layers K to prune at (default: 2, or the last layer of a shallower model)")
  p.add_argument("--keep", default="64",
                 help="comma list of visual tokens kept per prompt (int) or ratios of them (0.25)")
  p.add_argument("--batch-size", type=int, default=8)
  p.add_argument("--limit", type=int, default=None, help="evaluate the first N items of each task")
  p.add_argument("--output-path", default="out/eval")
  p.add_argument("--log-samples", action="store_true", help="also log question, answers and raw output per item")
  p.add_argument("--blind", action="store_true", help="text-only control: the image removed from the prompt")
  p.add_argument("--drop-blind", default=None, metavar="FILE", help="blind_correct.json of an earlier --blind run")
  p.add_argument("--seed", type=int, default=0, help="seed of the `random` method and the bootstrap")
  p.add_argument("--max-new-tokens", type=int, default=16)
  p.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: as stored / bfloat16)")
  p.add_argument("--bucket", type=int, default=64,
                 help="prompt lengths are padded to a multiple of this (fewer compiles; a pruned continuation "
                      "keeps the padding, so short fixed-length prompts prune faster at 16)")
  p.add_argument("--time-batches", type=int, default=3,
                 help="batches per config whose prefill is timed (each plan alone, on either path)")
  p.add_argument("--per-plan", action="store_true",
                 help="run every plan alone through one fused program (vision tower and prefill again per "
                      "plan) instead of sharing the grid's prefix: the reference path, slower; its answers equal "
                      "the shared path's except where a score or logit tie falls within float noise")
  p.add_argument("--fork-rows", type=int, default=64,  # jaxprune.generate.FORK_ROWS (not imported: see above)
                 help="shared path: plans that prune to the same shapes at one layer continue as one program of "
                      "up to this many rows (plans x batch); lower it if a large model runs out of memory in a grid")
  p.add_argument("--data-dir", default=None, help="where prepared tfds data lives")
  p.add_argument("--datbench-dir", default=None, help="local copy of DatBench's parquet files")
  p.add_argument("--judge", default=None, metavar="MODEL",
                 help="causal LM (HF dir, orbax dir, .gguf) that judges DatBench eval_mode=judge items as the "
                      "official harness does; without it they are reported apart, never in accuracy")
  p.add_argument("--mesh", default=None, metavar="data=N,model=M",
                 help="device mesh (default: every device on data, model-sharded only if weights do not fit)")
  p.add_argument("--distributed", action="store_true", help="multi-host: call jax.distributed.initialize()")
  p.add_argument("--no-plots", action="store_true")
  return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  """Flags -> namespace; every value checked here (EvalError, one line naming the flag), before any heavy import."""
  p = build_parser()
  args = p.parse_args(argv)
  if args.model_args:
    args = p.parse_args([*argv, *_model_args_as_flags(p, argv, args.model_args)])
  _check_args(args)
  return args


def _check_args(args: argparse.Namespace) -> None:
  if args.batch_size < 1:
    raise EvalError(f"--batch-size {args.batch_size}: must be >= 1")
  if args.limit is not None and args.limit < 1:
    raise EvalError(f"--limit {args.limit}: must be >= 1")
  for flag in ("max_new_tokens", "bucket", "fork_rows"):
    if getattr(args, flag) < 1:
      raise EvalError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be >= 1")
  if args.dtype is not None and args.dtype not in DTYPES:
    raise EvalError(f"--dtype {args.dtype}: not supported (choose {', '.join(DTYPES)}; float16 not on CPU)")
  for flag in ("tasks", "method", "layer", "keep"):
    if getattr(args, flag) is not None and not split_list(getattr(args, flag)):
      raise EvalError(f"--{flag} {getattr(args, flag)!r}: empty list")
  if not args.output_path.strip():  # Path("") is the working directory
    raise EvalError(f"--output-path {args.output_path!r}: empty; give the directory to write results to")
  if not 0 <= args.seed <= SEED_MAX:
    raise EvalError(f"--seed {args.seed}: must lie in [0, {SEED_MAX}]")
  if args.time_batches < 0:
    raise EvalError(f"--time-batches {args.time_batches}: must be >= 0")


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv:
    print("jaxprune demo: the shipped easy-VQA model, unpruned + a sweep of methods (python -m jaxprune.eval "
          "--help for options)", file=sys.stderr)
    argv = list(DEMO_ARGS)
  try:
    args = parse_args(argv)
  except EvalError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  args.argv = argv
  try:
    # lazy on purpose: jax, transformers and the data layer load only once the flags are known to be good
    from jaxprune.convert.hf import CheckpointError
    from jaxprune.eval.loop import run
    from jaxprune.sharding import initialize_distributed
    initialize_distributed(args.distributed)  # before anything touches a JAX backend
    results = run(args)
  except KeyboardInterrupt:  # Ctrl-C: every finished batch is already on disk (130 = the shell's 128 + SIGINT)
    samples = Path(args.output_path) / "samples.jsonl"
    saved = sum(1 for _ in samples.open("rb")) if samples.exists() else 0
    print(f"interrupted: {saved} finished sample(s) kept in {samples}; rerun the same command to resume",
          file=sys.stderr)
    return 130
  except (EvalError, CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  out = Path(args.output_path)
  import jax  # loaded by the run already
  if jax.process_index() != 0:
    return 0  # other processes of a multi-host run: process 0 reports
  try:
    from jaxprune import report  # matplotlib: only for a finished run
    print(report.summary_table(results))
    if not args.no_plots:
      for path in report.write_plots(results, out):
        print(f"wrote {path}", file=sys.stderr)
  except ImportError:
    print(json.dumps(results["rows"], indent=1))
  print(f"results: {out / 'results.json'}", file=sys.stderr)
  return 0
