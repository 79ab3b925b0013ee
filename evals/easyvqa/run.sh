#!/usr/bin/env bash
# The exact commands behind evals/easyvqa/: the full-test baseline, the blind (text-only) control, the sweep on
# blind-filtered items, and the demo. Run from the repository root; about 15 minutes on 2 CPU cores.
set -euo pipefail
OUT=evals/easyvqa
python -m jaxprune.eval --model llava-easyvqa --tasks easyvqa --method none --batch-size 32 \
    --output-path $OUT/full --no-plots
python -m jaxprune.eval --model llava-easyvqa --tasks easyvqa --blind --batch-size 32 \
    --output-path $OUT/blind --no-plots
python -m jaxprune.eval --model llava-easyvqa --tasks easyvqa --drop-blind $OUT/blind/blind_correct.json \
    --method none,latesim@1,fastv@1,clsattn@0,embedsim@0,divprune@0,visionzip@0,random@0,uniform@0 \
    --keep 4,8,16,32 --limit 3000 --batch-size 32 --output-path $OUT/sweep
python -m jaxprune.eval --model llava-easyvqa --tasks easyvqa --drop-blind $OUT/blind/blind_correct.json \
    --method latesim,fastv,random --layer 0,1 --keep 4,8,16,32 --limit 3000 --batch-size 32 \
    --output-path $OUT/where
python evals/easyvqa/make_report.py
