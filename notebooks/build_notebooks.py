"""Writes the Colab notebooks from the cell sources below (edit here, then run: python notebooks/build_notebooks.py).

Each notebook has one cell tagged `parameters`: SMALL = False runs the real thing on a Colab TPU runtime
(LLaVA-1.5-7B converted from the hub, a DatBench capability); CI appends `SMALL = True` after it and runs the
whole notebook on CPU with the shipped easy-VQA checkpoint, so the notebooks cannot rot.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

INSTALL = '''import subprocess, sys
if "google.colab" in sys.modules:  # Colab TPU runtime: install jaxprune with TPU jax
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "jax[tpu]",
                    "jaxprune @ git+https://github.com/jaxprune/jaxprune"], check=True)
import jax
print(jax.devices())'''

MODEL = '''from pathlib import Path
if SMALL:  # the easy-VQA model shipped in checkpoints/: runs anywhere, offline
    MODEL, TASKS = "llava-easyvqa", "easyvqa"
else:      # convert once from the hub to an orbax checkpoint (bf16), then every run loads that
    out = Path(WORKDIR) / "llava-1.5-7b"
    if not (out / "jaxprune.json").exists():
        subprocess.run([sys.executable, "-m", "jaxprune.convert", "--hf", HF_MODEL, "--out", str(out)], check=True)
    MODEL = str(out)
print(MODEL, TASKS)'''

QUICKSTART = [
    new_markdown_cell(
        "# jaxprune quickstart (Colab TPU)\n\n"
        "Evaluate LLaVA-1.5-7B on one DatBench capability: unpruned vs **latesim** (cosine similarity of "
        "visual and question hidden states at a later layer — our method) vs **FastV** (text→image attention), "
        "keeping 64 of 576 visual tokens. Runtime → Change runtime type → TPU. On a v2-8 the weights are "
        "sharded over the 8 cores automatically (`--mesh` overrides)."),
    new_code_cell(
        "SMALL = False          # True: the shipped easy-VQA model on CPU (what CI runs)\n"
        "HF_MODEL = \"llava-hf/llava-1.5-7b-hf\"\n"
        "TASKS = \"datbench:chart\"\n"
        "LIMIT = 200\n"
        "KEEP, LAYER = 64, 2\n"
        "WORKDIR = \"/content\" if not SMALL else \"out/notebooks\"",
        metadata={"tags": ["parameters"]}),
    new_code_cell(INSTALL),
    new_code_cell(MODEL),
    new_markdown_cell("## Evaluate\nThe baseline, then both methods at the same budget and layer. Results and "
                      "samples land in `OUT`; rerunning resumes instead of starting over."),
    new_code_cell(
        "from jaxprune import eval as jeval\n"
        "OUT = str(Path(WORKDIR) / \"quickstart\")\n"
        "keep = KEEP if not SMALL else 32\n"
        "layer = LAYER if not SMALL else 1\n"
        "code = jeval.main([\"--model\", MODEL, \"--tasks\", TASKS, \"--limit\", str(LIMIT if not SMALL else 40),\n"
        "                   \"--method\", \"none,latesim,fastv\", \"--layer\", str(layer), \"--keep\", str(keep),\n"
        "                   \"--output-path\", OUT, \"--batch-size\", \"8\"])\n"
        "assert code == 0"),
    new_code_cell(
        "import json\n"
        "import matplotlib.pyplot as plt\n"
        "rows = json.loads((Path(OUT) / \"results.json\").read_text())[\"rows\"]\n"
        "labels = [r[\"plan\"] for r in rows]\n"
        "acc = [100 * r[\"accuracy\"] for r in rows]\n"
        "err = [[100 * (r[\"accuracy\"] - r[\"ci_low\"]) for r in rows], [100 * (r[\"ci_high\"] - r[\"accuracy\"]) for r in rows]]\n"
        "fig, ax = plt.subplots(figsize=(6, 3))\n"
        "ax.bar(labels, acc, yerr=err, capsize=4, color=[\"gray\", \"tab:blue\", \"tab:orange\"][:len(rows)])\n"
        "ax.set_ylabel(\"accuracy (%)\")\n"
        "ax.set_title(f\"{TASKS}: {rows[0]['n']} items, 95% bootstrap CI\")\n"
        "plt.show()\n"
        "for r in rows:\n"
        "    print(f\"{r['plan']:<16} acc {100 * r['accuracy']:5.1f}%  prefill FLOPs {r['flops'] / 1e9:8.2f} G\")"),
]

SWEEP = [
    new_markdown_cell(
        "# Where to prune? A layer × keep sweep\n\n"
        "For each method, accuracy at every (layer, kept tokens) pair: the heatmap shows where pruning is "
        "cheap and where it hurts. The kept-token maps show *which* grid cells survive — attention-based "
        "scorers drift toward the bottom rows (RoPE's recency bias); similarity-based latesim does not."),
    new_code_cell(
        "SMALL = False\n"
        "HF_MODEL = \"llava-hf/llava-1.5-7b-hf\"\n"
        "TASKS = \"datbench:general\"\n"
        "LIMIT = 300\n"
        "LAYERS = \"0,2,8,16,24\"\n"
        "KEEPS = \"32,64,128,192\"\n"
        "WORKDIR = \"/content\" if not SMALL else \"out/notebooks\"",
        metadata={"tags": ["parameters"]}),
    new_code_cell(INSTALL),
    new_code_cell(MODEL),
    new_code_cell(
        "from jaxprune import eval as jeval\n"
        "OUT = str(Path(WORKDIR) / \"where_to_prune\")\n"
        "layers, keeps = (LAYERS, KEEPS) if not SMALL else (\"0,1\", \"16,64\")\n"
        "code = jeval.main([\"--model\", MODEL, \"--tasks\", TASKS, \"--limit\", str(LIMIT if not SMALL else 40),\n"
        "                   \"--method\", \"none,latesim,fastv,random\", \"--layer\", layers, \"--keep\", keeps,\n"
        "                   \"--output-path\", OUT, \"--batch-size\", \"8\"])\n"
        "assert code == 0"),
    new_code_cell(
        "from IPython.display import Image, display\n"
        "pngs = sorted(Path(OUT).glob(\"where_to_prune_*.png\")) + sorted(Path(OUT).glob(\"kept_tokens_*.png\"))\n"
        "assert pngs, \"the sweep wrote no heatmaps\"\n"
        "for png in pngs:\n"
        "    display(Image(filename=str(png)))"),
]


def main() -> None:
  for name, cells in (("quickstart_tpu.ipynb", QUICKSTART), ("where_to_prune.ipynb", SWEEP)):
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "accelerator": "TPU", "colab": {"provenance": []}})
    nbformat.write(nb, HERE / name)
    print(f"wrote {HERE / name}")


if __name__ == "__main__":
  main()
