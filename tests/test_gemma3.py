"""Flax Gemma 3 against transformers on a tiny random config (float32, saved and reloaded, no downloads).

The tiny config keeps what makes Gemma 3 differ: sliding and global layers (window 6, shorter than an image's
16 soft tokens, so the window cuts through the bidirectional image block), two RoPE bases with linear scaling on
the global one, query_pre_attn_scalar != head_dim, QK-norm and (1 + w) norms with non-zero weights.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from flax import nnx
from PIL import Image

from jaxprune.convert.__main__ import main as convert_main
from jaxprune.convert.hf import load_model
from jaxprune.core import decoding
from jaxprune.generate import Generator, pad_batch
from jaxprune.models.gemma3 import HUB_CONFIGS, SHAPES, Gemma3Config, Gemma3Host

TOL = 1e-4
IMAGE, BOI, EOI = 150, 151, 152
NV = 16  # soft tokens per image (a 4x4 grid pooled from 8x8 patches)
LAYER_TYPES = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
WINDOW = 6
BUCKET = 48  # one length bucket for every test: each batch size compiles `forward` once


def hf_config():
  from transformers import Gemma3Config as HFGemma3Config
  vision = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, image_size=32, patch_size=4, layer_norm_eps=1e-6, vision_use_head=False)
  text = dict(vocab_size=160, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24, sliding_window=WINDOW,
              layer_types=LAYER_TYPES, rope_theta=10000.0, rope_local_base_freq=100.0,
              rope_scaling={"rope_type": "linear", "factor": 4.0}, max_position_embeddings=512, pad_token_id=0,
              bos_token_id=2, eos_token_id=1)
  return HFGemma3Config(vision_config=vision, text_config=text, mm_tokens_per_image=NV, image_token_index=IMAGE,
                      boi_token_index=BOI, eoi_token_index=EOI)


def randomize(hf, scale=0.15):
  """transformers' init (std 0.02, zero-centred norms = identity) hides mapping mistakes under 1e-4: larger random
  weights and norms make every tensor matter."""
  with torch.no_grad():
    for name, param in hf.named_parameters():
      if "vision_tower" in name and ("layer_norm" in name or "post_layernorm" in name):  # SigLIP LayerNorms
        param.copy_((1 + 0.2 * torch.randn_like(param)) if name.endswith("weight") else 0.1 * torch.randn_like(param))
      elif "norm" in name:
        param.normal_(0.0, 0.2)  # Gemma's zero-centred (1 + w) norms
      else:
        param.normal_(0.0, scale if param.dim() > 1 else 0.1)


def save_tiny_gemma(path, seed: int):
  """A tiny random Gemma 3 saved to `path` and reloaded as transformers runs a checkpoint (eager attention, so
  attention weights can be read) -> the HF torch model in eval mode."""
  from transformers import Gemma3ForConditionalGeneration
  torch.manual_seed(seed)
  hf = Gemma3ForConditionalGeneration(hf_config()).eval()
  randomize(hf)
  hf.save_pretrained(path)
  hf = Gemma3ForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
  hf.set_attn_implementation("eager")
  return hf


@pytest.fixture(scope="session")
def tiny_gemma(tmp_path_factory):
  """(HF torch model, jaxprune Loaded, saved directory), both models from the same saved directory."""
  path = tmp_path_factory.mktemp("tiny_gemma3")
  hf = save_tiny_gemma(path, seed=0)
  return hf, load_model(path, dtype="float32"), path


def pixels_for(n, seed):
  return np.random.RandomState(seed).randn(n, 3, 32, 32).astype(np.float32)


def prompt(n_before, n_after, seed, image=True):
  """bos, text, [<start_of_image>, 16 soft tokens, <end_of_image>], text."""
  rng = np.random.RandomState(seed)
  ids = [2] + rng.randint(3, 140, n_before).tolist()
  if image:
    ids += [BOI] + [IMAGE] * NV + [EOI]
  return ids + rng.randint(3, 140, n_after).tolist()


def hf_logits(hf, ids, pixels=None):
  ids_t = torch.tensor([ids])
  kwargs = {} if pixels is None else dict(pixel_values=torch.tensor(pixels), token_type_ids=(ids_t == IMAGE).long())
  with torch.no_grad():
    return hf(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), **kwargs).logits[0].numpy()


@nnx.jit
def forward(model, inputs):
  """Unpruned prefill -> logits [B, L, V]."""
  tokens, _ = model.input_tokens(inputs)
  h, _, _ = decoding.prefill(model.language_model, tokens, extra_slots=0)
  return model.language_model.logits(h)


def test_config_reads_both_rope_layouts_and_the_weight_map(tiny_gemma):
  hf, loaded, _ = tiny_gemma
  cfg = loaded.config
  assert loaded.family.name == "gemma3" and cfg.visual_tokens_per_image == NV and cfg.grid == (4, 4)
  assert cfg.text.layer_types == tuple(LAYER_TYPES) and cfg.text.sliding_window == WINDOW
  assert (cfg.text.rope_theta, cfg.text.local_rope_theta) == (10000.0, 100.0)
  assert dict(cfg.text.rope_scaling) == {"rope_type": "linear", "factor": 4.0} and cfg.text.local_rope_scaling is None
  assert cfg.text.query_pre_attn_scalar == 24 and cfg.text.tie_word_embeddings and cfg.pool_kernel == 2
  # the hub layout (rope_theta / rope_local_base_freq / rope_scaling, sliding_window_pattern) reads the same way
  hub = hf_config().to_dict()
  text = {k: v for k, v in hub["text_config"].items() if k not in ("rope_parameters", "layer_types")}
  hub["text_config"] = dict(text, rope_theta=10000.0, rope_local_base_freq=100.0, sliding_window_pattern=2,
                            rope_scaling={"rope_type": "linear", "factor": 4.0})
  assert Gemma3Config.from_hf(hub).text == cfg.text
  big = SHAPES["gemma-3-4b"]
  assert big.text.layer_types[5] == "full_attention" and big.text.layer_types[:5] == ("sliding_attention",) * 5
  assert big.visual_tokens_per_image == 256 and big.pool_kernel == 4 and big.text.num_layers == 34
  lm = loaded.model.language_model
  np.testing.assert_array_equal(np.asarray(lm.layers[2].attn.k_norm.weight[...]),
                                hf.model.language_model.layers[2].self_attn.k_norm.weight.detach().numpy())
  np.testing.assert_array_equal(np.asarray(loaded.model.projector.mm_input_projection[...]),
                                hf.model.multi_modal_projector.mm_input_projection_weight.detach().numpy())


def test_released_configs_read_as_transformers_reads_them():
  """The hub config.json files list only what differs from transformers' defaults; ours fills the same defaults
  (heads, head_dim, vocab, RoPE bases, every 6th layer global)."""
  from transformers import Gemma3Config as HFGemma3Config
  for hub, d in HUB_CONFIGS.items():
    full = HFGemma3Config(**{k: v for k, v in d.items() if k != "model_type"}).to_dict()
    assert Gemma3Config.from_hf(full) == Gemma3Config.from_hf(d), hub


def test_bad_config_is_one_line():
  d = hf_config().to_dict()
  d["text_config"]["attn_logit_softcapping"] = 50.0
  with pytest.raises(ValueError, match="attn_logit_softcapping") as e:
    Gemma3Config.from_hf(d)
  assert "\n" not in str(e.value)
  d = hf_config().to_dict()
  d["mm_tokens_per_image"] = 15
  with pytest.raises(ValueError, match="mm_tokens_per_image=15"):
    Gemma3Config.from_hf(d)


def test_logits_one_image(tiny_gemma):
  hf, loaded, _ = tiny_gemma
  ids, pixels = prompt(3, 9, seed=1), pixels_for(1, seed=1)
  inputs = pad_batch([ids], pad_id=0, multiple=BUCKET, pixels=pixels)
  ours = np.asarray(forward(loaded.model, inputs))[0, -len(ids):]
  assert np.abs(ours - hf_logits(hf, ids, pixels)).max() <= TOL


def test_batch_of_three_each_equals_its_run_alone(tiny_gemma):
  hf, loaded, _ = tiny_gemma
  prompts = [prompt(2, 12, seed=2), prompt(7, 4, seed=3), prompt(1, 20, seed=4)]
  pixels = pixels_for(3, seed=5)
  inputs = pad_batch(prompts, pad_id=0, multiple=BUCKET, pixels=pixels)
  logits = np.asarray(forward(loaded.model, inputs))
  for i, ids in enumerate(prompts):
    assert np.abs(logits[i, -len(ids):] - hf_logits(hf, ids, pixels[i:i + 1])).max() <= TOL, i


def test_text_only(tiny_gemma):
  hf, loaded, _ = tiny_gemma
  prompts = [prompt(14, 0, seed=6, image=False), prompt(5, 0, seed=7, image=False)]
  logits = np.asarray(forward(loaded.model, pad_batch(prompts, pad_id=0, multiple=BUCKET)))
  for i, ids in enumerate(prompts):
    assert np.abs(logits[i, -len(ids):] - hf_logits(hf, ids)).max() <= TOL, i


def test_cached_decode_equals_recompute_and_transformers_for_16_steps(tiny_gemma):
  """16 greedy steps (well past the window of 6) with the KV cache == one uncached prefill of prompt + generated
  tokens, ours and transformers', read at every generated position."""
  hf, loaded, _ = tiny_gemma
  steps = 16
  prompts = [prompt(3, 5, seed=8), prompt(1, 2, seed=9), prompt(6, 1, seed=10)]
  pixels = pixels_for(3, seed=10)
  out = Generator(loaded.model, max_new_tokens=steps, eos_ids=(), pad_id=0)(
      pad_batch(prompts, pad_id=0, multiple=BUCKET, pixels=pixels), keep_logits=True)
  generated, logits = np.asarray(out["tokens"]), np.asarray(out["logits"])
  longer = [p + generated[i, :steps - 1].tolist() for i, p in enumerate(prompts)]
  ref = np.asarray(forward(loaded.model, pad_batch(longer, pad_id=0, multiple=BUCKET, pixels=pixels)))[:, -steps:]
  assert np.abs(logits - ref).max() <= TOL
  for i, ids in enumerate(longer):
    assert np.abs(logits[i] - hf_logits(hf, ids, pixels[i:i + 1])[-steps:]).max() <= TOL, i


def test_load_model_and_the_orbax_round_trip_match_transformers(tiny_gemma, tmp_path):
  hf, loaded, path = tiny_gemma
  assert convert_main(["--hf", str(path), "--out", str(tmp_path / "orbax"), "--dtype", "float32"]) == 0
  restored = load_model(tmp_path / "orbax")
  assert restored.family.name == "gemma3" and restored.config == loaded.config
  ids, pixels = prompt(4, 6, seed=11), pixels_for(1, seed=12)
  ours = np.asarray(forward(restored.model, pad_batch([ids], pad_id=0, multiple=BUCKET, pixels=pixels)))[0, -len(ids):]
  assert np.abs(ours - hf_logits(hf, ids, pixels)).max() <= TOL


# ------------------------------------------------------------------------------------------- host side

_WORDS = ["what", "color", "is", "the", "shape", "?", "user", "model"]
# a Gemma-style chat template (the checkpoint's own file plays this part in a real run)
_TEMPLATE = ("{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
             "{% for item in message['content'] %}{% if item['type'] == 'image' %}<start_of_image>"
             "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}{% endfor %}<end_of_turn>\n"
             "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


@pytest.fixture(scope="module")
def gemma_processor():
  return processor_parts()


def processor_parts():
  """A word-level tokenizer with Gemma's special tokens at the tiny config's ids, Gemma3ImageProcessor at 32 px,
  and the Gemma3Processor transformers builds from them (no hub)."""
  from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
  from transformers import Gemma3ImageProcessor, Gemma3Processor, PreTrainedTokenizerFast
  vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, **{w: 10 + i for i, w in enumerate(_WORDS)},
           "<start_of_turn>": 140, "<end_of_turn>": 141, "<image_soft_token>": IMAGE, "<start_of_image>": BOI,
           "<end_of_image>": EOI}
  backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  backend.add_special_tokens([AddedToken(t, special=True) for t in vocab if t.startswith("<")])
  tokenizer = PreTrainedTokenizerFast(
      tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
      extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                            "image_token": "<image_soft_token>"}, chat_template=_TEMPLATE)
  image_processor = Gemma3ImageProcessor(size={"height": 32, "width": 32})
  processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_length=NV,
                              chat_template=_TEMPLATE)
  return tokenizer, image_processor, processor


def test_host_prompt_and_pixels_equal_the_processor_and_logits_match(tiny_gemma, gemma_processor):
  """Gemma3Host (given the tokenizer and the image processor, as the eval runner passes them) renders the same ids
  as Gemma3Processor.apply_chat_template, the same pixels, an exact question span, and through the model the
  same logits as transformers on the processor's output."""
  hf, loaded, _ = tiny_gemma
  tokenizer, image_processor, processor = gemma_processor
  image = Image.fromarray((np.random.RandomState(13).rand(40, 56, 3) * 255).astype(np.uint8))
  question = "what color is the shape ?"
  messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]
  ref = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                      return_tensors="np")
  host = Gemma3Host(loaded.config, tokenizer, image_processor)
  p = host.prompt(question, with_image=True)
  assert p.ids == ref["input_ids"][0].tolist() and p.ids.count(IMAGE) == NV and p.ids.count(BOI) == 1
  assert tokenizer.decode(p.ids[slice(*p.question_span)]) == question
  pixels = host.pixels([image])
  np.testing.assert_array_equal(pixels, ref["pixel_values"])
  inputs = host.batch([p], host.join([pixels]), batch_size=1, bucket=BUCKET, pad_id=0)
  assert np.asarray(inputs.query)[0].sum() == len(question.split())
  ours = np.asarray(forward(loaded.model, inputs))[0, -len(p.ids):]
  with torch.no_grad():
    theirs = hf(input_ids=torch.tensor(ref["input_ids"]), pixel_values=torch.tensor(ref["pixel_values"]),
                token_type_ids=torch.tensor(ref["token_type_ids"])).logits[0].numpy()
  assert np.abs(ours - theirs).max() <= TOL
  text_only = host.prompt(question, with_image=False)
  assert IMAGE not in text_only.ids and BOI not in text_only.ids


def test_host_without_a_chat_template_is_one_line(tiny_gemma, gemma_processor):
  _, loaded, _ = tiny_gemma
  tokenizer, image_processor, _ = gemma_processor
  plain = copy.deepcopy(tokenizer)  # the same tokenizer without its template
  plain.chat_template = None
  with pytest.raises(ValueError, match="chat template") as e:
    Gemma3Host(loaded.config, plain, image_processor)
  assert "\n" not in str(e.value)
