"""LLaVA-OneVision's own checks on its tiny random checkpoint (tests/families/llava_onevision.py; the family-free
ones, parity with transformers included, are in tests/families/test_conformance.py): the shared SigLIP tower, token
counts and views as transformers' processor counts them, the host with the checkpoint's processor and chat
template, the weight map, FLOPs, and kept-token maps per view."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from families.base import image_prompt, unpruned_logits
from families.llava_onevision import IMAGE, PINPOINTS, SIZES, VIDEO, S, hf_config, image_for
from flax import nnx

from jaxprune.generate import Generator
from jaxprune.models.llava_onevision import host
from jaxprune.prompts import chat_prompt
from jaxprune.prune.pipeline import Pruner
from jaxprune.prune.select import kept_map

TOL = 1e-4


def prompt(n_before, n_after, n_images, seed):
  return image_prompt(n_before, n_after, n_images, seed, [IMAGE])


BUCKETS = dict(length_multiple=64, visual_multiple=32, crop_multiple=8)


def batch(cfg, samples, **buckets):
  """samples: (unexpanded ids, images) -> (ModelInputs, expanded ids per sample)."""
  ids = [host.expand_image_tokens(p, imgs, cfg) for p, imgs in samples]
  return host.pack_batch(ids, [imgs for _, imgs in samples], cfg, **(buckets or BUCKETS)), ids


def test_siglip_tower_matches_transformers(tiny_onevision):
  """The shared SigLIP tower: selected hidden states, last_hidden_state (post-LN), and the attention-received
  importance and head-mean keys against a brute force from transformers' own last-layer attention weights."""
  hf, model, cfg, _ = tiny_onevision
  crops = np.random.RandomState(3).randn(3, 3, S, S).astype(np.float32)
  with torch.no_grad():
    out = hf.model.vision_tower(torch.tensor(crops), output_hidden_states=True, output_attentions=True)
  tower = nnx.jit(lambda m, x: m.vision_tower(x, (-1,)))(model, crops)
  assert np.abs(np.asarray(tower.hidden) - out.hidden_states[-1].numpy()).max() <= TOL
  last = nnx.jit(lambda m, x: m.vision_tower(x))(model, crops)  # post_layernorm
  assert np.abs(np.asarray(last.hidden) - out.last_hidden_state.numpy()).max() <= TOL
  received = out.attentions[-1].numpy().sum(axis=1).mean(axis=1)  # [C, Np]: sum heads, mean queries
  assert np.abs(np.asarray(tower.importance) - received).max() <= 1e-5
  assert np.allclose(np.asarray(tower.importance).sum(-1), 4, atol=1e-4)  # the heads' mass
  with torch.no_grad():
    layer = hf.model.vision_tower.encoder.layers[-1]
    k = layer.self_attn.k_proj(layer.layer_norm1(out.hidden_states[-2])).numpy()
  assert np.abs(np.asarray(tower.keys) - k.reshape(3, 16, 4, 8).mean(2)).max() <= TOL


def test_token_counts_and_layout_match_transformers_processor(tiny_onevision):
  """Our per-image token count (base + unpadded/shrunk crops + newlines) equals the processor's formula, and the
  layout has one grid per view with the newline column last."""
  _, _, cfg, _ = tiny_onevision
  pinpoints = type("ImageProcessor", (), {"image_grid_pinpoints": PINPOINTS})()
  for size in SIZES + [(20, 30), (48, 30)]:
    assert host.image_tokens(size, cfg) == processor_token_count(pinpoints, size), size
  views = host.image_views((40, 40), cfg)
  assert [v.grid for v in views] == [(4, 4), (5, 6)]  # 8x8 shrunk to 5x5, plus the newline column
  assert views[1].newline.reshape(5, 6)[:, -1].all() and not views[1].newline.reshape(5, 6)[:, :-1].any()
  inputs, _ = batch(cfg, [(prompt(2, 2, 1, 0), [image_for((10, 40), cfg, 0)])])
  layout = inputs.layout
  v = np.asarray(layout.valid[0])
  grids = {(int(i), int(h), int(w)) for i, h, w in zip(layout.image[0][v], layout.grid_h[0][v], layout.grid_w[0][v])}
  # 1x3 crops: a 4x12 grid (unpad keeps all 4 rows: the letterbox is under one token), shrunk to 3x9 by
  # anyres_max_2 (48 > 1.1^2 * 32 tokens), + the newline column
  assert grids == {(0, 4, 4), (1, 3, 10)}
  # 2x2 crops (+ the base view) and 3x1 crops; several images in one prompt: base views only, one newline each
  assert [len(image_for(size, cfg, 0).crops) for size in (SIZES[2], SIZES[3])] == [5, 4]
  two = host.expand_image_tokens(prompt(3, 2, 2, seed=7), [image_for(SIZES[2], cfg, 40), image_for(SIZES[1], cfg, 41)],
                                 cfg)
  assert two.count(IMAGE) == 2 * (16 + 1)


def test_bad_inputs_give_one_clear_error(tiny_onevision):
  _, _, cfg, _ = tiny_onevision
  with pytest.raises(ValueError, match="2 image token"):
    host.expand_image_tokens([1, IMAGE, IMAGE], [image_for(SIZES[0], cfg, 0)], cfg)
  bad = host.Image(crops=np.zeros((1, 3, S, S), np.float32), size=SIZES[2])  # needs 5 crops
  ids = host.expand_image_tokens([1, IMAGE], [bad], cfg)
  with pytest.raises(ValueError, match="crops of shape"):
    host.pack_batch([ids], [[bad]], cfg)
  from jaxprune.models.llava_onevision import OnevisionConfig
  with pytest.raises(ValueError, match="vision_feature_select_strategy"):
    OnevisionConfig.from_hf(dict(hf_config().to_dict(), vision_feature_select_strategy="default"))


def local_processor_files(path):
  """A word-level tokenizer with Qwen-style special tokens and chat template, and the checkpoint's image processor
  (16 px crops on PINPOINTS), saved to `path` and reloaded as eval loads them (AutoTokenizer, AutoImageProcessor).
  `LlavaOnevisionProcessor` itself cannot be built here (its video processor needs torchvision), so the reference
  expansion below uses its token-count formula on a bare instance."""
  from tokenizers import Tokenizer, models, pre_tokenizers
  from transformers import AutoImageProcessor, AutoTokenizer, PreTrainedTokenizerFast
  from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil
  specials = {"<|im_start|>": 140, "<|im_end|>": 141, "<image>": IMAGE, "<video>": VIDEO}
  vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(136)])}
  vocab.update(specials, user=142, assistant=143)
  backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                      additional_special_tokens=list(specials))
  tokenizer.chat_template = (
      "{% for m in messages %}<|im_start|> {{ m['role'] }} {% for c in m['content'] %}"
      "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}"
      "{% endfor %}<|im_end|> {% endfor %}{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
  tokenizer.save_pretrained(path)
  LlavaOnevisionImageProcessorPil(size={"height": S, "width": S}, image_grid_pinpoints=PINPOINTS).save_pretrained(path)
  return AutoTokenizer.from_pretrained(path), AutoImageProcessor.from_pretrained(path)


def processor_token_count(image_processor, size):
  """transformers' `LlavaOnevisionProcessor` formula for the tokens `<image>` expands into (full strategy)."""
  from transformers import LlavaOnevisionProcessor
  counter = LlavaOnevisionProcessor.__new__(LlavaOnevisionProcessor)
  counter.image_processor, counter.num_image_tokens, counter.vision_aspect_ratio = image_processor, 16, "anyres_max_2"
  return counter._get_number_of_features(*size, S, S)


def test_host_with_the_checkpoints_processor_and_chat_template(tiny_onevision, tmp_path):
  """The family host (what eval calls) with the checkpoint's tokenizer, chat template and image processor:
  prompts with an exact question span, three image sizes and a blind row, padded to a full batch. Its ids equal
  the processor's expansion and its logits equal transformers' on the image processor's own outputs."""
  from PIL import Image
  hf, model, cfg, _ = tiny_onevision
  tokenizer, image_processor = local_processor_files(tmp_path)
  ohost = host.OnevisionHost(cfg, tokenizer, image_processor, visual_multiple=32)
  rng = np.random.RandomState(1)
  pil = [Image.fromarray(rng.randint(0, 255, shape, np.uint8)) for shape in ((16, 16, 3), (12, 40, 3), (40, 36, 3))]
  questions = ["w5 w6 w7", "w9 w10", "w8", "w9 w10"]
  prompts = [ohost.prompt(q, row < 3) for row, q in enumerate(questions)]
  a, b = prompts[0].question_span
  assert tokenizer.decode(prompts[0].ids[a:b]) == "w5 w6 w7" and IMAGE not in prompts[3].ids
  pixels = [ohost.pixels([im]) for im in pil]
  inputs = ohost.batch(prompts, ohost.join(pixels) + [[]], batch_size=5, bucket=64, pad_id=0)
  assert inputs.ids.shape[0] == 5
  logits = np.asarray(unpruned_logits(model, inputs))
  for row, question in enumerate(questions):
    text = chat_prompt(tokenizer, question, 0 if row == 3 else 1)
    ids, kwargs = tokenizer(text, add_special_tokens=False)["input_ids"], {}
    if row < 3:
      out = image_processor(images=[pil[row]], return_tensors="pt")
      count = processor_token_count(image_processor, tuple(out["image_sizes"][0].tolist()))
      at = ids.index(IMAGE)
      ids = ids[:at] + [IMAGE] * count + ids[at + 1:]
      kwargs = dict(pixel_values=out["pixel_values"], image_sizes=out["image_sizes"])
    assert np.asarray(inputs.ids)[row, -len(ids):].tolist() == ids  # the processor's expansion
    query_ids = np.asarray(inputs.ids)[row][np.asarray(inputs.query)[row]]
    assert tokenizer.decode(query_ids.tolist()) == question
    ids_t = torch.tensor([ids])
    with torch.no_grad():
      ref = hf(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), **kwargs).logits[0].numpy()
    assert np.abs(logits[row, -len(ids):] - ref).max() <= TOL, row


def test_weight_map_covers_the_hub_checkpoint_layout():
  """Every weight of a LLaVA-OneVision-0.5B (its widths, vocab and tying; 2 decoder and 3 tower layers to keep
  tracing short; on torch's meta device), under both the hub's key names and transformers 5's, maps to a
  parameter of our abstract model with the right shape, and every parameter is covered."""
  import re

  from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

  from jaxprune.models import registry
  from jaxprune.models.llava_onevision import HUB_CONFIGS, LlavaOnevision, OnevisionConfig
  from jaxprune.models.llava_onevision.weights import ONEVISION
  assert registry.PRESETS["llava-onevision-7b"] == "llava-hf/llava-onevision-qwen2-7b-ov-hf"
  assert registry.SHAPES["llava-onevision-0.5b"].vision.grid == (27, 27)
  hub = HUB_CONFIGS["llava-hf/llava-onevision-qwen2-0.5b-ov-hf"]
  shallow = dict(hub, text_config=dict(hub["text_config"], num_hidden_layers=2),
                 vision_config=dict(hub["vision_config"], num_hidden_layers=3))
  cfg = OnevisionConfig.from_hf(shallow)
  with torch.device("meta"):
    hf = LlavaOnevisionForConditionalGeneration(LlavaOnevisionConfig(**shallow))
  abstract = nnx.eval_shape(lambda: LlavaOnevision(cfg, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
  expected = {".".join(map(str, p)): tuple(v.shape) for p, v in nnx.to_flat_state(nnx.state(abstract))}
  rules = [(re.compile(rx), target, fn) for rx, target, fn in ONEVISION]
  hub_names = (("model.language_model.", "language_model.model."), ("model.vision_tower.", "vision_tower."),
               ("model.multi_modal_projector.", "multi_modal_projector."), ("model.image_newline", "image_newline"),
               ("lm_head.", "language_model.lm_head."))
  filled = set()
  for key, tensor in hf.state_dict().items():
    if key == "lm_head.weight" and cfg.text.tie_word_embeddings:
      continue  # tied: not a parameter of ours
    hub_key = next((key.replace(a, b, 1) for a, b in hub_names if key.startswith(a)), key)
    for name in (key, hub_key):
      rx, target, fn = next(r for r in rules if r[0].fullmatch(name))
      target = rx.fullmatch(name).expand(target)
      dummy = np.broadcast_to(np.float32(0), tuple(tensor.shape))
      assert (fn(dummy) if fn else dummy).shape == expected[target], key
      filled.add(target)
  assert filled == set(expected)


def test_vision_flops_count_the_matmuls_the_tower_runs(tiny_onevision):
  """SigLIP's per-crop FLOPs equal the dot FLOPs of the traced tower (its importance signal included), and the
  family's vision_flops counts base + crops for a token count."""
  from test_qwen2_5_vl import _dot_flops
  _, model, cfg, _ = tiny_onevision
  graphdef, state = nnx.split(model.vision_tower)
  crop = np.zeros((1, 3, S, S), np.float32)
  jaxpr = jax.make_jaxpr(lambda st, x: nnx.merge(graphdef, st)(x, cfg.feature_layers))(state, crop).jaxpr
  assert _dot_flops(jaxpr) == cfg.vision.flops(cfg.vision_layers_used)
  per_crop = cfg.vision.flops(2) + 2 * 16 * (32 * 64 + 64 * 64)  # tower + projector
  assert cfg.vision_flops(16 + 4 * 9) == 3 * per_crop  # base + a 1x2 layout's 4x8 grid + 4 newlines: 3 crops


def test_kept_map_is_one_map_per_view_with_the_newline_column(tiny_onevision):
  """uniform@0 on a 2x2-crop image: the kept-token map splits by view (layout image index 0 = base 4x4, 1 = crops
  5x5 + newline column), each view strided on its own grid; clsattn never keeps a newline before a patch."""
  _, model, cfg, _ = tiny_onevision
  image = image_for(SIZES[2], cfg, 200)
  ids = host.expand_image_tokens(prompt(2, 7, 1, seed=100), [image], cfg)
  inputs = host.pack_batch([ids], [[image]], cfg, length_multiple=128, visual_multiple=8, crop_multiple=8)
  layout = inputs.layout
  view, col, gw = (np.asarray(x[0]) for x in (layout.image, layout.col, layout.grid_w))
  newline = np.asarray(inputs.pixels.newline[0])
  np.testing.assert_array_equal(newline, (view == 1) & (col == gw - 1))
  run = Generator(model, max_new_tokens=1, eos_ids=(), pad_id=0)
  kept = np.asarray(kept_map(run(inputs, prune_points_fn=Pruner.build("uniform@0:8", cfg))["kept"],
                             layout.max_visual))[0]
  assert kept[view == 0].sum() > 0 and kept[view == 1].sum() > 0 and kept.sum() == 8
  kept = np.asarray(kept_map(run(inputs, prune_points_fn=Pruner.build("clsattn@0:40", cfg))["kept"],
                             layout.max_visual))[0]  # 46 slots: 5 newlines + 1 patch dropped
  assert kept[newline].sum() == 0 and kept[~newline & np.asarray(layout.valid[0])].sum() == 40
