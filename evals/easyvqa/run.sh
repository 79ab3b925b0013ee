#!/usr/bin/env bash
# The exact commands behind evals/easyvqa/: the full-test baseline, the blind (text-only) control, the sweep on
# blind-filtered items (latesim at both decoder layers: where to prune), and the report. Run from the repository
# root. Random runs at every layer another method prunes at, so each method is compared with random at its layer.
set -euo pipefail
OUT=evals/easyvqa
# the no-argument demo (writes out/demo), timed
LOAD=$(cut -d' ' -f1 /proc/loadavg); START=$(date +%s.%N)
rm -rf out/demo && python -m jaxprune.eval
WALL=$(echo "$(date +%s.%N) - $START" | bc)
mkdir -p $OUT/demo && cp out/demo/results.json out/demo/*.png $OUT/demo/
python -c "import json, os; json.dump({'wall_seconds': $WALL, 'load_before': $LOAD, \
    'machine': f'{os.cpu_count()} CPU cores'}, open('$OUT/demo/timing.json', 'w'))"
rm -rf $OUT/full $OUT/blind $OUT/sweep  # fresh runs: these directories resume, and the model may have changed
python -m jaxprune.eval --model llava-easyvqa --tasks easyvqa --method none --batch-size 64 \
    --output-path $OUT/full --no-plots
python -m jaxprune.eval --model llava-easyvqa --tasks easyvqa --blind --batch-size 64 \
    --output-path $OUT/blind --no-plots
python -m jaxprune.eval --model llava-easyvqa --tasks easyvqa --drop-blind $OUT/blind/blind_correct.json \
    --method none,latesim@0,latesim@1,fastv@1,clsattn@0,embedsim@0,divprune@0,visionzip@0,random@0,random@1,uniform@0 \
    --keep 4,8,16,32 --limit 4500 --batch-size 64 --output-path $OUT/sweep
python evals/easyvqa/make_report.py
