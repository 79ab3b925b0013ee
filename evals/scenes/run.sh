#!/usr/bin/env bash
# The exact command behind evals/scenes/: the where-to-prune study of the scenes lab model (python -m
# jaxprune.study): the full test set unpruned with the layer-0 bounds, the blind (text-only) control, the sweep
# on blind-filtered items (every method at every layer where its signal exists, `random` with three per-item
# draws and `uniform` at the same layers, the oracle bounds), then analysis.json and README.md. Run from the
# repository root. The stage directories resume, so they are removed first: the model may have changed.
set -euo pipefail
OUT=evals/scenes
rm -rf $OUT/full $OUT/blind $OUT/sweep
# answers are one word: 4 new tokens hold every answer and its end-of-sequence token. --fork-rows 640: ten
# plans per stacked continuation (one program each): compiles dominated this study (benchmarks/study_cost.py)
python -m jaxprune.study --model llava-scenes --tasks scenes --batch-size 64 --max-new-tokens 4 \
    --fork-rows 640 --layer 0,1,2,4,6,8,10,11 --keep 4,8,16,32 --seeds 0,1,2 --output-path $OUT
