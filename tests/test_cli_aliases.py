"""lmms-eval spellings: every dashed flag of `python -m jaxprune.eval` also parses as `--a_b`, `--model_args`
stands for the flags it names, and an lmms-eval style command line runs end to end on the shipped model."""

from __future__ import annotations

import argparse
import json

import pytest

from jaxprune import eval as jeval
from jaxprune.eval import EvalError, LmmsEvalParser, parse_args, parse_model_args
from jaxprune.models.registry import LOCAL_PRESETS


@pytest.fixture(scope="module")
def parser() -> LmmsEvalParser:
  """The parser parse_args builds, caught on its way through (so flags others add later are covered too)."""
  seen = []
  original = LmmsEvalParser.parse_known_args

  def spy(self, args=None, namespace=None):
    seen.append(self)
    return original(self, args, namespace)
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(LmmsEvalParser, "parse_known_args", spy)
    parse_args([])
  return seen[0]


def _dashed_options(parser) -> list[argparse.Action]:
  return [a for a in parser._actions if any(s.startswith("--") and "-" in s[2:] for s in a.option_strings)]


def _sample_value(action: argparse.Action) -> list[str]:
  """A value each flag accepts (none for switches)."""
  if action.nargs == 0:
    return []
  if action.choices:
    return [str(list(action.choices)[0])]
  if action.dest == "model_args":
    return ["dtype=float32"]
  return {int: ["3"], float: ["0.5"]}.get(action.type, ["x"])


def _outcome(argv: list[str]):
  try:
    return vars(parse_args(argv))
  except (SystemExit, EvalError) as e:
    return type(e).__name__


def test_every_dashed_flag_has_its_underscore_alias(parser):
  actions = _dashed_options(parser)
  names = {s for a in actions for s in a.option_strings}
  assert {"--batch-size", "--output-path", "--log-samples", "--model-args"} <= names  # lmms-eval's own
  for action in actions:
    dashed = next(s for s in action.option_strings if s.startswith("--") and "-" in s[2:])
    alias = dashed.replace("-", "_").replace("__", "--", 1)
    value = _sample_value(action)
    expected = _outcome([dashed, *value])
    assert isinstance(expected, dict), f"{dashed} {value}: sample value rejected ({expected})"
    assert _outcome([alias, *value]) == expected, alias
    if value:
      assert _outcome([f"{alias}={value[0]}"]) == expected, f"{alias}=..."


def test_help_shows_one_spelling(parser):
  text = parser.format_help()
  for action in _dashed_options(parser):
    for s in action.option_strings:
      assert s in text
      assert s.replace("-", "_").replace("__", "--", 1) not in text


def test_flags_added_later_get_their_alias_too():
  p = LmmsEvalParser(prog="x")
  p.add_argument("--gen-kwargs", default="")
  group = p.add_argument_group("extra")
  group.add_argument("--num-fewshot", type=int, default=0)
  args = p.parse_args(["--gen_kwargs", "temperature=0", "--num_fewshot=2"])
  assert (args.gen_kwargs, args.num_fewshot) == ("temperature=0", 2)


def test_unknown_underscore_flag_is_still_an_error(capsys):
  with pytest.raises(SystemExit):
    parse_args(["--not_a_flag", "1"])
  assert "--not_a_flag" in capsys.readouterr().err


def test_fork_rows_default_is_the_generators():
  from jaxprune.generate import FORK_ROWS  # the CLI keeps a literal so that --help needs no jax
  assert parse_args(["--model", "some/dir"]).fork_rows == FORK_ROWS


def test_model_args_round_trip():
  via_flags = vars(parse_args(["--model", "some/dir", "--dtype", "float32", "--mesh", "data=2,model=1"]))
  text = "pretrained=some/dir,dtype=float32,mesh=data=2,model=1"
  assert parse_model_args(text) == {"--model": ("pretrained", "some/dir"), "--dtype": ("dtype", "float32"),
                                    "--mesh": ("mesh", "data=2,model=1")}
  via_model_args = vars(parse_args(["--model_args", text]))
  assert via_model_args.pop("model_args") == text
  via_flags.pop("model_args")
  assert via_model_args == via_flags
  # path= is the same checkpoint key; the keys may come in any order
  other = vars(parse_args(["--model_args", "mesh=data=2,model=1,dtype=float32,path=some/dir"]))
  other.pop("model_args")
  assert other == via_flags


def test_model_args_agreeing_with_a_flag_is_fine():
  args = parse_args(["--dtype", "float32", "--model", "llava", "--model_args",
                     "dtype=float32,pretrained=llava-hf/llava-1.5-7b-hf"])
  assert (args.dtype, args.model) == ("float32", "llava")
  local = parse_args(["--model", "llava-easyvqa", "--model_args", f"pretrained={LOCAL_PRESETS['llava-easyvqa']}"])
  assert local.model == "llava-easyvqa"


@pytest.mark.parametrize("argv, message", [
    (["--model", "a/dir", "--model_args", "pretrained=b/dir"], "--model_args pretrained=b/dir conflicts with --model a/dir"),
    (["--dtype", "bfloat16", "--model_args", "dtype=float32"], "--model_args dtype=float32 conflicts with --dtype bfloat16"),
    (["--model_args", "pretrained=a,path=b"], "--model_args pretrained=a and path=b: conflicting values"),
    (["--model_args", "device_map=auto"], "--model_args device_map: unknown key (known: pretrained, path, dtype, mesh)"),
    (["--model_args", "pretrained"], "--model_args pretrained: expected key=value"),
])
def test_bad_model_args_give_one_clear_line(argv, message, capsys):
  assert jeval.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert err == f"error: {message}" + (": give it one way" if "conflicts with" in message else "")


def test_lmms_eval_style_command_runs_on_the_shipped_model(eval_data, tmp_path, capsys):
  data_dir, _ = eval_data
  out = tmp_path / "lmms"
  argv = ["--model", "llava", "--model_args", f"pretrained={LOCAL_PRESETS['llava-easyvqa']},dtype=float32",
          "--tasks", "easyvqa", "--method", "none", "--limit", "8", "--batch_size", "8",
          "--output_path", str(out), "--log_samples", "--data_dir", str(data_dir), "--no_plots"]
  # `--model llava` is lmms-eval's model class; here it names LLaVA-1.5-7B, which conflicts with pretrained=
  assert jeval.main(argv) == 2
  assert "conflicts with --model llava" in capsys.readouterr().err
  assert jeval.main(argv[2:]) == 0
  results = json.loads((out / "results.json").read_text())
  assert results["model"] == str(LOCAL_PRESETS["llava-easyvqa"])
  (row,) = results["rows"]
  assert (row["task"], row["n"]) == ("easyvqa", 8)
  samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
  assert len(samples) == 8 and all("question" in s for s in samples)  # --log_samples reached the run
  assert json.loads((out / "run.json").read_text())["dtype"] == "float32"
