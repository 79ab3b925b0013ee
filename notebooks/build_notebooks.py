"""Writes the Colab notebooks from the cell sources below (edit here, then run: python notebooks/build_notebooks.py).

Each notebook has one cell tagged `parameters`: SMALL = False runs the real thing on a Colab TPU runtime
(LLaVA-1.5-7B converted from the hub, a DatBench capability); CI appends `SMALL = True` after it and runs the
whole notebook on CPU with the shipped easy-VQA checkpoint, so the notebooks cannot rot. The install cell
installs jaxprune from JAXPRUNE_SOURCE (git URL, wheel or directory; default: the checkout the notebook sits in),
and CI runs it in that local mode.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

# The install cell takes jaxprune from JAXPRUNE_SOURCE (a parameter): a git URL, a wheel or a directory. Left
# empty it uses the checkout the notebook sits in (local runs, CI); on Colab there is none, so it says what to set.
INSTALL = '''import importlib, subprocess, sys
from pathlib import Path
ON_COLAB = "google.colab" in sys.modules
checkout = next((d for d in (Path.cwd(), *Path.cwd().parents)
                 if (d / "pyproject.toml").exists() and (d / "jaxprune" / "__init__.py").exists()), None)
source = JAXPRUNE_SOURCE or (str(checkout) if checkout else "")
if not source:
    raise SystemExit("Set JAXPRUNE_SOURCE in the parameters cell to where jaxprune comes from: a git URL "
                     "(git+https://github.com/<you>/jaxprune), a .whl file or a checkout directory.")
if Path(source).is_dir():
    source = str(Path(source).resolve())
if checkout and source == str(checkout) and not ON_COLAB:  # its environment (scripts/install.sh) has the deps
    pip_args = ["--no-deps", "--no-build-isolation", "-e", source]
elif Path(source).is_dir():
    pip_args = ["-e", source]
elif source.endswith(".whl"):
    pip_args = [source]
else:  # a repository URL: pip wants the git+ scheme
    pip_args = [source if source.startswith("git+") else f"git+{source}"]
if ON_COLAB:  # the TPU build of jax alongside
    pip_args = ["jax[tpu]", *pip_args]
print("installing jaxprune from", source)
subprocess.run([sys.executable, "-m", "pip", "install", "-q", *pip_args], check=True)
if Path(source).is_dir():  # an editable install reaches new processes; this kernel imports the directory now
    sys.path.insert(0, source)
importlib.invalidate_caches()
import jax, jaxprune
print("jaxprune from", Path(jaxprune.__file__).parent, "| devices:", jax.devices())'''

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
        "keeping 64 of 576 visual tokens. Runtime → Change runtime type → TPU, and set `JAXPRUNE_SOURCE` "
        "below to where jaxprune comes from (a git URL or a wheel). On a v2-8 the weights are "
        "sharded over the 8 cores automatically (`--mesh` overrides)."),
    new_code_cell(
        "SMALL = False          # True: the shipped easy-VQA model on CPU (what CI runs)\n"
        "JAXPRUNE_SOURCE = \"\"   # git URL, .whl or directory to install from; \"\" = the checkout this notebook is in\n"
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
        "# Where to prune? The study in one command\n\n"
        "`python -m jaxprune.study` runs the unpruned pass, the blind (text-only) control and, on the items the "
        "blind control gets wrong, every method at every layer where its signal exists, with `random` (a fresh "
        "draw per item, several seeds) and `uniform` at the same layers. Its report says, per budget, which "
        "plans beat the same-layer random after a Holm correction, how `latesim` compares with every other "
        "signal, and where each method's kept tokens lie by band of the image. Read that section before "
        "assuming any method is free of position bias: on the committed scenes study (`evals/scenes`), "
        "`latesim` keeps more of the top band at the early layers."),
    new_code_cell(
        "SMALL = False\n"
        "JAXPRUNE_SOURCE = \"\"   # git URL, .whl or directory to install from; \"\" = the checkout this notebook is in\n"
        "HF_MODEL = \"llava-hf/llava-1.5-7b-hf\"\n"
        "TASKS = \"datbench:general\"\n"
        "LIMIT = 300\n"
        "WORKDIR = \"/content\" if not SMALL else \"out/notebooks\"",
        metadata={"tags": ["parameters"]}),
    new_code_cell(INSTALL),
    new_code_cell(MODEL),
    new_code_cell(
        "from jaxprune.study import cli as study\n"
        "OUT = str(Path(WORKDIR) / \"where_to_prune\")\n"
        "# layers and budgets default to the model's depth and visual token count; SMALL keeps CI's run short\n"
        "small = [\"--tasks\", \"easyvqa\", \"--layer\", \"0,1\", \"--keep\", \"8,16\", \"--method\", \"latesim,fastv\",\n"
        "         \"--seeds\", \"0,1\", \"--limit\", \"40\"]\n"
        "args = [\"--tasks\", TASKS, \"--limit\", str(LIMIT)] if not SMALL else small\n"
        "code = study.main([\"--model\", MODEL, *args, \"--batch-size\", \"8\", \"--output-path\", OUT])\n"
        "assert code == 0"),
    new_code_cell(
        "from IPython.display import Image, Markdown, display\n"
        "display(Markdown((Path(OUT) / \"README.md\").read_text()))\n"
        "pngs = sorted(Path(OUT).glob(\"*.png\"))\n"
        "assert pngs, \"the study wrote no plots\"\n"
        "for png in pngs:\n"
        "    display(Image(filename=str(png)))"),
]


def main(out_dir: Path = HERE) -> None:
  for name, cells in (("quickstart_tpu.ipynb", QUICKSTART), ("where_to_prune.ipynb", SWEEP)):
    for i, cell in enumerate(cells):  # fixed ids: rebuilding an unchanged notebook changes no byte
      cell.id = f"cell-{i}"
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "accelerator": "TPU", "colab": {"provenance": []}})
    nbformat.write(nb, Path(out_dir) / name)
    print(f"wrote {Path(out_dir) / name}")


if __name__ == "__main__":
  main()
