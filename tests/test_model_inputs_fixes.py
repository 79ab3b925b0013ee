"""Issue 31, model side: multi-image prompts through the LLaVA-OneVision and Gemma 3 hosts equal transformers,
Gemma 3's `final_logit_softcapping` as transformers' VLM applies it (not at all), keep >= a prompt's real visual
count keeps every real token (exactly what holds when keep < the padded slots), and bad special token ids in
config.json refused in one line when the config (or the host, for the tokenizer) loads."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from families.base import unpruned_logits
from families.gemma3 import BUCKET as GEMMA_BUCKET
from families.gemma3 import hf_config as gemma_hf_config
from families.gemma3 import pixels_for
from families.gemma3 import prompt as gemma_prompt
from families.gemma3 import randomize as gemma_randomize
from families.llava_onevision import IMAGE as OV_IMAGE
from families.llava_onevision import hf_config as ov_hf_config
from PIL import Image
from test_gemma3 import gemma_processor  # noqa: F401 (a fixture)
from test_llava_onevision import local_processor_files

from jaxprune.core.tokens import Tokens, VisionSignals, VisualLayout, make_tokens
from jaxprune.prompts import chat_prompt
from jaxprune.prune.methods import METHODS, Method
from jaxprune.prune.pipeline import Pruner
from jaxprune.prune.plan import PrunePlan, Stage

TOL = 1e-4


def _pil(shape, seed):
  return Image.fromarray(np.random.RandomState(seed).randint(0, 255, shape, np.uint8))


# ------------------------------------------------------------------------ 1. OneVision: two images, one prompt


def test_onevision_two_image_prompt_through_the_host_equals_transformers(tiny_onevision, tmp_path):
  """Two non-square images in one prompt: the host pads each to a square before resizing (the image processor's
  multi-image rule for a nested list, what transformers' processor passes), so ids and logits equal
  transformers' on the processor's own output."""
  from jaxprune.models.llava_onevision import host
  hf, model, cfg, _ = tiny_onevision
  tokenizer, image_processor = local_processor_files(tmp_path)
  ohost = host.OnevisionHost(cfg, tokenizer, image_processor, visual_multiple=32)
  pil = [_pil((12, 40, 3), 1), _pil((40, 20, 3), 2)]
  question = "w5 w6 w7"
  prompt = ohost.prompt(question, True, num_images=2)
  inputs = ohost.batch([prompt], [ohost.pixels(pil)], batch_size=1, bucket=64, pad_id=0)
  ref = image_processor(images=[pil], return_tensors="pt")  # one prompt's images: a nested list
  ids = tokenizer(chat_prompt(tokenizer, question, 2), add_special_tokens=False)["input_ids"]
  ids = [y for x in ids for y in ([x] * (16 + 1) if x == OV_IMAGE else [x])]  # base view + one newline each
  assert np.asarray(inputs.ids)[0, -len(ids):].tolist() == ids
  ids_t = torch.tensor([ids])
  with torch.no_grad():
    theirs = hf(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), pixel_values=ref["pixel_values"],
                image_sizes=ref["image_sizes"], batch_num_images=ref["batch_num_images"]).logits[0].numpy()
  ours = np.asarray(unpruned_logits(model, inputs))[0, -len(ids):]
  assert np.abs(ours - theirs).max() <= TOL


# ------------------------------------------------------------------------ 2. Gemma 3: final_logit_softcapping


def test_gemma3_final_logit_softcapping_is_not_applied_as_in_transformers(tmp_path):
  """transformers' Gemma3ForConditionalGeneration applies its lm_head without the text config's cap (only the
  text-only Gemma3ForCausalLM caps): with a cap of 2 set, our logits equal its uncapped ones."""
  from transformers import Gemma3ForConditionalGeneration

  from jaxprune.convert.hf import load_model
  hf_cfg = gemma_hf_config()
  hf_cfg.text_config.final_logit_softcapping = 2.0
  torch.manual_seed(1)
  hf = Gemma3ForConditionalGeneration(hf_cfg).eval()
  gemma_randomize(hf)
  hf.save_pretrained(tmp_path)
  hf = Gemma3ForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float32).eval()
  loaded = load_model(tmp_path, dtype="float32")
  assert loaded.config.text.final_logit_softcapping is None
  ids, pixels = gemma_prompt(3, 9, seed=1), pixels_for(1, seed=1)
  ids_t = torch.tensor([ids])
  with torch.no_grad():
    theirs = hf(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), pixel_values=torch.tensor(pixels),
                token_type_ids=(ids_t == 150).long()).logits[0].numpy()
  assert np.abs(theirs).max() > 2.0  # the cap would change them
  from jaxprune.generate import pad_batch
  inputs = pad_batch([ids], pad_id=0, multiple=GEMMA_BUCKET, pixels=pixels)
  ours = np.asarray(unpruned_logits(loaded.model, inputs))[0, -len(ids):]
  assert np.abs(ours - theirs).max() <= TOL


# ------------------------------------------------------------------------ 3. Gemma 3: two images, one prompt


def test_gemma3_two_image_prompt_through_the_host_equals_transformers(tiny_gemma, gemma_processor):
  from jaxprune.inputs import InputError
  from jaxprune.models.gemma3 import Gemma3Host
  hf, loaded, _ = tiny_gemma
  tokenizer, image_processor, processor = gemma_processor
  pil = [_pil((40, 56, 3), 3), _pil((30, 20, 3), 4)]
  question = "what color is the shape ?"
  content = [{"type": "image", "image": im} for im in pil] + [{"type": "text", "text": question}]
  ref = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                      tokenize=True, return_dict=True, return_tensors="np")
  ghost = Gemma3Host(loaded.config, tokenizer, image_processor)
  prompt = ghost.prompt(question, with_image=True, num_images=2)
  assert prompt.ids == ref["input_ids"][0].tolist()
  assert tokenizer.decode(prompt.ids[slice(*prompt.question_span)]) == question
  pixels = ghost.pixels(pil)
  np.testing.assert_array_equal(pixels, ref["pixel_values"])
  inputs = ghost.batch([prompt], ghost.join([pixels]), batch_size=1, bucket=GEMMA_BUCKET, pad_id=0)
  ours = np.asarray(unpruned_logits(loaded.model, inputs))[0, -len(prompt.ids):]
  with torch.no_grad():
    theirs = hf(input_ids=torch.tensor(ref["input_ids"]), pixel_values=torch.tensor(ref["pixel_values"]),
                token_type_ids=torch.tensor(ref["token_type_ids"])).logits[0].numpy()
  assert np.abs(ours - theirs).max() <= TOL
  with pytest.raises(InputError, match="same number of images in every prompt; got 1, 2") as e:
    ghost.join([pixels[:1], pixels])
  assert "\n" not in str(e.value)


# ------------------------------------------------------------------------ 4. keep >= the real visual count


@dataclasses.dataclass(frozen=True)
class _Scores(Method):
  """A test method whose scores are given: -inf or NaN at some real tokens."""

  table: tuple = ()

  def score(self, ctx):
    return jnp.broadcast_to(jnp.asarray(self.table, jnp.float32), ctx.image_idx.shape)


def _padded_tokens() -> tuple[Tokens, VisionSignals]:
  """One row: left padding, 2 padded visual slots, text, 3 real visual tokens, text (L = 8, slots N = 5)."""
  image = np.array([[0, 1, 1, 0, 1, 1, 1, 0]], bool)
  valid = np.array([[0, 0, 0, 1, 1, 1, 1, 1]], bool)
  hidden = jnp.arange(8, dtype=jnp.float32).reshape(1, 8, 1) * jnp.ones((1, 1, 4))  # [B, L, D]
  tokens = make_tokens(hidden, jnp.asarray(valid), jnp.asarray(image))
  layout = VisualLayout.from_grids([[(1, 1, 3)]], 5)
  return tokens, VisionSignals(features=jnp.zeros((1, 5, 4)), layout=layout)


@pytest.mark.parametrize("real_score", [-np.inf, np.nan])
def test_keep_at_least_the_real_count_keeps_every_real_token_whatever_its_score(monkeypatch, real_score):
  """Padded slots come first in the sequence (left padding) and used to win ties with a real token scored
  -inf (or NaN) by the lower index, so keep = the real count could drop a real token for a padded slot."""
  tokens, vision = _padded_tokens()
  # scores in sequence order of the 5 visual positions: 2 padded slots, then 3 real tokens
  monkeypatch.setitem(METHODS, "given", _Scores("given", table=(0.0, 0.0, real_score, 1.0, real_score)))
  stage = Stage("given", 1, 3)
  out = Pruner(PrunePlan((stage,)), None)._prune(stage, 5, None, vision, tokens, None)
  assert out.length == 8 - 5 + 3
  kept = np.asarray(out.image & out.valid)[0]
  assert kept.sum() == 3  # every real token
  np.testing.assert_array_equal(np.asarray(out.hidden)[0, :, 0][kept], [4.0, 5.0, 6.0])
  np.testing.assert_array_equal(np.asarray(out.positions)[0][kept], np.asarray(tokens.positions)[0][4:7])


def test_keep_of_the_real_count_below_the_padded_slots_on_onevision(tiny_onevision):
  """What the README may promise for families with padded visual slots: keep >= the visual slots skips the stage
  (bit-identical, tested per family); keep = the prompt's real count (< slots) keeps every real token at its
  position, and the logits equal the unpruned ones to float rounding (the shorter sequence sums in another order),
  not bit for bit."""
  from families.llava_onevision import SIZES, image_for
  from test_llava_onevision import prompt as ov_prompt

  from jaxprune.generate import Generator
  from jaxprune.models.llava_onevision import host
  from jaxprune.prune.select import kept_map
  _, model, cfg, _ = tiny_onevision
  images = [image_for(SIZES[1], cfg, 5)]
  ids = host.expand_image_tokens(ov_prompt(3, 6, 1, seed=5), images, cfg)
  inputs = host.pack_batch([ids], [images], cfg, visual_multiple=32)
  real, slots = int(np.asarray(inputs.layout.valid).sum()), inputs.layout.max_visual
  assert real < slots
  run = Generator(model, max_new_tokens=1, eos_ids=(), pad_id=0)
  base = run(inputs, keep_logits=True)
  out = run(inputs, prune_points_fn=Pruner.build(f"random@1:{real}", cfg), keep_logits=True)
  np.testing.assert_array_equal(np.asarray(kept_map(out["kept"], slots)), np.asarray(inputs.layout.valid))
  assert np.abs(np.asarray(out["logits"]) - np.asarray(base["logits"])).max() <= TOL


# ------------------------------------------------------------------------ 5. special token ids in config.json


def _one_line_error(build, match):
  with pytest.raises(ValueError, match=match) as e:
    build()
  assert "\n" not in str(e.value)


def test_config_token_ids_out_of_vocab_or_colliding_with_text_are_one_line():
  from conftest import tiny_llava_hf_config
  from families.qwen2_5_vl import hf_config as qwen_hf_config

  from jaxprune.models.gemma3 import Gemma3Config
  from jaxprune.models.llava.config import LlavaConfig
  from jaxprune.models.llava_onevision import OnevisionConfig
  from jaxprune.models.qwen2_5_vl import Qwen25VLConfig
  qwen = qwen_hf_config().to_dict()
  _one_line_error(lambda: Qwen25VLConfig.from_hf(dict(qwen, image_token_id=160)),
                  r"config.json: image_token_id=160 lies outside the decoder's vocab \(vocab_size=160\)")
  _one_line_error(lambda: Qwen25VLConfig.from_hf(dict(qwen, vision_start_token_id=10**6)),
                  "vision_start_token_id=1000000 lies outside")
  llava = tiny_llava_hf_config().to_dict()
  _one_line_error(lambda: LlavaConfig.from_hf(dict(llava, image_token_index=2)),
                  "image_token_index=2 is also eos_token_id=2")
  onevision = ov_hf_config().to_dict()
  _one_line_error(lambda: OnevisionConfig.from_hf(dict(onevision, video_token_index=OV_IMAGE)),
                  f"video_token_index={OV_IMAGE} is also image_token_index={OV_IMAGE}")
  gemma = gemma_hf_config().to_dict()
  _one_line_error(lambda: Gemma3Config.from_hf(dict(gemma, boi_token_index=500)), "boi_token_index=500 lies outside")
  _one_line_error(lambda: Gemma3Config.from_hf(dict(gemma, image_token_index=0)),
                  "image_token_index=0 is also pad_token_id=0")
  _one_line_error(lambda: Gemma3Config.from_hf(dict(gemma, image_token_index="150")), "is not a token id")


def test_host_refuses_an_image_token_id_that_is_ordinary_text(tiny_onevision, tiny_gemma, gemma_processor,
                                                            tmp_path):
  """A config whose placeholder id is an ordinary word: that word in a prompt would become image slots (and the
  real placeholder would not); refused when the host is built, before any prompt or compile."""
  from jaxprune.models.gemma3 import Gemma3Host
  from jaxprune.models.llava_onevision.host import OnevisionHost
  cfg = tiny_onevision[2]
  tokenizer, image_processor = local_processor_files(tmp_path)
  _one_line_error(lambda: OnevisionHost(dataclasses.replace(cfg, image_token_id=9), tokenizer, image_processor),
                  r"config.json: image_token_index=9 is the tokenizer's ordinary text token 'w5', which would turn "
                  r"that text into image slots; its image placeholder '<image>' is id 150")
  gemma_cfg = tiny_gemma[1].config
  g_tokenizer, g_image_processor, _ = gemma_processor
  host = lambda **ids: Gemma3Host(dataclasses.replace(gemma_cfg, **ids), g_tokenizer, g_image_processor)
  _one_line_error(lambda: host(image_token_id=12), "image_token_index=12 is the tokenizer's ordinary text token 'is'")
  _one_line_error(lambda: host(eoi_token_id=140), "eoi_token_index=140 does not match the tokenizer")


def test_llava_host_refuses_an_ordinary_text_token_and_the_eval_says_one_line(tiny_eval_model, tmp_path, capsys):
  """LLaVA-1.5's host inserts the id itself, so only the id's kind is checked; the eval turns a family's config
  check (here image_token_index = eos) into one line and exit 2 at load, not a traceback."""
  import json
  import shutil

  from transformers import AutoTokenizer

  from jaxprune import eval as jeval
  from jaxprune.models.llava.host import LlavaHost
  from jaxprune.models.registry import family_for
  hf_config = json.loads((tiny_eval_model / "config.json").read_text())
  cfg = family_for(hf_config, "tiny").config_from_hf(hf_config)
  tokenizer = AutoTokenizer.from_pretrained(tiny_eval_model)
  word = tokenizer.convert_tokens_to_ids("shape")
  _one_line_error(lambda: LlavaHost(dataclasses.replace(cfg, image_token_id=word), tokenizer),
                  f"image_token_index={word} is the tokenizer's ordinary text token 'shape'")
  bad = tmp_path / "bad"
  shutil.copytree(tiny_eval_model, bad)
  hf_config["image_token_index"] = hf_config["text_config"]["eos_token_id"]
  (bad / "config.json").write_text(json.dumps(hf_config))
  code = jeval.main(["--model", str(bad), "--tasks", "easyvqa", "--limit", "1", "--output-path", str(tmp_path / "o")])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and "image_token_index=2" in err[0], err


def test_llava_host_takes_two_images_per_prompt_and_matches_transformers(tiny_llava, tiny_eval_model):
  """LLaVA-1.5's host: several images per prompt (placeholders on their own lines, as llava-hf's chat template
  renders them), joined to [B, I, C, H, W]; the logits equal transformers' on the same ids and pixels; a batch
  with mixed image counts is refused in one line."""
  from conftest import TINY_IMAGE_TOKEN, TINY_NV
  from transformers import AutoTokenizer

  from jaxprune.convert.hf import load_model
  from jaxprune.generate import prefill
  from jaxprune.inputs import InputError
  loaded = load_model(tiny_eval_model, dtype="float32")
  host = loaded.family.host(loaded.config, AutoTokenizer.from_pretrained(tiny_eval_model))
  two, one = host.prompt("what color is the shape ?", True, num_images=2), host.prompt("is it red ?", True)
  assert (np.asarray(two.ids) == TINY_IMAGE_TOKEN).sum() == 2 * TINY_NV  # (this word tokenizer drops "\n")
  images = [_pil((32, 32, 3), seed) for seed in range(3)]
  pixels = host.join([host.pixels(images[:2]), host.pixels(images[1:])])  # [B, I, C, H, W]
  assert pixels.shape == (2, 2, 3, 32, 32)
  batch = host.batch([two, two], pixels, batch_size=2, bucket=8, pad_id=0)
  _, _, _, h = prefill(loaded.model, batch, extra_slots=0)
  ours = np.asarray(loaded.model.language_model.logits(h))
  hf = tiny_llava[0]
  for row in range(2):
    with torch.no_grad():
      ref = hf(input_ids=torch.tensor([two.ids]), pixel_values=torch.tensor(pixels[row])).logits[0].numpy()
    assert np.abs(ours[row, -len(two.ids):] - ref).max() <= 1e-4
  with pytest.raises(InputError, match="same number of images in every prompt; got 1, 2"):
    host.join([host.pixels(images[:1]), host.pixels(images[:2])])
  with pytest.raises(InputError, match="expected 32 for 2 image"):
    host.batch([one, one], pixels, batch_size=2, bucket=8, pad_id=0)
