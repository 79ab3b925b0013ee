"""Prompt construction shared by training and evaluation, so both see token-for-token the same prompts.

LLaVA-1.5's conversation format: `USER: <image>\\n{question} ASSISTANT:`. The `<image>` placeholder becomes
Nv image tokens (as HF's LlavaProcessor expands it). A blind prompt (DatBench's text-only control) removes
the image from the prompt entirely — no placeholder, no pixels — rather than showing a blank image.
Pieces are tokenized separately so the question's token span is known exactly: text-aware scorers
(`latesim`, `fastv[query=question]`) read those tokens.
"""

from __future__ import annotations

import dataclasses

USER, ASSISTANT = "USER:", "ASSISTANT:"


@dataclasses.dataclass(frozen=True)
class Prompt:
  ids: list[int]
  question_span: tuple[int, int]  # [start, end) of the question tokens in ids


def _encode(tokenizer, text: str) -> list[int]:
  return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def build_prompt(tokenizer, question: str, *, image_token_id: int | None, num_image_tokens: int,
                 bos: bool = True, num_images: int = 1) -> Prompt:
  """Token ids of `USER: <image>\\n{question} ASSISTANT:`; image_token_id=None builds the blind prompt. Several
  images go first, each placeholder on its own line (`USER: <image>\\n<image>\\n{question}`), as llava-hf's
  chat template renders them."""
  ids = [tokenizer.bos_token_id] if bos and tokenizer.bos_token_id is not None else []
  ids += _encode(tokenizer, USER)
  for image in range(num_images if image_token_id is not None else 0):
    ids += (_encode(tokenizer, "\n") if image else []) + [image_token_id] * num_image_tokens
  ids += _encode(tokenizer, "\n")
  start = len(ids)
  ids += _encode(tokenizer, question.strip())
  end = len(ids)
  ids += _encode(tokenizer, " " + ASSISTANT)
  return Prompt(ids, (start, end))


# ---------------------------------------------------------------------- checkpoints with their own chat template

_QUESTION_MARK = "\x00QUESTION\x00"  # stands in for the question while a template renders


def chat_prompt(template, question: str, num_images: int) -> str:
  """The checkpoint's own chat template (a processor or tokenizer with one) for one user turn: images first, then
  the text."""
  content = [{"type": "image"}] * num_images + [{"type": "text", "text": question}]
  return template.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                      tokenize=False)


def chat_halves(template, num_images: int) -> tuple[str, str]:
  """The rendered chat prompt before and after the question (the template must render it exactly once)."""
  text = chat_prompt(template, _QUESTION_MARK, num_images)
  if text.count(_QUESTION_MARK) != 1:
    raise ValueError("the chat template does not render the user's text exactly once")
  before, after = text.split(_QUESTION_MARK)
  return before, after


def encode_around(tokenizer, before: str, question: str, after: str) -> Prompt:
  """Tokenize in three pieces around the question, so its token span is exact."""
  ids = _encode(tokenizer, before)
  start = len(ids)
  ids += _encode(tokenizer, question.strip())
  return Prompt(ids + _encode(tokenizer, after), (start, len(ids)))
