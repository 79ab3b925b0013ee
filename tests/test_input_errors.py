"""Issue 31's bad inputs at the command lines, the converter, the recipes and image decoding: each one refused in
one line naming the flag, file, key or tensor (exit 2 from the command line), before any load, compile or training
it would waste; flag errors answer before jax loads; and 16-bit PNGs decode to their real levels.

Everything runs in-process except the import-time check, which needs a fresh interpreter.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxprune import eval as jeval

SEED_RANGE = "[0, 4294967295]"


def _one_line(text: str) -> str:
  lines = [line for line in text.splitlines() if line.strip()]
  assert len(lines) == 1 and "Traceback" not in text, text
  return lines[0]


# ------------------------------------------------------------------------ eval flags (items 5, 6, 10, 11)


@pytest.mark.parametrize("extra, needle", [
    (["--output-path", ""], "--output-path '': empty"),
    (["--output-path", "  "], "--output-path '  ': empty"),
    (["--seed", "-1"], f"--seed -1: must lie in {SEED_RANGE}"),
    (["--seed", str(2**32)], f"--seed {2**32}: must lie in {SEED_RANGE}"),
])
def test_eval_refuses_bad_flags_before_loading_anything(tmp_path, monkeypatch, capsys, extra, needle):
  monkeypatch.chdir(tmp_path)  # an empty --output-path used to write here
  assert jeval.main(["--model", str(tmp_path / "no-such-model"), *extra]) == 2
  line = _one_line(capsys.readouterr().err)
  assert line.startswith("error: ") and needle in line, line
  assert not any(tmp_path.iterdir())


def test_eval_help_lists_every_task_and_registry_name():
  from jaxprune.data import DATBENCH_CAPABILITIES
  from jaxprune.eval.cli import build_parser
  from jaxprune.models.registry import LOCAL_PRESETS, PRESETS
  text = "".join(build_parser().format_help().split())  # argparse wraps lines
  for name in [*PRESETS, *LOCAL_PRESETS, "easyvqa", "scenes", "datbench:<" + "|".join(DATBENCH_CAPABILITIES) + ">"]:
    assert name in text, name


DRIVER = """
import runpy, sys
module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
try:
  runpy.run_module(module, run_name="__main__", alter_sys=True)
  code = 0
except SystemExit as e:
  code = e.code
heavy = [m for m in ("jax", "transformers", "torch") if m in sys.modules]
print("HEAVY " + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize("module, argv, needle", [
    ("jaxprune.eval", ["--seed", "-1"], "error: --seed -1"),
    ("jaxprune.eval", ["--bucket", "x"], "argument --bucket: invalid int value: 'x'"),
    ("jaxprune.convert", ["--hf", "some/model", "--out", ""], "argument --out: empty"),
    ("jaxprune.train", ["--out", "{tmp}/ckpt", "--steps", "0"], "--steps must be >= 1, got 0"),
    ("jaxprune.recipes.scenes", ["--out", "{tmp}/file", "--steps", "5"], "is a file, not a directory"),
])
def test_flag_errors_answer_before_jax_loads(tmp_path, module, argv, needle):
  (tmp_path / "file").write_text("not a directory")
  argv = [a.format(tmp=tmp_path) for a in argv]
  proc = subprocess.run([sys.executable, "-c", DRIVER, module, *argv], capture_output=True, text=True, timeout=120)
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert lines and lines[-1].startswith("HEAVY "), proc.stderr
  assert lines[-1] == "HEAVY ", f"{module}: a flag error imported {lines[-1][6:]}"
  assert proc.returncode == 2, proc.stderr
  assert needle in _one_line("\n".join(lines[:-1]))


# ---------------------------------------------------------------------------------------- --method (item 7)


@pytest.mark.parametrize("method, needle", [
    ("fastv@", "--method fastv@: no layer after '@'"),
    ("fastv@x", "--method fastv@x: expected comma-separated integers"),
    ("fastv@1:", "--method fastv@1:: cannot parse stage"),
    ("fastv@1:0", "keep must be >= 1"),
    ("fastv@1:8+", "cannot parse stage ''"),
    ("@2", "--method @2: no method before '@'"),
    ("none@2", "--method none@2: 'none' is the unpruned baseline"),
    ("random@1:8[seed=-1]", f"option seed must lie in {SEED_RANGE}"),
])
def test_malformed_method_is_one_line(method, needle):
  from jaxprune.eval.grid import build_grid
  from jaxprune.models.registry import SHAPES
  with pytest.raises(jeval.EvalError) as e:
    build_grid(argparse.Namespace(method=method, layer=None, keep="64", seed=0), SHAPES["llava-7b"])
  assert needle in _one_line(str(e.value))


# --------------------------------------------------------------------------------------- convert (item 1)


def _convert(capsys, hf, out) -> tuple[int, str]:
  from jaxprune.convert.__main__ import main as convert_main
  code = convert_main(["--hf", str(hf), "--out", str(out), "--dtype", "float32"])
  return code, capsys.readouterr().err


def _contents(path: Path) -> dict[str, bytes]:
  return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


def test_convert_never_overwrites_a_foreign_out(tiny_llava, tmp_path, capsys):
  source = tiny_llava[1]
  other = shutil.copytree(source, tmp_path / "other-checkpoint")  # another model's HF directory
  notes = tmp_path / "notes"
  notes.mkdir()
  (notes / "mine.txt").write_text("keep me")
  (tmp_path / "a-file").write_text("keep me")
  for out, needle in [(other, "not empty (it holds config.json"), (notes, "not empty (it holds mine.txt)"),
                      (tmp_path / "a-file", "is a file")]:
    before = _contents(out) if out.is_dir() else out.read_bytes()
    code, err = _convert(capsys, source, out)
    line = _one_line(err)
    assert code == 2 and line.startswith(f"error: --out {out}") and needle in line, line
    assert (_contents(out) if out.is_dir() else out.read_bytes()) == before


def test_convert_replaces_its_own_earlier_output_only(tiny_llava, tmp_path, capsys, monkeypatch):
  from jaxprune.convert import hf
  source, out = tiny_llava[1], tmp_path / "orbax"
  assert _convert(capsys, source, out)[0] == 0
  with monkeypatch.context() as m:  # killed while copying the tokenizer files, after the weights
    m.setattr(hf.shutil, "copy2", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
      _convert(capsys, source, out)
  with pytest.raises(hf.CheckpointError, match="did not finish"):
    hf.load_model(out)
  assert _convert(capsys, source, out)[0] == 0  # the same conversion again: replaces itself
  hf.load_model(out)
  twin = shutil.copytree(source, tmp_path / "twin")  # same weights, but another source
  code, err = _convert(capsys, twin, out)
  assert code == 2 and f"it holds a conversion of {source.resolve()}" in _one_line(err)


# ------------------------------------------------------------------------ checkpoint contents (items 2, 3)


@pytest.fixture(scope="module")
def tiny_orbax(tiny_llava, tmp_path_factory) -> Path:
  from jaxprune.convert.hf import load_model, save_orbax
  return save_orbax(load_model(tiny_llava[1], dtype="float32"), tmp_path_factory.mktemp("orbax") / "tiny")


@pytest.mark.parametrize("content, needle", [
    ("{not json", "invalid JSON"),
    ('["dtype"]', "expected a JSON object"),
    ('{"format": 1, "family": "llava"}', "lacks key 'dtype'"),
    ('{"format": 1, "family": "llava", "dtype": "int8"}', "key 'dtype' is 'int8'"),
    ('{"format": 1, "family": "llava", "dtype": "float33"}', "key 'dtype' is 'float33'"),
])
def test_bad_orbax_marker_is_one_line(tiny_orbax, tmp_path, content, needle):
  from jaxprune.convert.hf import CheckpointError, load_model
  model = shutil.copytree(tiny_orbax, tmp_path / "orbax")
  (model / "jaxprune.json").write_text(content)
  with pytest.raises(CheckpointError) as e:
    load_model(model)
  line = _one_line(str(e.value))
  assert line.startswith(str(model / "jaxprune.json")) and needle in line, line


def test_orbax_marker_without_dtype_exits_2_from_the_eval(tiny_orbax, eval_data, tmp_path, capsys):
  model = shutil.copytree(tiny_orbax, tmp_path / "orbax")
  (model / "jaxprune.json").write_text('{"format": 1, "family": "llava"}')
  argv = ["--model", str(model), "--data-dir", str(eval_data[0]), "--limit", "2", "--time-batches", "0",
          "--no-plots", "--output-path", str(tmp_path / "out")]
  assert jeval.main(argv) == 2
  assert f"{model / 'jaxprune.json'}: lacks key 'dtype'" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32"])
def test_integer_tensor_under_a_float_weight_is_refused(tiny_llava, tmp_path, dtype):
  from safetensors.numpy import load_file, save_file

  from jaxprune.convert.hf import CheckpointError, load_model
  model = shutil.copytree(tiny_llava[1], tmp_path / "quantised")
  tensors = load_file(str(model / "model.safetensors"))
  key = next(k for k in sorted(tensors) if k.endswith("q_proj.weight"))
  tensors[key] = np.clip(np.round(tensors[key] * 100), 0, 100).astype(dtype)  # as an int8-quantised export
  save_file(tensors, str(model / "model.safetensors"), metadata={"format": "pt"})
  with pytest.raises(CheckpointError) as e:
    load_model(model, dtype="float32")
  line = _one_line(str(e.value))
  assert f"weight {key!r} is stored as {dtype}" in line and str(model) in line, line


# ------------------------------------------------------------------------------------ 16-bit PNGs (item 4)


def _png(array: np.ndarray) -> bytes:
  from PIL import Image
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


def test_16bit_grayscale_png_decodes_to_its_levels_not_white():
  from jaxprune.data.common import decode_image
  levels = np.linspace(0, 65535, 24 * 32).reshape(24, 32).astype(np.uint16)
  rgb = decode_image(_png(levels))
  assert rgb.dtype == np.uint8 and rgb.shape == (24, 32, 3)
  expected = np.round(levels / 257).astype(np.uint8)  # 65535 -> 255
  for channel in range(3):
    np.testing.assert_array_equal(rgb[..., channel], expected)
  eight_bit = (np.arange(24 * 32 * 3) % 256).astype(np.uint8).reshape(24, 32, 3)
  np.testing.assert_array_equal(decode_image(_png(eight_bit)), eight_bit)  # 8-bit files as before
  from jaxprune.inputs import load_image  # the eval's and the hosts' decode path
  np.testing.assert_array_equal(np.asarray(load_image(_png(levels))), rgb)


# ----------------------------------------------------------------------------------- recipes (items 8, 9)


def _refused(module, argv, monkeypatch) -> str:
  monkeypatch.setattr(module, "run", lambda *a, **k: pytest.fail("training started despite a bad flag"))
  with pytest.raises(SystemExit) as e:
    module.main(argv)
  assert isinstance(e.value.code, str), e.value.code  # `python -m` prints it and exits 2 (base.run_cli)
  return _one_line(e.value.code)


@pytest.mark.parametrize("flags, needle", [
    (["--seed", "-1"], f"--seed must lie in {SEED_RANGE}, got -1"),
    (["--lr", "0"], "--lr must be a finite number > 0, got 0"),
    (["--deep-lr", "nan"], "--deep-lr must be a finite number > 0"),
    (["--warmup-steps", "-1"], "--warmup-steps must be >= 0, got -1"),
])
def test_scenes_recipe_refuses_before_training(tmp_path, monkeypatch, flags, needle):
  from jaxprune.recipes import scenes
  line = _refused(scenes, ["--out", str(tmp_path / "ckpt"), *flags], monkeypatch)
  assert line.startswith(scenes.PROG) and needle in line, line


@pytest.mark.parametrize("flags, needle", [
    (["--steps", "0"], "--steps must be >= 1, got 0"),
    (["--batch-size", "4"], "--batch-size 4 is not a multiple of --questions-per-image 8"),
    (["--questions-per-image", "0"], "--questions-per-image must be >= 1, got 0"),
    (["--seed", "-1"], f"--seed must lie in {SEED_RANGE}, got -1"),
    (["--lr", "nan"], "--lr must be a finite number > 0"),
    (["--vision-pretrain-images", "0"], "--vision-pretrain-images must be >= 1"),
    (["--train-limit", "0"], "--train-limit must be >= 1"),
    (["--text-hidden", "30"], "must be multiples of 4 / 4 heads"),
])
def test_train_recipe_validates_every_flag_up_front(tmp_path, monkeypatch, flags, needle):
  from jaxprune.recipes import easyvqa
  line = _refused(easyvqa, ["--out", str(tmp_path / "ckpt"), *flags], monkeypatch)
  assert line.startswith("python -m jaxprune.train") and needle in line, line


@pytest.mark.parametrize("recipe", ["easyvqa", "scenes"])
def test_recipes_never_write_into_a_file_or_a_foreign_directory(tmp_path, monkeypatch, recipe):
  import importlib
  module = importlib.import_module(f"jaxprune.recipes.{recipe}")
  (tmp_path / "file").write_text("keep me")
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "README.md").write_text("someone else's model")
  assert "is a file, not a directory" in _refused(module, ["--out", str(tmp_path / "file")], monkeypatch)
  assert "not empty and not an earlier output of" in _refused(module, ["--out", str(foreign)], monkeypatch)
  own = tmp_path / "own"  # an earlier output of the recipe (its card names the command) may be retrained
  own.mkdir()
  prog = module.PROG if recipe == "scenes" else module.TRAIN_PROG
  (own / "README.md").write_text(f"- Command: `{prog} --out {own}`")
  monkeypatch.setattr(module, "run", lambda *a, **k: "trained")
  assert module.main(["--out", str(own)]) == "trained"
