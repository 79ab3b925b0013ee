"""Both Colab notebooks execute top to bottom on CPU with the shipped checkpoint (SMALL = True)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("name", ["quickstart_tpu.ipynb", "where_to_prune.ipynb"])
def test_notebook_runs_on_the_shipped_checkpoint(name, tmp_path):
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  params = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
  assert len(params) == 1, "exactly one cell tagged `parameters`"
  override = nbformat.v4.new_code_cell(f"SMALL = True\nWORKDIR = {str(tmp_path)!r}")
  nb.cells.insert(params[0] + 1, override)
  NotebookClient(nb, timeout=900, kernel_name="python3",
                 resources={"metadata": {"path": str(NOTEBOOKS.parent)}}).execute()
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
  assert not errors
