"""The model-family interface: LLaVA-1.5 beyond one feature layer, layout-based spatial scores,
M-RoPE renumbering, and the rule that only a family's own folder names its classes."""

from __future__ import annotations

import math
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import TINY_IMAGE_TOKEN, TINY_NV, tiny_llava_hf_config, tiny_pixels

from jaxprune.core.tokens import VisualLayout, make_tokens
from jaxprune.generate import pad_batch, prefill
from jaxprune.prune import scorers
from jaxprune.prune.select import renumber_positions

TOL = 1e-4
PACKAGE = Path(__file__).resolve().parents[1] / "jaxprune"


def _hf_logits(hf, ids, pixels):
  with torch.no_grad():
    return hf(input_ids=torch.tensor([ids]), pixel_values=torch.tensor(pixels)).logits[0].numpy()


@pytest.fixture(scope="module")
def llava_feature_list(tmp_path_factory):
  from transformers import LlavaForConditionalGeneration

  from jaxprune.convert.hf import load_model
  cfg = tiny_llava_hf_config()
  cfg.vision_feature_layer = [-3, -1]  # transformers concatenates the listed layers' features
  torch.manual_seed(1)
  hf = LlavaForConditionalGeneration(cfg).eval()
  path = tmp_path_factory.mktemp("llava_feature_list")
  hf.save_pretrained(path)
  return hf, load_model(path, dtype="float32")


def test_llava_list_of_feature_layers_matches_transformers(llava_feature_list):
  hf, loaded = llava_feature_list
  assert loaded.config.feature_layers == (1, 3)
  rng = np.random.RandomState(3)
  prompt = [1] + rng.randint(3, 120, 4).tolist() + [TINY_IMAGE_TOKEN] * TINY_NV + rng.randint(3, 120, 6).tolist()
  pixels = tiny_pixels(1, seed=9)
  batch = pad_batch([prompt], pad_id=0, multiple=1, pixels=pixels)
  _, _, _, h = prefill(loaded.model, batch, extra_slots=0)
  ours = np.asarray(loaded.model.language_model.logits(h))[0]
  assert np.abs(ours - _hf_logits(hf, prompt, pixels)).max() <= TOL


def _uniform_reference(gh: int, gw: int, keep: int) -> set[int]:
  """Plain-Python statement of the rule in `uniform_layout_scores` (errors compared to 1e-5)."""
  best = None
  for kh in range(1, keep + 1):
    kw = keep // kh
    if kh * kw != keep or kw > gw or kh > gh:
      continue
    err = round(abs(math.log(kh / kw) - math.log(gh / gw)) * 1e5)
    if err <= round(math.log(2) * 1e5) and (best is None or err < best[0]):
      best = (err, kh, kw)
  centres = lambda n, m: [((2 * i + 1) * n) // (2 * m) for i in range(m)]
  if best is None:
    return set(centres(gh * gw, keep))
  _, kh, kw = best
  return {r * gw + c for r in centres(gh, kh) for c in centres(gw, kw)}


def test_uniform_on_any_grid_equals_plain_python():
  grids = [(4, 4), (3, 5), (7, 4), (12, 9), (1, 6)]
  layout = VisualLayout.from_grids([[(1, h, w)] for h, w in grids], max(h * w for h, w in grids))
  for keep in (1, 2, 3, 4, 5, 6, 8, 9, 12):
    got = np.asarray(scorers.uniform_layout_scores(layout, keep))
    for i, (h, w) in enumerate(grids):
      want = _uniform_reference(h, w, min(keep, h * w))
      assert set(np.flatnonzero(got[i])) == want, (h, w, keep)


def test_uniform_splits_keep_over_images_and_never_picks_padding():
  layout = VisualLayout.from_grids([[(1, 4, 4), (1, 2, 3)], [(1, 3, 3)]], 22)
  got = np.asarray(scorers.uniform_layout_scores(layout, 4))
  assert got[0, :16].sum() == 2 and got[0, 16:22].sum() == 2  # ceil(4 / 2 images) per image
  assert got[1, 9:].sum() == 0 and got[1, :9].sum() == 4


def test_mrope_renumbering_keeps_image_offsets_and_closes_gaps():
  # text t0 t1 | image (2x3 grid starting at position 2; kept: its cells (0,1), (1,2)) | text t2 t3
  pos = np.array([[0, 0, 0], [1, 1, 1],
                  [2, 2, 3], [2, 3, 4],  # kept image cells (row 0, col 1) and (row 1, col 2)
                  [5, 5, 5], [6, 6, 6]], np.int32)  # text after the full image continued at 2 + 2 + 1 = 5
  image = np.array([0, 0, 1, 1, 0, 0], bool)
  tokens = make_tokens(jnp.zeros((1, 6, 4)), jnp.ones((1, 6), bool), jnp.asarray(image)[None],
                       positions=jnp.asarray(pos)[None], image_id=jnp.asarray(np.where(image, 0, -1))[None])
  new = np.asarray(renumber_positions(tokens).positions)[0]
  np.testing.assert_array_equal(new[:4], pos[:4])  # nothing before or inside the image moves
  np.testing.assert_array_equal(new[4:], [[5, 5, 5], [6, 6, 6]])  # largest kept id is 4: text continues at 5
  # drop the image's first row: the remaining cell keeps its offsets from the image start
  keep = np.array([0, 1, 3, 4, 5])
  sub = make_tokens(jnp.zeros((1, 5, 4)), jnp.ones((1, 5), bool), jnp.asarray(image[keep])[None],
                    positions=jnp.asarray(pos[keep])[None], image_id=jnp.asarray(np.where(image[keep], 0, -1))[None])
  np.testing.assert_array_equal(np.asarray(renumber_positions(sub).positions)[0],
                                [[0, 0, 0], [1, 1, 1], [2, 3, 4], [5, 5, 5], [6, 6, 6]])


def test_one_dim_renumbering_is_contiguous():
  valid = jnp.asarray([[False, True, True, True]])
  tokens = make_tokens(jnp.zeros((1, 4, 2)), valid, jnp.zeros((1, 4), bool),
                       positions=jnp.asarray([[[0], [0], [5], [9]]]))
  np.testing.assert_array_equal(np.asarray(renumber_positions(tokens).positions)[0, 1:, 0], [0, 1, 2])


def test_padded_visual_slots_take_slots_after_the_real_ones():
  image = jnp.asarray([[True, False, True, True, False]])  # slot padding placed first in the row
  valid = jnp.asarray([[False, True, True, True, True]])
  tokens = make_tokens(jnp.zeros((1, 5, 2)), valid, image)
  np.testing.assert_array_equal(np.asarray(tokens.patch)[0], [2, -1, 0, 1, -1])


def _family_class_names(folder: Path) -> set[str]:
  text = "\n".join(p.read_text() for p in folder.glob("*.py"))
  return set(re.findall(r"^class (\w+Config)\b", text, flags=re.M))


def test_no_module_outside_a_family_folder_names_its_config_class():
  families = [p for p in (PACKAGE / "models").iterdir() if p.is_dir() and (p / "__init__.py").exists()]
  assert families, "no family folders found"
  recipes = PACKAGE / "recipes"
  for family in families:
    names = _family_class_names(family)
    for path in PACKAGE.rglob("*.py"):
      if family in path.parents or recipes in path.parents:
        continue
      text = path.read_text()
      for name in names:
        assert not re.search(rf"\b{name}\b", text), f"{path.relative_to(PACKAGE)} names {family.name}'s {name}"


def test_a_family_is_its_folder_plus_one_registry_line():
  """Every family folder is registered by its name alone (one line: `FAMILY_PACKAGES`), the registry names no
  family anywhere else, and presets and shapes come from the families themselves."""
  from jaxprune.models import registry
  folders = {p.name for p in (PACKAGE / "models").iterdir() if (p / "__init__.py").exists()}
  assert set(registry.FAMILY_PACKAGES) == folders
  lines = (PACKAGE / "models" / "registry.py").read_text().splitlines()
  for name in folders:
    naming = [line for line in lines if re.search(rf"(?<![\w-]){name}(?![\w-])", line)]  # not llava-scenes
    assert len(naming) == 1 and naming[0].startswith("FAMILY_PACKAGES = "), (name, naming)
  for family in registry.VLM_FAMILIES:
    assert family.host is not None and family.presets and family.shapes, family.name
    assert all(registry.PRESETS[k] == v for k, v in family.presets.items())
    assert all(registry.SHAPES[k] is v for k, v in family.shapes.items())
  assert len(registry.PRESETS) == sum(len(f.presets) for f in registry.VLM_FAMILIES)  # no name claimed twice


def _module_level_imports() -> dict[str, set[str]]:
  """jaxprune module -> the jaxprune modules it imports when it is imported (module body, not inside functions)."""
  import ast
  modules = {".".join(("jaxprune", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__"): p
             for p in PACKAGE.rglob("*.py")}
  graph = {}
  for name, path in modules.items():
    deps = set()
    for node in ast.parse(path.read_text()).body:
      if isinstance(node, ast.Import):
        deps |= {a.name for a in node.names}
      elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxprune"):
        deps |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    graph[name] = {d for d in deps if d in modules and d != name}
  return graph


def test_imports_point_down_and_never_circle():
  """No module-level import cycle in jaxprune/, and a family folder imports nothing from the layers that use it
  (convert, generate, eval, prune, the registry); only its package index imports its host."""
  graph = _module_level_imports()
  state: dict[str, int] = {}

  def visit(name, path):
    state[name] = 1
    for dep in graph[name]:
      assert state.get(dep) != 1, f"import cycle: {' -> '.join([*path, dep])}"
      if dep not in state:
        visit(dep, [*path, dep])
    state[name] = 2

  for name in graph:
    if name not in state:
      visit(name, [name])
  upper = ("jaxprune.convert", "jaxprune.generate", "jaxprune.eval", "jaxprune.prune", "jaxprune.models.registry")
  for name, deps in graph.items():
    if name.startswith("jaxprune.models.") and name.count(".") >= 3:  # inside a family folder
      assert not [d for d in deps if d.startswith(upper)], (name, deps)
      if not name.endswith(".host"):
        assert not [d for d in deps if d.endswith(".host")], (name, deps)
