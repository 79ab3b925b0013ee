"""Flax LLaVA-OneVision (and the shared SigLIP tower) against transformers on a tiny random config (float32, saved
and reloaded, no downloads): one image, a batch of three, text only, a multi-crop image shrunk by AnyRes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxprune.convert.hf import load_model
from jaxprune.core import decoding
from jaxprune.models.llava_onevision import host
from jaxprune.prompts import chat_prompt

TOL = 1e-4
IMAGE, VIDEO = 150, 151
S = 16  # crop side in pixels; patch 4 -> 4 x 4 = 16 tokens per crop
PINPOINTS = [[16, 16], [16, 32], [32, 16], [32, 32], [16, 48], [48, 16]]
# original image sizes (h, w) -> crop layout: 1 crop, 1x3 crops letterboxed (unpad drops rows), 2x2 crops whose
# 8x8 grid exceeds anyres_max_2's budget (shrunk bilinearly to 5x5), 3x1 crops letterboxed (unpad drops columns)
SIZES = [(16, 16), (10, 40), (40, 40), (44, 12)]


def hf_config():
  from transformers import LlavaOnevisionConfig
  vision = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, image_size=S, patch_size=4, vision_use_head=False)
  text = dict(model_type="qwen2", vocab_size=160, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=512,
              pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
  return LlavaOnevisionConfig(vision_config=vision, text_config=text, image_token_index=IMAGE,
                              video_token_index=VIDEO, image_grid_pinpoints=PINPOINTS,
                              vision_aspect_ratio="anyres_max_2", vision_feature_layer=-1,
                              vision_feature_select_strategy="full", tie_word_embeddings=False)


def randomize(hf, scale=0.15):
  """Larger random weights, norms and biases than transformers' init, so every mapped tensor matters at 1e-4."""
  with torch.no_grad():
    for name, param in hf.named_parameters():
      if "norm" in name and name.endswith("weight"):
        param.copy_(1 + 0.2 * torch.randn_like(param))
      else:
        param.normal_(0.0, scale if param.dim() > 1 else 0.1)


def save_tiny_onevision(path, seed: int):
  """A tiny random LLaVA-OneVision saved to `path` and reloaded -> the HF torch model (eager attention)."""
  from transformers import LlavaOnevisionForConditionalGeneration
  torch.manual_seed(seed)
  hf = LlavaOnevisionForConditionalGeneration(hf_config()).eval()
  randomize(hf)
  hf.save_pretrained(path)
  hf = LlavaOnevisionForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
  hf.set_attn_implementation("eager")
  return hf


@pytest.fixture(scope="session")
def tiny_onevision(tmp_path_factory):
  """(HF torch model, jaxprune model, config, saved dir), both models from the same directory."""
  path = tmp_path_factory.mktemp("tiny_onevision")
  hf = save_tiny_onevision(path, seed=0)
  loaded = load_model(path, dtype="float32")
  assert loaded.family.name == "llava_onevision"
  return hf, loaded.model, loaded.config, path


def image_for(size, cfg, seed):
  rng = np.random.RandomState(seed)
  return host.Image(crops=rng.randn(host.num_crops(size, cfg), 3, S, S).astype(np.float32), size=size)


def prompt(n_before, n_after, n_images, seed):
  """bos, text, then per image <image> and text (one image token per image, expanded later)."""
  rng = np.random.RandomState(seed)
  ids = [1] + rng.randint(3, 140, n_before).tolist()
  for _ in range(n_images):
    ids += [IMAGE] + rng.randint(3, 140, n_after).tolist()
  return ids


def hf_logits(hf, ids, images):
  ids_t = torch.tensor([ids])
  kwargs = {}
  if images:
    most = max(len(im.crops) for im in images)
    crops = np.stack([np.pad(im.crops, ((0, most - len(im.crops)),) + ((0, 0),) * 3) for im in images])
    kwargs = dict(pixel_values=torch.tensor(crops), image_sizes=torch.tensor([im.size for im in images]))
    if len(images) > 1:
      kwargs["batch_num_images"] = torch.tensor([len(images)])
  with torch.no_grad():
    return hf(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), **kwargs).logits[0].numpy()


@nnx.jit
def forward(model, inputs):
  """Unpruned prefill -> logits [B, L, V]."""
  tokens, _ = model.input_tokens(inputs)
  h, _, _ = decoding.prefill(model.language_model, tokens, extra_slots=0)
  return model.language_model.logits(h)


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


def test_logits_one_image(tiny_onevision):
  hf, model, cfg, _ = tiny_onevision
  ids, images = prompt(4, 6, 1, seed=1), [image_for(SIZES[1], cfg, 1)]
  inputs, expanded = batch(cfg, [(ids, images)])
  ours = np.asarray(forward(model, inputs))[0, -len(expanded[0]):]
  assert np.abs(ours - hf_logits(hf, expanded[0], images)).max() <= TOL


def test_logits_multi_crop_image_shrunk_by_anyres(tiny_onevision):
  """2x2 crops whose stitched 8x8 grid is bilinearly shrunk to 5x5 (interpolation taps), and a 3x1 layout whose
  unpad drops columns."""
  hf, model, cfg, _ = tiny_onevision
  for i, size in enumerate((SIZES[2], SIZES[3])):
    ids, images = prompt(3, 5, 1, seed=2 + i), [image_for(size, cfg, 2 + i)]
    assert len(images[0].crops) == 5 - i * 1
    inputs, expanded = batch(cfg, [(ids, images)])
    ours = np.asarray(forward(model, inputs))[0, -len(expanded[0]):]
    assert np.abs(ours - hf_logits(hf, expanded[0], images)).max() <= TOL, size


def test_batch_of_three_equals_each_alone_and_transformers(tiny_onevision):
  hf, model, cfg, _ = tiny_onevision
  samples = [(prompt(2 + 5 * i, 3 + 2 * i, 1, seed=20 + i), [image_for(size, cfg, 30 + i)])
             for i, size in enumerate(SIZES[:3])]
  together, expanded = batch(cfg, samples)
  logits = np.asarray(forward(model, together))
  for i, (ids, images) in enumerate(samples):
    n = len(expanded[i])
    alone, _ = batch(cfg, [(ids, images)])
    assert np.abs(logits[i, -n:] - np.asarray(forward(model, alone))[0, -n:]).max() <= TOL
    assert np.abs(logits[i, -n:] - hf_logits(hf, expanded[i], images)).max() <= TOL


def test_two_images_in_one_prompt_use_base_views(tiny_onevision):
  hf, model, cfg, _ = tiny_onevision
  images = [image_for(SIZES[2], cfg, 40), image_for(SIZES[1], cfg, 41)]
  inputs, expanded = batch(cfg, [(prompt(3, 2, 2, seed=7), images)])
  assert expanded[0].count(IMAGE) == 2 * (16 + 1)  # base view + one newline each
  ours = np.asarray(forward(model, inputs))[0, -len(expanded[0]):]
  assert np.abs(ours - hf_logits(hf, expanded[0], images)).max() <= TOL


def test_text_only_prompt(tiny_onevision):
  hf, model, cfg, _ = tiny_onevision
  ids = prompt(12, 0, 0, seed=9)
  inputs, _ = batch(cfg, [(ids, [])])
  assert inputs.pixels is None and inputs.layout.max_visual == 0
  ours = np.asarray(forward(model, inputs))[0, -len(ids):]
  assert np.abs(ours - hf_logits(hf, ids, [])).max() <= TOL


def test_cached_decode_equals_recompute_16_steps(tiny_onevision):
  hf, model, cfg, _ = tiny_onevision
  samples = [(prompt(3, 2, 1, seed=50), [image_for(SIZES[0], cfg, 50)]),
             (prompt(8, 5, 1, seed=51), [image_for(SIZES[1], cfg, 51)])]
  steps = 16
  inputs, expanded = batch(cfg, samples)

  @nnx.jit
  def generate(model, inputs):
    tokens, _ = model.input_tokens(inputs)
    lm = model.language_model
    h, cache, _ = decoding.prefill(lm, tokens, extra_slots=steps)

    def step(carry, _):
      logits, cache = carry
      token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
      new_logits, cache = decoding.decode_step(lm, token, cache)
      return (new_logits, cache), (token, new_logits)

    _, (out, logits) = jax.lax.scan(step, (lm.logits(h[:, -1]), cache), None, length=steps)
    return out.T, jnp.swapaxes(logits, 0, 1)  # [B, T], [B, T, V]

  generated, cached = (np.asarray(a) for a in generate(model, inputs))
  # recompute: prompt + generated tokens without a cache (all inside the 64-token bucket: one compile)
  for t in range(steps):
    longer = [(ids + generated[b, :t + 1].tolist(), imgs) for b, (ids, imgs) in enumerate(samples)]
    recomputed, _ = batch(cfg, longer)
    assert recomputed.ids.shape == inputs.ids.shape
    assert np.abs(cached[:, t] - np.asarray(forward(model, recomputed))[:, -1]).max() <= TOL, f"step {t}"
  for b, (_, imgs) in enumerate(samples):
    full = expanded[b] + generated[b].tolist()
    assert np.abs(hf_logits(hf, full[:-1], imgs)[-1] - cached[b, -2]).max() <= TOL


def test_converter_round_trip_matches_transformers(tiny_onevision, tmp_path):
  """`load_model` on the saved HF directory (the fixture) and on the orbax directory the converter CLI writes."""
  from jaxprune.convert.__main__ import main as convert_main
  hf, model, cfg, path = tiny_onevision
  assert convert_main(["--hf", str(path), "--out", str(tmp_path / "orbax"), "--dtype", "float32"]) == 0
  restored = load_model(tmp_path / "orbax")
  assert restored.family.name == "llava_onevision" and restored.config == cfg
  ids, images = prompt(3, 5, 1, seed=4), [image_for(SIZES[2], cfg, 6)]
  inputs, expanded = batch(cfg, [(ids, images)])
  ref = hf_logits(hf, expanded[0], images)
  for m in (model, restored.model):
    assert np.abs(np.asarray(forward(m, inputs))[0, -len(expanded[0]):] - ref).max() <= TOL


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
  logits = np.asarray(forward(model, inputs))
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
