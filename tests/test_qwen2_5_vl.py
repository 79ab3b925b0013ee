"""Qwen2.5-VL's own checks on its tiny random checkpoint (tests/families/qwen2_5_vl.py; the family-free ones, parity
with transformers included, are in tests/families/test_conformance.py): config and weight map, the vision tower with
three image sizes in one batch (window attention, merged tokens, importance and keys), M-RoPE positions, the host
with the checkpoint's chat template and image processor, FLOPs, and pruning under M-RoPE (reindex, uniform on each
image's own grid)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from families.base import image_prompt, unpruned_logits
from families.qwen2_5_vl import END, GRIDS, IMAGE, START, hf_config, patches_for
from flax import nnx

from jaxprune.convert.hf import load_model
from jaxprune.generate import Generator
from jaxprune.models.qwen2_5_vl import host
from jaxprune.prompts import chat_prompt
from jaxprune.prune import scorers
from jaxprune.prune.pipeline import Pruner
from jaxprune.prune.select import kept_map

TOL = 1e-4
BUCKETS = dict(length_multiple=32, visual_multiple=32, patch_multiple=256)


def prompt(n_before, n_after, n_images, seed):
  return image_prompt(n_before, n_after, n_images, seed, [START, IMAGE, END])


def hf_logits(hf, ids, grids, patches):
  ids_t = torch.tensor([ids])
  kwargs = {}
  if grids:
    kwargs = dict(pixel_values=torch.tensor(np.concatenate(patches)), image_grid_thw=torch.tensor(grids),
                  mm_token_type_ids=(ids_t == IMAGE).int())
  with torch.no_grad():
    return hf(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), **kwargs).logits[0].numpy()


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
  logits = np.asarray(unpruned_logits(model, inputs))
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
  reloaded = load_model(tmp_path, dtype="float32").model  # the converter reads the in-memory key layout too
  ours = dict(nnx.to_flat_state(nnx.state(model)))
  for path, value in nnx.to_flat_state(nnx.state(reloaded)):
    np.testing.assert_array_equal(np.asarray(value[...]), np.asarray(ours[path][...]))


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
  logits = np.asarray(unpruned_logits(model, inputs))
  for row, (prompt, images_of_row) in enumerate(zip(prompts, [[pixels[0]], [pixels[1]], []])):
    grids = [g for g, _ in images_of_row]
    ids = host.expand_image_tokens(prompt.ids, grids, cfg)
    query_ids = np.asarray(inputs.ids)[row][np.asarray(inputs.query)[row]]
    assert tokenizer.decode(query_ids.tolist()) == ("w5 w6 w7" if row == 0 else "w9 w10")
    ref = hf_logits(hf, ids, grids, [p for _, p in images_of_row])
    assert np.abs(logits[row, -len(ids):] - ref).max() <= TOL


# ------------------------------------------------------------------------------------------- pruning

PRUNE_BUCKETS = dict(length_multiple=64, visual_multiple=8, patch_multiple=256)
_GENERATORS: dict = {}


def _generate(model, cfg, plan, inputs):
  """Two new tokens with a Generator shared by this module's pruning tests."""
  if id(model) not in _GENERATORS:
    _GENERATORS[id(model)] = Generator(model, max_new_tokens=2, eos_ids=(), pad_id=0)
  return _GENERATORS[id(model)](inputs, prune_points_fn=Pruner.build(plan, cfg), keep_logits=True)


def _python_reindex(kept):
  """The `reindex` rule under M-RoPE, in plain Python over the kept sequence (text and kept visual tokens, in
  order): text takes one past the largest id so far; an image starts right after what precedes it and each kept
  token keeps its (t, row, col) offset from that image's start."""
  out, next_free, current = [], 0, None
  for kind, value in kept:
    if kind == "text":
      out.append((next_free,) * 3)
      next_free, current = next_free + 1, None
      continue
    image, t, row, col = value
    if image != current:
      start, current = next_free, image
    new = (start + t, start + row, start + col)
    out.append(new)
    next_free = max(next_free, max(new) + 1)
  return out


@pytest.mark.parametrize("reindex", [None, False])
def test_layer0_reindex_follows_the_mrope_rule(tiny_qwen, reindex):
  """Two images (3x5 and 4x6 tokens) with text between, pruned at K = 0: with `reindex` (the default at K = 0) the
  kept tokens' positions equal the rule stated in plain Python; with reindex=false they keep the prompt's ids."""
  _, model, cfg = tiny_qwen
  grids = [GRIDS[2], GRIDS[1]]
  ids = host.expand_image_tokens(prompt(3, 4, 2, seed=7), grids, cfg)
  query = np.zeros(len(ids), bool)
  query[-4:] = True
  inputs = host.pack_batch([ids], [grids], [[patches_for(g, 300 + k) for k, g in enumerate(grids)]], cfg,
                           query=[query], **PRUNE_BUCKETS)
  options = "[seed=4]" if reindex is None else "[reindex=false,seed=4]"
  kept = _generate(model, cfg, f"random@0:12{options}", inputs)["kept"]
  valid = np.asarray(kept.valid[0])
  positions = np.asarray(kept.positions[0])[valid]
  patch, image = np.asarray(kept.patch[0])[valid], np.asarray(kept.image[0])[valid]
  layout = inputs.layout
  assert image.sum() == 12 and len(set(np.asarray(layout.image[0])[patch[image]])) == 2  # both images pruned
  original = host.rope_positions(ids, grids, cfg)  # [L, 3] of the unpadded prompt
  slot_of = np.cumsum(np.asarray(ids) == IMAGE) - 1  # visual slot of each prompt position
  kept_prompt = [i for i in range(len(ids)) if ids[i] != IMAGE or slot_of[i] in set(patch[image].tolist())]
  if reindex is False:
    np.testing.assert_array_equal(positions, original[kept_prompt])
  else:
    seq = [("text", None) if ids[i] != IMAGE else
           ("image", tuple(int(np.asarray(f[0])[slot_of[i]]) for f in (layout.image, layout.t, layout.row, layout.col)))
           for i in kept_prompt]
    np.testing.assert_array_equal(positions, np.asarray(_python_reindex(seq)))
    # (whether the text after an image moves up depends on the draw: only if the kept cells miss the image's
    # last row and column; the rule above covers both cases)
  # decoding continues one past the largest id on any axis
  assert positions[-1, 0] == positions.max()


def test_uniform_uses_each_images_own_grid(tiny_qwen):
  """uniform on non-square images keeps the lattice of `uniform_layout_scores` for that grid: 4x6 tokens, keep 6
  -> rows {1, 3} x cols {1, 3, 5}; 3x5 tokens, keep 4 -> rows {0, 2} x cols {1, 3}. Kept-token maps read the
  layout's (row, col) per slot."""
  _, model, cfg = tiny_qwen
  samples = [(prompt(2 + 3 * i, 7 + 2 * i, 1, seed=100 + i), [g], [patches_for(g, 200 + i)])
             for i, g in enumerate((GRIDS[1], GRIDS[2]))]
  inputs, _ = batch(cfg, samples, **PRUNE_BUCKETS)
  row, col = np.asarray(inputs.layout.row), np.asarray(inputs.layout.col)
  for keep, expected in ((6, [{(1, 1), (1, 3), (1, 5), (3, 1), (3, 3), (3, 5)}, None]),
                         (4, [None, {(0, 1), (0, 3), (2, 1), (2, 3)}])):
    maps = np.asarray(kept_map(_generate(model, cfg, f"uniform@0:{keep}", inputs)["kept"], inputs.layout.max_visual))
    lattice = np.asarray(scorers.uniform_layout_scores(inputs.layout, keep)) > 0
    for b in range(2):
      np.testing.assert_array_equal(maps[b], lattice[b])
      cells = {(int(row[b, s]), int(col[b, s])) for s in np.flatnonzero(maps[b])}
      assert len(cells) == keep
      if expected[b] is not None:
        assert cells == expected[b]
