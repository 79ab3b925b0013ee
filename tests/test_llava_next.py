"""LLaVA-NeXT's own checks on its tiny random checkpoint (tests/families/llava_next.py; the family-free ones are in
tests/families/test_conformance.py: logits within 1e-4 of `LlavaNextForConditionalGeneration` at every position for
one image, multi-crop images whose unpad drops rows or columns, two images in one prompt, text only and a batch,
pruning, cached decoding, the orbax round trip): token counts and views, CLIP's vision signals, the host with the
checkpoint's processor and chat template, the registry, the weight map, config errors, newline slots under pruning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from families.base import image_prompt, unpruned_logits
from families.llava_next import COLS, GRIDS, IMAGE, ONE, PATCH, PINPOINTS, ROWS, S, hf_config, image_for
from flax import nnx

from jaxprune.models.llava_next import host

TOL = 1e-4
# every B = 1 batch below has one shape (one compile): 192 tokens, 160 visual slots, 16 crops
BUCKETS = dict(length_multiple=192, visual_multiple=160, crop_multiple=16)


def prompt(n_before, n_after, n_images, seed):
  return image_prompt(n_before, n_after, n_images, seed, [IMAGE])


def batch(cfg, samples):
  """samples: (unexpanded ids, images) -> (ModelInputs, expanded ids per sample)."""
  ids = [host.expand_image_tokens(p, imgs, cfg) for p, imgs in samples]
  return host.pack_batch(ids, [imgs for _, imgs in samples], cfg, **BUCKETS), ids


def test_token_counts_and_views_match_transformers(tiny_next):
  """Per image: base view + unpadded crop grid + one newline per row, as `LlavaNextProcessor` counts it; the
  unpad drops rows of a wide image and columns of a tall one; the crops view's last column is the newlines."""
  from transformers import LlavaNextProcessor
  _, _, cfg, _ = tiny_next
  counter = LlavaNextProcessor.__new__(LlavaNextProcessor)
  counter.image_processor = type("ImageProcessor", (), {"image_grid_pinpoints": PINPOINTS})()
  counter.patch_size, counter.num_additional_image_tokens = PATCH, 1  # [CLS], dropped by "default"
  for size, (h, w) in GRIDS.items():
    views = host.image_views(size, cfg)
    assert [v.grid for v in views] == [(4, 4), (h, w + 1)], size
    assert views[1].newline.reshape(h, w + 1)[:, -1].all() and not views[1].newline.reshape(h, w + 1)[:, :-1].any()
    assert host.image_tokens(size, cfg) == counter._get_number_of_features(*size, S, S) - 1 == 16 + h * (w + 1)
  assert GRIDS[ROWS][0] < 4 and GRIDS[COLS][1] < 4  # 1x3 / 3x1 crops have 4 token rows / columns: some dropped
  two = host.expand_image_tokens(prompt(3, 2, 2, seed=7), [image_for(ROWS, cfg, 40), image_for(COLS, cfg, 41)], cfg)
  assert two.count(IMAGE) == host.image_tokens(ROWS, cfg) + host.image_tokens(COLS, cfg)  # both tiled, no base-only


def test_vision_signals_are_clips_cls_attention_and_keys(tiny_next):
  """One image (1x2 crops): the vision signals per slot are CLIP's [CLS] attention (layer -2, summed over heads)
  and head-mean keys of the crop token behind it, 0 at newlines."""
  hf, model, cfg, _ = tiny_next
  samples = [(prompt(4, 6, 1, seed=1), [image_for(ONE, cfg, 1)])]
  inputs, _ = batch(cfg, samples)
  vision = nnx.jit(lambda m, x: m.encode_images(x.pixels, x.layout))(model, inputs)
  crops = samples[0][1][0].crops
  with torch.no_grad():
    out = hf.model.vision_tower(torch.tensor(crops), output_hidden_states=True, output_attentions=True)
    layer = hf.model.vision_tower.encoder.layers[1]  # layer -2 of 3
    keys = layer.self_attn.k_proj(layer.layer_norm1(out.hidden_states[1])).numpy()
  cls = out.attentions[1].numpy()[:, :, 0, 1:].sum(axis=1).reshape(-1)  # [C * Np]
  keys = keys[:, 1:].reshape(len(crops), 16, 4, 8).mean(2).reshape(-1, 8)
  n = host.image_tokens(ONE, cfg)
  source, newline = np.asarray(inputs.pixels.source)[0, :n, 0], np.asarray(inputs.pixels.newline)[0, :n]
  importance = np.asarray(vision.importance)[0, :n]
  assert np.abs(importance[~newline] - cls[source[~newline]]).max() <= 1e-5 and (importance[newline] == 0).all()
  assert np.abs(np.asarray(vision.keys)[0, :n][~newline] - keys[source[~newline]]).max() <= TOL
  assert cfg.vision_signals == {"importance", "keys", "grid"}


def local_processor(path):
  """A word-level tokenizer that adds `<s>` in front (as llava-hf's Llama tokenizers), a Vicuna-style chat template,
  and the checkpoint's slow `LlavaNextImageProcessor` (16 px crops on PINPOINTS), saved to `path` and reloaded as
  eval loads them (AutoTokenizer, AutoImageProcessor); plus transformers' `LlavaNextProcessor` over them."""
  from tokenizers import Tokenizer, models, pre_tokenizers, processors
  from transformers import AutoImageProcessor, AutoTokenizer, LlavaNextProcessor, PreTrainedTokenizerFast
  from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
  vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(136)])}
  vocab.update({"USER:": 140, "ASSISTANT:": 141, "<image>": IMAGE})
  backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
  tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                      unk_token="<unk>", additional_special_tokens=["<image>"])
  tokenizer.chat_template = (
      "{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
      "<image> {% endif %}{% endfor %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }} "
      "{% endif %}{% endfor %}{% endfor %}{% if add_generation_prompt %}ASSISTANT: {% endif %}")
  tokenizer.save_pretrained(path)
  LlavaNextImageProcessorPil(size={"shortest_edge": S}, crop_size={"height": S, "width": S},
                             image_grid_pinpoints=PINPOINTS).save_pretrained(path)
  tokenizer, image_processor = AutoTokenizer.from_pretrained(path), AutoImageProcessor.from_pretrained(path)
  processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
                                 vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                 chat_template=tokenizer.chat_template)
  return tokenizer, image_processor, processor


def test_host_with_the_checkpoints_processor_and_chat_template(tiny_next, tmp_path):
  """The family host (what eval calls) with the checkpoint's tokenizer, chat template and image processor: exact
  question spans, a wide image whose unpad drops rows, a square one and a blind row, padded to a full batch. Its
  ids equal `LlavaNextProcessor`'s (BOS, expansion) and its logits transformers' on the processor's own pixels."""
  from PIL import Image

  from jaxprune.prompts import chat_prompt
  hf, model, cfg, _ = tiny_next
  tokenizer, image_processor, processor = local_processor(tmp_path)
  nhost = host.NextHost(cfg, tokenizer, image_processor, visual_multiple=BUCKETS["visual_multiple"],
                        crop_multiple=BUCKETS["crop_multiple"])
  rng = np.random.RandomState(1)
  pil = [Image.fromarray(rng.randint(0, 255, shape, np.uint8)) for shape in ((8, 40, 3), (30, 28, 3))]
  questions = ["w5 w6 w7", "w9 w10", "w8"]
  prompts = [nhost.prompt(q, row < 2) for row, q in enumerate(questions)]
  a, b = prompts[0].question_span
  assert tokenizer.decode(prompts[0].ids[a:b]) == "w5 w6 w7" and IMAGE not in prompts[2].ids
  pixels = [nhost.pixels([im]) for im in pil]
  inputs = nhost.batch(prompts, nhost.join(pixels) + [[]], batch_size=3, bucket=BUCKETS["length_multiple"], pad_id=0)
  logits = np.asarray(unpruned_logits(model, inputs))
  worst = 0.0
  for row, question in enumerate(questions):
    text = chat_prompt(tokenizer, question, 0 if row == 2 else 1)
    ref = processor(images=[pil[row]] if row < 2 else None, text=[text], return_tensors="pt")
    ids = ref["input_ids"][0].tolist()
    assert ids[0] == 1 and np.asarray(inputs.ids)[row, -len(ids):].tolist() == ids  # BOS + the expansion
    query_ids = np.asarray(inputs.ids)[row][np.asarray(inputs.query)[row]]
    assert tokenizer.decode(query_ids.tolist()) == question
    with torch.no_grad():
      out = hf(**{k: v for k, v in ref.items() if k != "token_type_ids"}).logits[0].numpy()
    worst = max(worst, float(np.abs(logits[row, -len(ids):] - out).max()))
  print(f"host with processor: max abs logit diff {worst:.2e}")
  assert worst <= TOL


def test_registry_presets_and_shapes():
  """The registry knows the family's presets and shapes (the released 7B architectures, no weights)."""
  from jaxprune.models import registry
  assert registry.PRESETS["llava-next-7b"] == "llava-hf/llava-v1.6-vicuna-7b-hf"
  assert registry.PRESETS["llava-next-mistral-7b"] == "llava-hf/llava-v1.6-mistral-7b-hf"
  vicuna, mistral = registry.SHAPES["llava-next-7b"], registry.SHAPES["llava-next-mistral-7b"]
  assert vicuna.vision.grid == (24, 24) and vicuna.vision_layers_used == 23 and vicuna.text.num_kv_heads == 32
  assert mistral.text.num_kv_heads == 8 and mistral.text.intermediate_size == 14336
  assert vicuna.vision_flops() == 5 * vicuna.clip.vision_flops()  # a square image: base view + 2x2 crops


def test_weight_map_covers_the_hub_checkpoint_layout():
  """Every weight of LLaVA-v1.6-Mistral-7B (its widths, vocab and GQA; 2 decoder and 3 tower layers to keep tracing
  short; on torch's meta device), under both the hub's key names and transformers 5's, maps to a parameter of our
  abstract model with the right shape (or is knowingly unused), and every parameter is covered."""
  import re

  import jax.numpy as jnp
  from transformers import LlavaNextConfig as HFConfig
  from transformers import LlavaNextForConditionalGeneration

  from jaxprune.models.llava_next import HUB_CONFIGS, LlavaNext, LlavaNextConfig
  from jaxprune.models.llava_next.weights import NEXT
  hub = HUB_CONFIGS["llava-hf/llava-v1.6-mistral-7b-hf"]
  shallow = dict(hub, text_config=dict(hub["text_config"], num_hidden_layers=2),
                 vision_config=dict(hub["vision_config"], num_hidden_layers=3))
  cfg = LlavaNextConfig.from_hf(shallow)
  with torch.device("meta"):
    hf = LlavaNextForConditionalGeneration(HFConfig(**shallow))
  abstract = nnx.eval_shape(lambda: LlavaNext(cfg, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
  expected = {".".join(map(str, p)): tuple(v.shape) for p, v in nnx.to_flat_state(nnx.state(abstract))}
  rules = [(re.compile(rx), target, fn) for rx, target, fn in NEXT]
  hub_names = (("model.language_model.", "language_model.model."),
               ("model.vision_tower.", "vision_tower.vision_model."),
               ("model.multi_modal_projector.", "multi_modal_projector."), ("model.image_newline", "image_newline"),
               ("lm_head.", "language_model.lm_head."))
  filled = set()
  for key, tensor in hf.state_dict().items():
    hub_key = next((key.replace(a, b, 1) for a, b in hub_names if key.startswith(a)), key)
    for name in (key, hub_key):
      rx, target, fn = next(r for r in rules if r[0].fullmatch(name))
      if target is None:
        continue  # the post-LN and position ids: never read
      target = rx.fullmatch(name).expand(target)
      if target not in expected:
        assert target.startswith("vision_tower.layers.2."), key  # the last tower layer: past layer -2
        continue
      dummy = np.broadcast_to(np.float32(0), tuple(tensor.shape))
      assert (fn(dummy) if fn else dummy).shape == expected[target], key
      filled.add(target)
  assert filled == set(expected)


def test_bad_configs_give_one_clear_error():
  from jaxprune.models.llava_next import LlavaNextConfig
  d = hf_config().to_dict()
  with pytest.raises(ValueError, match="vision_feature_select_strategy"):
    LlavaNextConfig.from_hf(dict(d, vision_feature_select_strategy="full"))
  with pytest.raises(ValueError, match="image_grid_pinpoints"):
    LlavaNextConfig.from_hf(dict(d, image_grid_pinpoints=[[16, 20]]))


def test_clsattn_at_layer_0_drops_the_newline_slots_first(tiny_next):
  """`clsattn` at K = 0 keeping every patch slot drops exactly the image-newline slots (importance 0)."""
  from jaxprune.generate import Generator
  from jaxprune.prune.pipeline import Pruner
  from jaxprune.prune.select import kept_map
  _, model, cfg, _ = tiny_next
  samples = [(prompt(3, 4, 1, seed=60), [image_for(ROWS, cfg, 60)]),
             (prompt(5, 2, 1, seed=61), [image_for(ONE, cfg, 61)])]
  inputs, _ = batch(cfg, samples)
  n_slots = inputs.layout.max_visual
  newline, valid = np.asarray(inputs.pixels.newline), np.asarray(inputs.layout.valid)
  patches = int((valid & ~newline).sum(axis=1).min())
  out = Generator(model, max_new_tokens=1, eos_ids=(), pad_id=0)(inputs, prune_points_fn=Pruner.build(
      f"clsattn@0:{patches}", cfg), keep_logits=True)
  kept = np.asarray(kept_map(out["kept"], n_slots))
  assert not (kept & newline).any() and (kept.sum(axis=1) == patches).all()


def test_a_sliding_window_that_could_take_effect_is_refused():
  from jaxprune.models.llava_next.config import HUB_CONFIGS, LlavaNextConfig
  d = next(iter(HUB_CONFIGS.values()))
  windowed = dict(d, text_config=dict(d["text_config"], sliding_window=4096, max_position_embeddings=32768))
  with pytest.raises(ValueError, match=r"text_config.sliding_window=4096 is not supported"):
    LlavaNextConfig.from_hf(windowed)
  wide = dict(d, text_config=dict(d["text_config"], sliding_window=32768, max_position_embeddings=32768))
  assert LlavaNextConfig.from_hf(wide).clip.text.num_layers == 32  # a window as long as the positions: no effect
