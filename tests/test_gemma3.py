"""Gemma 3's own checks on its tiny random checkpoint (tests/families/gemma3.py; the family-free ones, parity with
transformers included, are in tests/families/test_conformance.py): reading both config layouts and the weight map,
the host side against Gemma3Processor, and layer-0 pruning against transformers on the kept sequence (the
bidirectional image block and the sliding window counted over kept tokens)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from families.base import unpruned_logits
from families.gemma3 import (
  BOI,
  BUCKET,
  EOI,
  IMAGE,
  LAYER_TYPES,
  NV,
  WINDOW,
  hf_config,
  pixels_for,
  prompt,
)
from flax import nnx
from PIL import Image

from jaxprune.generate import pad_batch, prefill
from jaxprune.models.gemma3 import HUB_CONFIGS, SHAPES, Gemma3Config, Gemma3Host
from jaxprune.prune.pipeline import Pruner

TOL = 1e-4
QUESTION = 4  # the last 4 tokens of a prompt are its question


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
  ours = np.asarray(unpruned_logits(loaded.model, inputs))[0, -len(p.ids):]
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


# ------------------------------------------------------------------------------------------- pruning


def test_layer0_pruning_equals_transformers_on_the_kept_sequence(tiny_gemma):
  """At K = 0 the LLM never sees the dropped tokens: jaxprune's logits equal transformers run on the kept
  sequence itself (inputs_embeds of text + kept soft tokens, token_type_ids marking the kept soft tokens), so
  the kept tokens of the image see each other both ways and the window (6, crossing the image) counts kept
  tokens. Two prompts of different lengths, left-padded together."""
  hf, loaded, _ = tiny_gemma
  model, cfg = loaded.model, loaded.config
  prompts = [prompt(3, 6 + QUESTION, seed=27), prompt(1, 2 + QUESTION, seed=28)]
  inputs = pad_batch(prompts, pad_id=0, multiple=BUCKET, pixels=pixels_for(2, seed=29),
                     query_spans=[(len(p) - QUESTION, len(p)) for p in prompts])
  pruner = Pruner.build("random@0:7[seed=1]", cfg)

  @nnx.jit
  def run(model, inputs):
    tokens, _ = model.input_tokens(inputs)
    _, _, kept, h = prefill(model, inputs, extra_slots=0, prune_points_fn=pruner)
    return tokens.hidden, kept, model.language_model.logits(h)

  embeds, kept, logits = run(model, inputs)
  for b, ids in enumerate(prompts):
    valid = np.asarray(kept.valid[b])
    is_image = np.asarray(kept.image[b])[valid]
    slots = np.asarray(kept.patch[b])[valid][is_image]
    assert is_image.sum() == 7 and len(set(slots.tolist())) == 7
    # the kept sequence in the original embeddings: all text, and the soft tokens of the kept slots
    offset = BUCKET - len(ids)
    keep = [offset + i for i in range(len(ids)) if ids[i] != IMAGE or (i - ids.index(IMAGE)) in set(slots.tolist())]
    x = torch.tensor(np.asarray(embeds[b])[keep][None])
    types = torch.tensor((np.asarray(ids)[np.asarray(keep) - offset] == IMAGE)[None]).long()
    with torch.no_grad():
      ref = hf(inputs_embeds=x, attention_mask=torch.ones(types.shape, dtype=torch.long), token_type_ids=types).logits
    assert np.abs(np.asarray(logits[b])[valid] - ref[0].numpy()).max() <= TOL
