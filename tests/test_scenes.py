"""The `scenes` lab task: deterministic generator, answers that follow from the objects, exact relevance
masks on the patch grid, balance (text-only floor near chance), oracle / anti-oracle keep orders, tfds."""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest

from jaxprune.data import common, load_task, scenes

N_CHECK = 400  # Items checked one by one (~1 s to generate).


@pytest.fixture(scope="module")
def test_items() -> list[dict]:
  return [scenes.make_item("test", i) for i in range(800)]


@pytest.fixture(scope="module")
def train_items() -> list[dict]:
  return [scenes.make_item("train", i) for i in range(2000)]


# ------------------------------------------------------------------------------------ generator


def test_generator_is_deterministic_for_a_seed():
  for i in range(12):
    assert scenes.make_item("test", i, seed=7) == scenes.make_item("test", i, seed=7)


def test_seeds_and_splits_give_different_scenes():
  for i in range(12):
    a, b, c = (scenes.make_item("test", i, 0), scenes.make_item("test", i, 1), scenes.make_item("train", i, 0))
    assert a["image"] != b["image"] and a["image"] != c["image"]
    assert a["metadata"]["question_type"] == b["metadata"]["question_type"]  # Types rotate with the index.


def test_answers_and_referenced_objects_follow_from_the_objects(test_items):
  """An independent solver, reading only the stored objects, gets the same answer and referenced set
  (so every question is unambiguous: one named object, one anchor, one target)."""
  for item in test_items[:N_CHECK]:
    meta = item["metadata"]
    answer, referenced = scenes.solve(meta["question_type"], meta["form"], meta["params"],
                                      scenes.scene_from_metadata(meta))
    assert (answer, list(referenced)) == (item["answer"], meta["referenced"]), item["id"]
    assert referenced, item["id"]  # Every item has evidence to keep (counts start at 1).
    assert meta["ref_positions"] == [[meta["objects"][r]["x"], meta["objects"][r]["y"]] for r in referenced]


def test_distractors_share_an_attribute(test_items):
  """Colour or shape alone never answers: some unreferenced object shares an attribute with a referenced one."""
  for item in test_items[:N_CHECK]:
    meta = item["metadata"]
    objects = meta["objects"]
    refs = [objects[r] for r in meta["referenced"]]
    others = [o for i, o in enumerate(objects) if i not in meta["referenced"]]
    if meta["question_type"] == "existence" and item["answer"] == "no":
      continue  # Its referenced objects are themselves the near misses.
    assert any(o["shape"] == r["shape"] or o["colour"] == r["colour"] for o in others for r in refs), item["id"]
    assert scenes.MIN_OBJECTS <= len(objects) <= scenes.MAX_OBJECTS


def test_relevance_mask_is_exactly_the_referenced_objects_pixels(test_items):
  for item in test_items[:100]:
    meta = item["metadata"]
    objects = scenes.scene_from_metadata(meta)
    masks = [scenes.object_mask(o) for o in objects]
    expected = np.any([masks[r] for r in meta["referenced"]], axis=0)
    np.testing.assert_array_equal(scenes.relevance_mask(item), expected)
    assert all(m.sum() >= 40 for m in masks)  # Every object is visible (radius >= 6 px).
    assert np.stack(masks).sum(0).max() == 1  # Objects never overlap.
    image = common.decode_image(item["image"]).astype(int)
    for obj, mask in zip(objects, masks):  # Each object is painted in its own colour class.
      mean = image[mask].mean(0)
      nearest = min(scenes.COLOURS, key=lambda c: np.abs(np.array(scenes.COLOURS[c]) - mean).sum())
      assert nearest == obj.colour
    assert (image[~np.any(masks, axis=0)] == scenes.BACKGROUND).all()


def _cells_brute_force(mask: np.ndarray, gh: int, gw: int) -> np.ndarray:
  """Cell (r, c) covers [r*H/gh, (r+1)*H/gh) x [c*W/gw, (c+1)*W/gw); it is relevant if a relevant pixel
  [y, y+1) x [x, x+1) overlaps it by a positive area (float geometry, one pixel at a time)."""
  h, w = mask.shape

  def overlaps(cells: int, size: int, p: int) -> np.ndarray:  # [cells]: cell spans meet [p, p + 1)
    lo = np.arange(cells) * size / cells
    return np.minimum(p + 1, lo + size / cells) - np.maximum(p, lo) > 1e-9

  out = np.zeros((gh, gw), bool)
  for y, x in zip(*np.nonzero(mask)):
    out |= overlaps(gh, h, y)[:, None] & overlaps(gw, w, x)[None, :]
  return out.ravel()


def test_masks_line_up_with_the_patch_grid(test_items):
  for item in test_items[:12]:
    meta = item["metadata"]
    mask = scenes.relevance_mask(item)
    # 96 px, patch 8 -> 12x12: a cell is relevant iff its 8x8 block holds a referenced pixel.
    blocks = mask.reshape(12, 8, 12, 8).any(axis=(1, 3)).ravel()
    np.testing.assert_array_equal(scenes.relevant_cells(item, 12, 12), blocks)
    # Grids that do not divide the image (a pixel may touch two cells).
    for gh, gw in ((14, 14), (7, 10)):
      np.testing.assert_array_equal(scenes.relevant_cells(mask, gh, gw), _cells_brute_force(mask, gh, gw))
    # Per object: its cells are the cells its pixels touch, and the item's cells are their union.
    per_object = [scenes.relevant_cells(scenes.object_mask(o), 12, 12) for o in scenes.scene_from_metadata(meta)]
    np.testing.assert_array_equal(np.any([per_object[r] for r in meta["referenced"]], axis=0), blocks)
    for r in meta["referenced"]:
      x0, y0, x1, y1 = meta["objects"][r]["box"]
      rows, cols = np.nonzero(per_object[r].reshape(12, 12))
      assert rows.min() >= y0 // 8 and rows.max() <= (y1 - 1) // 8 and cols.min() >= x0 // 8 and cols.max() <= (x1 - 1) // 8


def test_relevant_cells_by_hand():
  mask = np.zeros((96, 96), bool)
  mask[8, 15] = True  # Row 8 -> cell row 1; col 15 -> cell col 1 (8 px patches).
  assert np.flatnonzero(scenes.relevant_cells(mask, 12, 12)).tolist() == [13]
  mask[:] = False
  mask[6, 0] = True  # 14 rows of 96/14 = 6.86 px: pixel row 6 spans rows 6..7, in cells 0 and 1.
  assert np.flatnonzero(scenes.relevant_cells(mask, 14, 14)).tolist() == [0, 14]
  assert not scenes.relevant_cells(np.zeros((96, 96), bool), 12, 12).any()


# ------------------------------------------------------------------------------------ oracle orders


def test_oracle_order_keeps_exactly_the_mask_cells_first(test_items):
  for item in test_items[:20]:
    relevant = scenes.relevant_cells(item, 12, 12)
    n = int(relevant.sum())
    order = scenes.oracle_order(relevant, seed=3)
    assert sorted(order.tolist()) == list(range(144))
    assert set(order[:n].tolist()) == set(np.flatnonzero(relevant).tolist())
    anti = scenes.anti_oracle_order(relevant, seed=3)
    assert sorted(anti.tolist()) == list(range(144))
    assert set(anti[144 - n:].tolist()) == set(np.flatnonzero(relevant).tolist())
    for k in (4, 16, 100):
      scores = scenes.order_scores(order)
      assert set(np.argsort(-scores, kind="stable")[:k].tolist()) == set(order[:k].tolist())
  relevant = scenes.relevant_cells(test_items[0], 12, 12)
  np.testing.assert_array_equal(scenes.oracle_order(relevant, 1), scenes.oracle_order(relevant, 1))
  assert scenes.oracle_order(relevant, 1).tolist() != scenes.oracle_order(relevant, 2).tolist()


def test_oracle_order_tail_is_random_not_raster():
  """After the mask cells the rest comes in seeded random order (oracle = mask + random up to the budget)."""
  relevant = np.zeros(144, bool)
  relevant[[5, 70]] = True
  tail = scenes.oracle_order(relevant, seed=0)[2:]
  assert tail.tolist() != sorted(tail.tolist())


# ------------------------------------------------------------------------------------ balance, coverage


def test_every_question_type_and_form_is_present(test_items):
  seen = collections.Counter((i["metadata"]["question_type"], i["metadata"]["form"]) for i in test_items)
  expected = {(t, f) for t, slots in scenes.ANSWER_SLOTS.items() for f, _ in slots}
  assert set(seen) == expected
  types = collections.Counter(i["metadata"]["question_type"] for i in test_items)
  assert set(types.values()) == {len(test_items) // 4}
  vocab = set(scenes.vocabulary())
  for item in test_items:
    assert set(item["question"].rstrip("?").split()) | {item["answer"]} <= vocab, item["question"]
  assert {i["metadata"]["params"]["relation"] for i in test_items if "relation" in i["metadata"]["params"]} == \
      set(scenes.RELATIONS)


def test_answers_balanced_and_text_only_floor_near_chance(train_items, test_items):
  by_type = collections.defaultdict(collections.Counter)
  for item in test_items:
    by_type[item["metadata"]["question_type"]][item["answer"]] += 1
  for qtype, counts in by_type.items():
    n_answers = len({a for _, a in scenes.ANSWER_SLOTS[qtype]})
    assert len(counts) == n_answers, qtype
    assert max(counts.values()) / sum(counts.values()) <= 1 / n_answers + 0.01, (qtype, counts)
  floor = scenes.text_only_floor(train_items, test_items)
  assert set(floor) == set(scenes.QUESTION_TYPES)
  for qtype, acc in floor.items():
    # 200 test items per type: 0.08 is > 2.5 standard errors above chance.
    assert abs(acc - scenes.CHANCE[qtype]) <= 0.08, (qtype, acc, floor)


def test_objects_and_referenced_objects_appear_in_every_region(test_items):
  def regions(points, n):  # Which cells of an n x n grid over the image hold a point.
    return {(int(y * n // scenes.IMAGE_SIZE), int(x * n // scenes.IMAGE_SIZE)) for x, y in points}

  every = set(itertools.product(range(4), range(4)))
  centres = [(o["x"], o["y"]) for i in test_items for o in i["metadata"]["objects"]]
  referenced = [tuple(p) for i in test_items for p in i["metadata"]["ref_positions"]]
  assert regions(centres, 4) == every
  assert regions(referenced, 4) == every
  # The position-bias diagnostic bins referenced objects by patch row: every row of the 12x12 grid is used.
  assert {r for r, _ in regions(referenced, 12)} == set(range(12))
  for qtype in scenes.QUESTION_TYPES:
    refs = [tuple(p) for i in test_items if i["metadata"]["question_type"] == qtype
            for p in i["metadata"]["ref_positions"]]
    assert regions(refs, 3) == set(itertools.product(range(3), range(3))), qtype


# ------------------------------------------------------------------------------------ tfds and errors


def test_tfds_builder_round_trips_items(tmp_path):
  builder = scenes.builder("test", tmp_path, num_items=24, seed=5)
  assert builder.builder_config.name == "test-n24-seed5"
  common.prepare(builder)
  source = builder.as_data_source(split="test")
  assert len(source) == 24
  for i in range(24):
    assert scenes.decode_record(source[i]) == scenes.make_item("test", i, 5)


def test_load_task_serves_scenes_with_relevance(tmp_path):
  data = load_task("scenes", split="test", data_dir=tmp_path, limit=6)
  assert len(data) == 6 and data.fingerprint
  for i, item in enumerate(data):
    assert item == scenes.make_item("test", i)
    assert item["source"] == "scenes" and set(common.ITEM_KEYS) < set(item)
  assert len(load_task("scenes", split="test", data_dir=tmp_path)) == scenes.SPLIT_SIZES["test"]


@pytest.mark.parametrize("call, message", [
    (lambda: scenes.make_item("val", 0), "unknown scenes split 'val'"),
    (lambda: scenes.make_item("test", -1), "index must be >= 0"),
    (lambda: scenes.relevant_cells(np.zeros((4, 4, 3)), 2, 2), "must be 2-D"),
    (lambda: scenes.relevant_cells({"id": "x1", "image": b""}, 2, 2), "item 'x1' has no relevance_mask"),
    (lambda: scenes.relevant_cells(np.zeros((4, 4)), 0, 2), "grid must be at least 1x1"),
    (lambda: scenes.oracle_order(np.zeros(5)), "1-D bool"),
    (lambda: scenes.builder("test", num_items=0), "num_items must be >= 1"),
    (lambda: load_task("scenes:hard"), "unknown task 'scenes:hard'"),
])
def test_bad_input_is_one_clear_error(call, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(")):
    call()
