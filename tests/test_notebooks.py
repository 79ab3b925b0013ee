"""Both Colab notebooks execute top to bottom on CPU with the shipped checkpoint (SMALL = True), their install
cell included (local mode: the checkout they sit in); the install cell's other sources are checked by running
its code with pip stubbed out."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = ["quickstart_tpu.ipynb", "where_to_prune.ipynb"]


def _install_cell(name: str = NAMES[0]) -> str:
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  cells = [c.source for c in nb.cells if c.cell_type == "code" and "JAXPRUNE_SOURCE or" in c.source]
  assert len(cells) == 1, "exactly one install cell"
  return cells[0]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_on_the_shipped_checkpoint(name, tmp_path, monkeypatch):
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  params = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
  assert len(params) == 1, "exactly one cell tagged `parameters`"
  assert 'JAXPRUNE_SOURCE = ""' in nb.cells[params[0]].source
  override = nbformat.v4.new_code_cell(f"SMALL = True\nWORKDIR = {str(tmp_path)!r}")
  nb.cells.insert(params[0] + 1, override)
  # The install cell really runs pip (local mode: an editable install of this checkout), offline and into a
  # throwaway prefix, so the shared environment is left as it was.
  prefix = tmp_path / "prefix"
  monkeypatch.setenv("PIP_PREFIX", str(prefix))
  monkeypatch.setenv("PIP_NO_INDEX", "1")
  NotebookClient(nb, timeout=900, kernel_name="python3",
                 resources={"metadata": {"path": str(REPO)}}).execute()
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
  assert not errors
  install = next(c for c in nb.cells if c.cell_type == "code" and "JAXPRUNE_SOURCE or" in c.source)
  printed = "".join(o.get("text", "") for o in install.outputs)
  assert f"installing jaxprune from {REPO}" in printed
  assert f"jaxprune from {REPO / 'jaxprune'}" in printed
  assert list(prefix.rglob("jaxprune-*.dist-info")), "pip installed nothing into the prefix"


def test_committed_notebooks_match_their_builder(tmp_path):
  spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOKS / "build_notebooks.py")
  builder = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(builder)
  builder.main(tmp_path)
  for name in NAMES:
    assert (tmp_path / name).read_text() == (NOTEBOOKS / name).read_text(), \
        f"{name} is stale: run python notebooks/build_notebooks.py"


def _run_install_cell(source: str, *, colab: bool, cwd: Path, monkeypatch) -> list[list[str]]:
  """Runs the install cell's code here with pip stubbed; -> the pip command lines it ran."""
  commands = []
  monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: commands.append(cmd))
  monkeypatch.setattr(sys, "path", list(sys.path))  # the cell prepends a directory source
  if colab:
    import jax  # noqa: F401  imported before google.colab is faked: jax probes it at import
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
  monkeypatch.chdir(cwd)
  exec(_install_cell(), {"JAXPRUNE_SOURCE": source})
  return commands


def test_install_cell_on_colab_without_a_source_says_what_to_set(tmp_path, monkeypatch):
  with pytest.raises(SystemExit) as stop:
    _run_install_cell("", colab=True, cwd=tmp_path, monkeypatch=monkeypatch)  # tmp_path is in no checkout
  message = str(stop.value.code)
  assert "\n" not in message and message.startswith("Set JAXPRUNE_SOURCE in the parameters cell")


@pytest.mark.parametrize("source, colab, expected", [
    ("https://example.org/me/jaxprune.git", True, ["jax[tpu]", "git+https://example.org/me/jaxprune.git"]),
    ("git+https://example.org/me/jaxprune@v1", False, ["git+https://example.org/me/jaxprune@v1"]),
    ("dist/jaxprune-0.1.0-py3-none-any.whl", False, ["dist/jaxprune-0.1.0-py3-none-any.whl"]),
    (str(REPO), True, ["jax[tpu]", "-e", str(REPO)]),  # a checkout on Colab: its dependencies too
])
def test_install_cell_takes_the_source_from_its_parameter(source, colab, expected, tmp_path, monkeypatch):
  commands = _run_install_cell(source, colab=colab, cwd=tmp_path, monkeypatch=monkeypatch)
  assert commands == [[sys.executable, "-m", "pip", "install", "-q", *expected]]


def test_install_cell_defaults_to_the_checkout_it_sits_in(monkeypatch):
  commands = _run_install_cell("", colab=False, cwd=NOTEBOOKS, monkeypatch=monkeypatch)
  assert commands == [[sys.executable, "-m", "pip", "install", "-q",
                       "--no-deps", "--no-build-isolation", "-e", str(REPO)]]
