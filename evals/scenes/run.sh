#!/usr/bin/env bash
# The exact commands behind evals/scenes/: the full-test baseline with the lab's acceptance plans, the blind
# (text-only) control, the where-to-prune sweep on blind-filtered items, and the report. Run from the repository
# root (about 50 min on 2 CPU cores: the sweep is 237 plans on 1401 items). Each output directory resumes, so
# they are removed first: the model may have changed. `random` and `uniform` run at every layer the other methods
# prune at (the same-layer controls).
set -euo pipefail
OUT=evals/scenes
rm -rf $OUT/full $OUT/blind $OUT/sweep
# answers are one word: 4 new tokens hold every answer and its end-of-sequence token
COMMON="--model llava-scenes --tasks scenes --batch-size 64 --max-new-tokens 4 --time-batches 1 --no-plots"
python -m jaxprune.eval $COMMON --method none,oracle@0,random@0,anti-oracle@0 --keep 16,64 \
    --output-path $OUT/full
python -m jaxprune.eval $COMMON --blind --output-path $OUT/blind
python -m jaxprune.eval $COMMON --drop-blind $OUT/blind/blind_correct.json \
    --method none,latesim,fastv,embedsim,clsattn,visionzip,divprune,pool,random,uniform,oracle,anti-oracle \
    --layer 0,1,2,4,6,8,10,11 --keep 4,8,16,32 --output-path $OUT/sweep
python evals/scenes/make_report.py
