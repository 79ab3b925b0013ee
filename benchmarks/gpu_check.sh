#!/usr/bin/env bash
# The GPU check in one command (see benchmarks/gpu_check.py): on a GPU box it finishes within 8 minutes and
# writes evals/bench/gpu_check.{json,md}; `--dry-run` runs the same code at tiny widths on any CPU (CI).
#   bash benchmarks/gpu_check.sh [--dry-run] [--out-dir DIR] [--budget-s 450] [--runs N]
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
# The script enforces its own budget per stage; this outer limit only guards against a hung interpreter.
timeout --signal=TERM --kill-after=10 480 python benchmarks/gpu_check.py "$@"
rc=$?
if [ $rc -eq 124 ]; then
  echo "gpu_check: hit the 8-minute outer limit; stage files gpu_check_*.json keep partial results" >&2
fi
exit $rc
