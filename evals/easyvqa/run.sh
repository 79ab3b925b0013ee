#!/usr/bin/env bash
# The exact commands behind evals/easyvqa/: the no-argument demo (timed, demo/), then the where-to-prune study of
# the easy-VQA model (python -m jaxprune.study): the full test set unpruned with the layer-0 bounds, the blind
# (text-only) control, the sweep on blind-filtered items (every method at both decoder layers where its signal
# exists, `random` with three per-item draws and `uniform` at the same layers, the oracle bounds), then
# analysis.json and README.md. Run from the repository root.
set -euo pipefail
OUT=evals/easyvqa
LOAD=$(cut -d' ' -f1 /proc/loadavg); START=$(date +%s.%N)
rm -rf out/demo && python -m jaxprune.eval
WALL=$(echo "$(date +%s.%N) - $START" | bc)
mkdir -p $OUT/demo && cp out/demo/results.json out/demo/*.png $OUT/demo/
python - "$WALL" "$LOAD" <<'PY'
import json, os, sys
from pathlib import Path
from jaxprune import report
demo = Path("evals/easyvqa/demo")
results = json.loads((demo / "results.json").read_text())
n = next(r["n"] for r in results["rows"] if r["method"] == "none")
lines = ["# The no-argument demo", "", "Command (from a fresh clone, after `bash scripts/install.sh`): "
         f"`python -m jaxprune.eval` (= `{results['command']}`).", "",
         f"The first {n} easy-VQA test questions, not blind-filtered: this is the demo, not the evidence run "
         "(`../README.md`, made by `../run.sh`). Wall time "
         f"{float(sys.argv[1]) / 60:.1f} min ({os.cpu_count()} CPU cores; 1-minute load average {sys.argv[2]} before "
         "the run).", "", *(f"![{p.stem}]({p.name})" for p in sorted(demo.glob("*.png"))), "",
         report.markdown_table(results), ""]
(demo / "README.md").write_text("\n".join(lines) + "\n")
PY
rm -rf $OUT/full $OUT/blind $OUT/sweep  # fresh runs: these directories resume, and the model may have changed
python -m jaxprune.study --model llava-easyvqa --tasks easyvqa --batch-size 64 --limit 4500 --fork-rows 640 \
    --layer 0,1 --keep 4,8,16,32 --seeds 0,1,2 --output-path $OUT
