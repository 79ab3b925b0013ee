"""Flax Qwen2.5-VL against transformers on a tiny random config (float32, saved and reloaded, no downloads)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxprune.core import decoding
from jaxprune.models.qwen2_5_vl import host
from jaxprune.models.qwen2_5_vl.weights import load_qwen
from jaxprune.prompts import chat_prompt

TOL = 1e-4
IMAGE, VIDEO, START, END = 150, 151, 152, 153
# patch grids (t, h, w): 8x8, 8x12 and 6x10 patches -> 4x4, 4x6, 3x5 merged tokens; windows of 2x2 merged tokens
# split each image into 4, 6 and 6 windows (the last row/column of the 3x5 one partial)
GRIDS = [(1, 8, 8), (1, 8, 12), (1, 6, 10)]
BUCKETS = dict(length_multiple=32, visual_multiple=32, patch_multiple=256)


def hf_config():
  from transformers import Qwen2_5_VLConfig
  vision = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, patch_size=4,
                temporal_patch_size=2, spatial_merge_size=2, window_size=16, fullatt_block_indexes=[2],
                in_channels=3, hidden_act="silu")
  text = dict(vocab_size=160, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=512, pad_token_id=0,
              bos_token_id=1, eos_token_id=2, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
  return Qwen2_5_VLConfig(vision_config=vision, text_config=text, image_token_id=IMAGE, video_token_id=VIDEO,
                          vision_start_token_id=START, vision_end_token_id=END, tie_word_embeddings=False)


def randomize(hf, scale=0.15):
  """transformers' init (std 0.02, unit norms, zero biases) leaves a tiny tower nearly blind to position: a
  row/col swap in its RoPE moved outputs by only 4e-5. Larger random weights, norms and biases make every
  mapped tensor and every position id matter at the 1e-4 tolerance."""
  with torch.no_grad():
    for name, param in hf.named_parameters():
      if name.endswith("norm.weight") or "norm1" in name or "norm2" in name or "ln_q" in name:
        param.copy_(1 + 0.2 * torch.randn_like(param))
      else:
        param.normal_(0.0, scale if param.dim() > 1 else 0.1)


def save_tiny_qwen(path, seed: int):
  """A tiny random Qwen2.5-VL (larger weights, see `randomize`) saved to `path`, reloaded as transformers runs a
  checkpoint directory -> the HF torch model in eval mode."""
  from transformers import Qwen2_5_VLForConditionalGeneration
  torch.manual_seed(seed)
  hf = Qwen2_5_VLForConditionalGeneration(hf_config()).eval()
  randomize(hf)
  hf.save_pretrained(path)
  return Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
  """(HF torch model, jaxprune model, config), both from the same saved directory."""
  from transformers import Qwen2_5_VLForConditionalGeneration
  torch.manual_seed(0)
  hf = Qwen2_5_VLForConditionalGeneration(hf_config()).eval()
  randomize(hf)
  hf.set_attn_implementation("eager")
  path = tmp_path_factory.mktemp("tiny_qwen")
  hf.save_pretrained(path)
  hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
  model, cfg = load_qwen(path, dtype="float32")
  return hf, model, cfg


def patches_for(grid, seed):
  t, h, w = grid
  return np.random.RandomState(seed).randn(t * h * w, 3 * 2 * 4 * 4).astype(np.float32)


def prompt(n_before, n_after, n_images, seed):
  """bos, text, then per image <start><image><end> and text (one image token per image, expanded later)."""
  rng = np.random.RandomState(seed)
  ids = [1] + rng.randint(3, 140, n_before).tolist()
  for _ in range(n_images):
    ids += [START, IMAGE, END] + rng.randint(3, 140, n_after).tolist()
  return ids


def hf_logits(hf, ids, grids, patches):
  ids_t = torch.tensor([ids])
  kwargs = {}
  if grids:
    kwargs = dict(pixel_values=torch.tensor(np.concatenate(patches)), image_grid_thw=torch.tensor(grids),
                  mm_token_type_ids=(ids_t == IMAGE).int())
  with torch.no_grad():
    return hf(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), **kwargs).logits[0].numpy()


@nnx.jit
def forward(model, inputs):
  """Unpruned prefill -> logits [B, L, V]."""
  tokens, _ = model.input_tokens(inputs)
  h, _, _ = decoding.prefill(model.language_model, tokens, extra_slots=0)
  return model.language_model.logits(h)


def batch(cfg, samples, **buckets):
  """samples: (unexpanded ids, grids, patches) -> (ModelInputs, expanded ids per sample)."""
  ids = [host.expand_image_tokens(p, g, cfg) for p, g, _ in samples]
  inputs = host.pack_batch(ids, [g for _, g, _ in samples], [x for _, _, x in samples], cfg, **(buckets or BUCKETS))
  return inputs, ids


def test_config_and_weight_map(tiny_qwen):
  hf, model, cfg = tiny_qwen
  assert cfg.text.mrope_section == (2, 3, 3) and cfg.text.attention_bias and cfg.rope_axes == 3
  assert cfg.vision.window_tokens == 2 and cfg.vision.fullatt_block_indexes == (2,)
  assert cfg.num_layers == 3
  np.testing.assert_array_equal(np.asarray(model.language_model.layers[1].attn.q_proj.bias[...]),
                                hf.model.language_model.layers[1].self_attn.q_proj.bias.detach().numpy())


def test_vision_tower_three_sizes_in_one_batch(tiny_qwen):
  hf, model, cfg = tiny_qwen
  patches = [patches_for(g, seed=i) for i, g in enumerate(GRIDS)]
  inputs, _ = batch(cfg, [(prompt(2, 1, 1, seed=i), [g], [p]) for i, (g, p) in enumerate(zip(GRIDS, patches))])
  assert len(set(host.patch_metadata(GRIDS[2], cfg)[2])) == 6  # the window split is real
  with torch.no_grad():
    ref = hf.model.visual(torch.tensor(np.concatenate(patches)), grid_thw=torch.tensor(GRIDS)).pooler_output.numpy()
  tower = nnx.jit(lambda m, px: m.vision_tower(px))(model, inputs.pixels)
  ours = np.asarray(tower.features)[:len(ref)]
  assert np.abs(ours - ref).max() <= TOL
  # per-slot features land where the layout says: slot n of sample b is that sample's n-th merged token
  vision = nnx.jit(lambda m, px, lay: m.encode_images(px, lay))(model, inputs.pixels, inputs.layout)
  starts = np.cumsum([0] + [host.merged_tokens(g, cfg) for g in GRIDS])
  for b in range(3):
    n = starts[b + 1] - starts[b]
    assert np.abs(np.asarray(vision.features[b, :n]) - ref[starts[b]:starts[b + 1]]).max() <= TOL
    assert not np.asarray(vision.features[b, n:]).any() and not np.asarray(vision.layout.valid[b, n:]).any()


def _hf_last_block_signals(hf, patches, grids):
  """Brute force from transformers' own last-block inputs: attention received and pre-RoPE keys per merged token."""
  captured = {}
  attn = hf.model.visual.blocks[-1].attn
  handle = attn.register_forward_hook(lambda mod, args, kwargs, out: captured.update(x=args[0], **kwargs),
                                      with_kwargs=True)
  with torch.no_grad():
    hf.model.visual(torch.tensor(np.concatenate(patches)), grid_thw=torch.tensor(grids))
    handle.remove()
    x = captured["x"]
    cos, sin = captured["position_embeddings"]
    n, heads = x.shape[0], attn.num_heads
    q, k, _ = attn.qkv(x).reshape(n, 3, heads, -1).permute(1, 0, 2, 3).unbind(0)
    k_raw = k.numpy()
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
  q, k = q.numpy().astype(np.float64), k.numpy().astype(np.float64)
  bounds = np.asarray(captured["cu_seqlens"])  # the last block is a full-attention block: one range per image
  received = np.zeros(n)
  for a, b in zip(bounds[:-1], bounds[1:]):
    logits = np.einsum("qhd,khd->hqk", q[a:b], k[a:b]) / np.sqrt(q.shape[-1])
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    received[a:b] = probs.sum(axis=(0, 1)) / (b - a)
  # transformers runs in window order (merge blocks permuted); undo it as it does for the merger output
  from transformers.vision_utils import get_vision_window_index
  window_index, _ = get_vision_window_index(torch.tensor(grids), 2, 16, 4)
  inverse = np.argsort(window_index.numpy())
  merged = received.reshape(-1, 4).sum(-1)[inverse]
  keys = k_raw.mean(axis=1).reshape(-1, 4, k_raw.shape[-1]).mean(axis=1)[inverse]
  return merged, keys


def test_vision_importance_and_keys_match_brute_force(tiny_qwen):
  hf, model, cfg = tiny_qwen
  patches = [patches_for(g, seed=10 + i) for i, g in enumerate(GRIDS)]
  inputs, _ = batch(cfg, [(prompt(2, 1, 1, seed=i), [g], [p]) for i, (g, p) in enumerate(zip(GRIDS, patches))])
  tower = nnx.jit(lambda m, px: m.vision_tower(px))(model, inputs.pixels)
  ref_importance, ref_keys = _hf_last_block_signals(hf, patches, GRIDS)
  m = len(ref_importance)
  assert np.abs(np.asarray(tower.importance)[:m] - ref_importance).max() <= 1e-5
  assert np.abs(np.asarray(tower.keys)[:m] - ref_keys).max() <= TOL
  # each image's tokens share the heads' attention mass: they sum to the head count
  starts = np.cumsum([0] + [host.merged_tokens(g, cfg) for g in GRIDS])
  for a, b in zip(starts[:-1], starts[1:]):
    assert abs(np.asarray(tower.importance)[a:b].sum() - 4) < 1e-4


def test_rope_positions_match_transformers(tiny_qwen):
  hf, _, cfg = tiny_qwen
  ids = host.expand_image_tokens(prompt(3, 4, 2, seed=5), GRIDS[1:], cfg)
  ids_t = torch.tensor([ids])
  ref, _ = hf.model.get_rope_index(ids_t, (ids_t == IMAGE).int(), image_grid_thw=torch.tensor(GRIDS[1:]))
  np.testing.assert_array_equal(host.rope_positions(ids, GRIDS[1:], cfg), ref[:, 0].numpy().T)


def test_logits_one_image(tiny_qwen):
  hf, model, cfg = tiny_qwen
  ids, grids, patches = prompt(4, 6, 1, seed=1), [GRIDS[1]], [patches_for(GRIDS[1], 1)]
  inputs, expanded = batch(cfg, [(ids, grids, patches)])
  ours = np.asarray(forward(model, inputs))[0, -len(expanded[0]):]
  assert np.abs(ours - hf_logits(hf, expanded[0], grids, patches)).max() <= TOL


def test_batch_of_three_sizes_equals_each_alone_and_transformers(tiny_qwen):
  hf, model, cfg = tiny_qwen
  samples = [(prompt(2 + 5 * i, 3 + 2 * i, 1, seed=20 + i), [g], [patches_for(g, 30 + i)])
             for i, g in enumerate(GRIDS)]
  together, expanded = batch(cfg, samples)
  logits = np.asarray(forward(model, together))
  for i, (ids, grids, patches) in enumerate(samples):
    n = len(expanded[i])
    alone, _ = batch(cfg, [(ids, grids, patches)])
    alone_logits = np.asarray(forward(model, alone))[0, -n:]
    assert np.abs(logits[i, -n:] - alone_logits).max() <= TOL
    assert np.abs(logits[i, -n:] - hf_logits(hf, expanded[i], grids, patches)).max() <= TOL


def test_two_images_in_one_prompt(tiny_qwen):
  hf, model, cfg = tiny_qwen
  grids = [GRIDS[2], GRIDS[0]]
  patches = [patches_for(g, 40 + i) for i, g in enumerate(grids)]
  inputs, expanded = batch(cfg, [(prompt(3, 2, 2, seed=7), grids, patches)])
  tokens, vision = nnx.jit(lambda m, x: m.input_tokens(x))(model, inputs)
  image_id = np.asarray(tokens.image_id)[0][np.asarray(tokens.valid)[0] & np.asarray(tokens.image)[0]]
  np.testing.assert_array_equal(image_id, [0] * 15 + [1] * 16)
  ours = np.asarray(forward(model, inputs))[0, -len(expanded[0]):]
  assert np.abs(ours - hf_logits(hf, expanded[0], grids, patches)).max() <= TOL


def test_text_only_prompt(tiny_qwen):
  hf, model, cfg = tiny_qwen
  ids = prompt(12, 0, 0, seed=9)
  inputs, _ = batch(cfg, [(ids, [], [])])
  assert inputs.pixels is None and inputs.layout.max_visual == 0
  ours = np.asarray(forward(model, inputs))[0, -len(ids):]
  assert np.abs(ours - hf_logits(hf, ids, [], [])).max() <= TOL


def test_cached_decode_equals_recompute_16_steps(tiny_qwen):
  hf, model, cfg = tiny_qwen
  samples = [(prompt(3, 2, 1, seed=50), [GRIDS[0]], [patches_for(GRIDS[0], 50)]),
             (prompt(8, 5, 1, seed=51), [GRIDS[2]], [patches_for(GRIDS[2], 51)])]
  steps = 16
  inputs, expanded = batch(cfg, samples, length_multiple=64, visual_multiple=32, patch_multiple=256)

  @nnx.jit
  def generate(model, inputs):
    tokens, _ = model.input_tokens(inputs)
    lm = model.language_model
    h, cache, _ = decoding.prefill(lm, tokens, extra_slots=steps)
    first = lm.logits(h[:, -1])  # [B, V]

    def step(carry, _):
      logits, cache = carry
      token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
      new_logits, cache = decoding.decode_step(lm, token, cache)
      return (new_logits, cache), (token, new_logits)

    _, (tokens_out, logits_out) = jax.lax.scan(step, (first, cache), None, length=steps)
    return tokens_out.T, jnp.swapaxes(logits_out, 0, 1)  # [B, T], [B, T, V]

  generated, cached_logits = (np.asarray(a) for a in generate(model, inputs))
  # recompute: the whole sequence (prompt + generated tokens, positions continuing after the image) without a
  # cache; every length stays inside the 64-token bucket, so this compiles once
  for t in range(steps):
    longer = [(ids + generated[b, :t + 1].tolist(), g, p) for b, (ids, g, p) in enumerate(samples)]
    recomputed, _ = batch(cfg, longer, length_multiple=64, visual_multiple=32, patch_multiple=256)
    assert recomputed.ids.shape == inputs.ids.shape
    ref = np.asarray(forward(model, recomputed))[:, -1]
    assert np.abs(cached_logits[:, t] - ref).max() <= TOL, f"step {t}"
  # and the last step agrees with transformers on the full sequence
  for b, (_ids, g, p) in enumerate(samples):
    full = expanded[b] + generated[b].tolist()
    assert np.abs(hf_logits(hf, full[:-1], g, p)[-1] - cached_logits[b, -2]).max() <= TOL


def local_processor_files(path):
  """A word-level tokenizer with Qwen's special tokens and a Qwen-style chat template, plus the checkpoint's
  image processor (patch 4, merge 2), saved to `path` and reloaded: what a converted checkpoint directory holds."""
  from tokenizers import Tokenizer, models, pre_tokenizers
  from transformers import AutoImageProcessor, AutoTokenizer, PreTrainedTokenizerFast
  from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
  specials = {"<|im_start|>": 140, "<|im_end|>": 141, "<|image_pad|>": IMAGE, "<|vision_start|>": START,
              "<|vision_end|>": END}
  vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(136)])}
  vocab.update(specials, user=142, assistant=143)
  backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                      additional_special_tokens=list(specials))
  tokenizer.chat_template = (
      "{% for m in messages %}<|im_start|> {{ m['role'] }} {% for c in m['content'] %}"
      "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|> {% else %}{{ c['text'] }} {% endif %}"
      "{% endfor %}<|im_end|> {% endfor %}{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
  tokenizer.save_pretrained(path)
  Qwen2VLImageProcessorPil(patch_size=4, temporal_patch_size=2, merge_size=2, min_pixels=64,
                           max_pixels=64 * 64).save_pretrained(path)
  return AutoTokenizer.from_pretrained(path), AutoImageProcessor.from_pretrained(path)


def test_chat_template_and_image_processor_end_to_end(tiny_qwen, tmp_path):
  from PIL import Image
  hf, model, cfg = tiny_qwen
  tokenizer, image_processor = local_processor_files(tmp_path)
  rng = np.random.RandomState(0)
  images = [[Image.fromarray(rng.randint(0, 255, (32, 48, 3), np.uint8))],
            [Image.fromarray(rng.randint(0, 255, (40, 24, 3), np.uint8)),
             Image.fromarray(rng.randint(0, 255, (24, 24, 3), np.uint8))]]
  prompts = [chat_prompt(tokenizer, "w5 w6 w7", 1), chat_prompt(tokenizer, "w9", 2)]
  assert prompts[1].count("<|image_pad|>") == 2
  inputs = host.build_inputs(tokenizer, image_processor, prompts, images, cfg, **BUCKETS)
  logits = np.asarray(forward(model, inputs))
  for b, (text, imgs) in enumerate(zip(prompts, images)):
    grids, patches = host.preprocess_images(image_processor, imgs)
    ids = host.expand_image_tokens(tokenizer(text, add_special_tokens=False)["input_ids"], grids, cfg)
    assert np.asarray(inputs.ids)[b, -len(ids):].tolist() == ids
    assert np.abs(logits[b, -len(ids):] - hf_logits(hf, ids, grids, patches)).max() <= TOL


def test_bad_inputs_give_one_clear_error(tiny_qwen):
  _, _, cfg = tiny_qwen
  with pytest.raises(ValueError, match="2 image token"):
    host.expand_image_tokens([1, IMAGE, IMAGE], [GRIDS[0]], cfg)
  ids = host.expand_image_tokens([1, IMAGE], [GRIDS[0]], cfg)
  with pytest.raises(ValueError, match="patches of shape"):
    host.pack_batch([ids], [[GRIDS[0]]], [[np.zeros((3, 96), np.float32)]], cfg)
  with pytest.raises(ValueError, match="multiple of 4"):
    host.pack_batch([ids], [[GRIDS[0]]], [[patches_for(GRIDS[0], 0)]], cfg, patch_multiple=6)
  bad = dict(json.loads(json.dumps(hf_config().to_dict())))
  bad["text_config"]["rope_parameters"]["mrope_section"] = [2, 2, 2]
  from jaxprune.models.qwen2_5_vl import Qwen25VLConfig
  with pytest.raises(ValueError, match="mrope_section"):
    Qwen25VLConfig.from_hf(bad)


def test_hub_key_layout_loads_identically(tiny_qwen, tmp_path):
  """Hub checkpoints (and transformers 5's `save_pretrained`) name weights `visual.*` and `model.*`; the
  in-memory layout of transformers >= 4.52 (which some 4.5x versions saved) is `model.visual.*` and
  `model.language_model.*`. Both map to the same model."""
  import shutil

  from safetensors.numpy import load_file, save_file
  hf, model, _ = tiny_qwen
  saved = tmp_path / "saved"
  hf.save_pretrained(saved)
  tensors = load_file(str(saved / "model.safetensors"))
  assert any(k.startswith("visual.") for k in tensors) and any(k.startswith("model.layers.") for k in tensors)

  def in_memory_name(key):
    if key.startswith("visual."):
      return "model." + key
    return key.replace("model.", "model.language_model.", 1) if key.startswith("model.") else key

  shutil.copy(saved / "config.json", tmp_path / "config.json")
  save_file({in_memory_name(k): v for k, v in tensors.items()}, str(tmp_path / "model.safetensors"),
            metadata={"format": "pt"})
  reloaded, _ = load_qwen(tmp_path, dtype="float32")
  ours = dict(nnx.to_flat_state(nnx.state(model)))
  for path, value in nnx.to_flat_state(nnx.state(reloaded)):
    np.testing.assert_array_equal(np.asarray(value[...]), np.asarray(ours[path][...]))


def test_one_compile_for_new_image_sizes_inside_the_buckets(tiny_qwen):
  """Batches whose images differ in size (and count) but fit the same (length, visual, patch) buckets reuse one
  compiled program."""
  _, model, cfg = tiny_qwen
  traces = []

  @nnx.jit
  def counted(model, inputs):
    traces.append(1)  # runs once per trace, i.e. per compile
    tokens, _ = model.input_tokens(inputs)
    h, _, _ = decoding.prefill(model.language_model, tokens, extra_slots=0)
    return model.language_model.logits(h[:, -1])

  shapes = set()
  for grids in ([GRIDS[0], GRIDS[1]], [GRIDS[2], (1, 4, 6)], [(1, 10, 4), GRIDS[0]]):
    samples = [(prompt(3 + i, 2, 1, seed=60 + i), [g], [patches_for(g, 60 + i)]) for i, g in enumerate(grids)]
    inputs, _ = batch(cfg, samples)
    shapes.add((inputs.ids.shape, inputs.layout.max_visual, inputs.pixels.patches.shape))
    counted(model, inputs)
  assert len(shapes) == 1 and len(traces) == 1


def test_weight_map_covers_the_3b_checkpoint_layout():
  """Every weight of a Qwen2.5-VL-3B (its widths, vocab and tying; 4 decoder layers and 8 tower blocks instead of
  36 and 32 to keep tracing short; built on torch's meta device: shapes, no memory) maps to a parameter of our
  abstract model with the right shape, and every parameter is covered."""
  import re

  from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

  from jaxprune.models.qwen2_5_vl import HUB_CONFIGS, SHAPES, Qwen25VL, Qwen25VLConfig
  from jaxprune.models.qwen2_5_vl.weights import QWEN2_5_VL
  hub = HUB_CONFIGS["Qwen/Qwen2.5-VL-3B-Instruct"]
  assert SHAPES["qwen2.5-vl-3b"].num_layers == 36 and SHAPES["qwen2.5-vl-7b"].text.hidden_size == 3584
  shallow = dict(hub, num_hidden_layers=4)
  shallow["vision_config"] = dict(hub["vision_config"], depth=8, fullatt_block_indexes=[3, 7])
  cfg = Qwen25VLConfig.from_hf(shallow)
  assert cfg.text.tie_word_embeddings and cfg.vision.window_tokens == 4 and cfg.text.num_kv_heads == 2
  with torch.device("meta"):
    hf = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**shallow))
  abstract = nnx.eval_shape(lambda: Qwen25VL(cfg, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
  expected = {".".join(map(str, p)): tuple(v.shape) for p, v in nnx.to_flat_state(nnx.state(abstract))}
  rules = [(re.compile(rx), target, fn) for rx, target, fn in QWEN2_5_VL]
  filled = set()
  for key, tensor in hf.state_dict().items():
    if key == "lm_head.weight" and cfg.text.tie_word_embeddings:
      continue  # tied: not saved, not a parameter of ours
    for hub_key in (key, key.replace("model.language_model.", "model.").replace("model.visual.", "visual.")):
      rx, target, fn = next(r for r in rules if r[0].fullmatch(hub_key))
      target = rx.fullmatch(hub_key).expand(target)
      dummy = np.broadcast_to(np.float32(0), tuple(tensor.shape))  # no memory
      assert (fn(dummy) if fn else dummy).shape == expected[target], key
      filled.add(target)
  assert filled == set(expected)
  n_params = sum(int(np.prod(s)) for s in expected.values())
  assert n_params == sum(t.numel() for k, t in hf.state_dict().items() if k != "lm_head.weight")


def _dot_flops(jaxpr) -> int:
  """2 * output size * contracted size of every dot_general in a jaxpr, into sub-jaxprs (scan: times length)."""
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2 * int(np.prod(eqn.outvars[0].aval.shape)) * int(np.prod([lhs[i] for i in contract]))
    for value in eqn.params.values():
      inner = getattr(value, "jaxpr", value)
      if hasattr(inner, "eqns"):
        total += _dot_flops(inner) * (eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1)
  return total


def test_vision_flops_count_the_matmuls_the_tower_runs(tiny_qwen):
  """With every block full attention (the masked [P, P] product then does exactly what the formula counts),
  vision_flops equals the dot FLOPs in the traced tower; window blocks save their share of the keys."""
  import dataclasses

  from jaxprune.models.qwen2_5_vl.vision import VisionTower
  _, _, cfg = tiny_qwen
  full = dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, fullatt_block_indexes=(0, 1, 2)))
  grid = (1, 8, 8)  # 16 merged tokens, 2 x 2 whole windows
  inputs, _ = batch(cfg, [(prompt(1, 1, 1, seed=0), [grid], [patches_for(grid, 0)])], patch_multiple=64)
  tower = VisionTower(full.vision, dtype=jnp.float32, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(tower)
  jaxpr = jax.make_jaxpr(lambda s, px: nnx.merge(graphdef, s)(px))(state, inputs.pixels).jaxpr
  assert _dot_flops(jaxpr) == full.vision_flops(16)
  p, d = 64, cfg.vision.hidden_size
  assert full.vision_flops(16) - cfg.vision_flops(16) == 2 * 2 * 2 * p * (p - 16) * d  # 2 window blocks


def test_host_prompt_span_and_batch_match_transformers(tiny_qwen, tmp_path):
  """The family host (what eval calls): chat-template prompt with an exact question span, images of two sizes,
  a blind row without the image; padded to a full batch. Logits equal transformers' per row."""
  from PIL import Image
  hf, model, cfg = tiny_qwen
  tokenizer, image_processor = local_processor_files(tmp_path)
  qhost = host.Qwen25VLHost(cfg, tokenizer, image_processor, visual_multiple=32, patch_multiple=256)
  rng = np.random.RandomState(1)
  images = [Image.fromarray(rng.randint(0, 255, (32, 48, 3), np.uint8)),
            Image.fromarray(rng.randint(0, 255, (24, 40, 3), np.uint8))]
  prompts = [qhost.prompt("w5 w6 w7", True), qhost.prompt("w9 w10", True), qhost.prompt("w9 w10", False)]
  a, b = prompts[0].question_span
  assert tokenizer.decode(prompts[0].ids[a:b]) == "w5 w6 w7" and prompts[0].ids.count(IMAGE) == 1
  assert IMAGE not in prompts[2].ids
  pixels = qhost.pixels(images)
  inputs = qhost.batch(prompts, pixels + [[]], batch_size=4, bucket=32, pad_id=0)
  assert inputs.ids.shape[0] == 4
  logits = np.asarray(forward(model, inputs))
  for row, (prompt, images_of_row) in enumerate(zip(prompts, [[pixels[0]], [pixels[1]], []])):
    grids = [g for g, _ in images_of_row]
    ids = host.expand_image_tokens(prompt.ids, grids, cfg)
    query_ids = np.asarray(inputs.ids)[row][np.asarray(inputs.query)[row]]
    assert tokenizer.decode(query_ids.tolist()) == ("w5 w6 w7" if row == 0 else "w9 w10")
    ref = hf_logits(hf, ids, grids, [p for _, p in images_of_row])
    assert np.abs(logits[row, -len(ids):] - ref).max() <= TOL
