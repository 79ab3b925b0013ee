"""`scenes`: multi-object scenes whose relevant region changes with the question (the lab task).

Each item is a 96x96 RGB image of 3-6 flat shapes (circle, square, triangle, diamond) in four colours
(red, green, blue, yellow) and continuous sizes (12-24 px across) at uniform random positions, never
touching, on a plain grey background, plus one question about it. With a CLIP-style tower of patch 8 the
image is a 12x12 grid (144 visual tokens); patch 6 gives 16x16 (256). Everything is generated from a seed
with NumPy (no download): item `i` of a split depends only on (seed, split, i), so the fixed tfds splits
(`SPLIT_SIZES`) and any extra items a trainer draws with `make_item` agree.

Question types (one in four items each, in rotation) and their referenced objects:
  attribute  "what color is the triangle?" / "what shape is the red object?"       the one object named
  existence  "is there a red circle?"  (yes / no)                                   yes: the red circle;
                                                                                    no: every object with the
                                                                                    colour or the shape asked
  counting   "how many blue shapes are there?" / "how many squares are there?" (1-4) the objects counted
  relation   "what shape is left of the green square?" /                            the anchor (green square)
             "what color is the shape above the red circle?"                        and the target
Distractors share one attribute with a referenced object (a second red shape when the triangle is red, a
red square and a blue circle around a missing red circle), so colour or shape alone never answers.
"X of/above the A" means: X's box overlaps A's row (left/right) or column (above/below) band and X lies
beyond A in that direction; every other object is clearly outside that half-band, so the target is unique.

Answers are balanced per question type by construction (answer slots rotate with the item index; the
question's other words are drawn independently), so a text-only model is near chance per type:
attribute, counting and relation 1/4, existence 1/2 (`text_only_floor` measures it).

Relevance ground truth, stored with every item:
  item["relevance_mask"]  PNG bytes (1 bit, 96x96): exactly the pixels of the referenced objects
                          (objects are drawn as hard-edged masks, so this is exact, not thresholded);
  metadata["objects"]     every object: shape, colour, centre x/y, half-size, pixel box [x0, y0, x1, y1);
  metadata["referenced"]  indices of the referenced objects; metadata["ref_positions"] their centres (x, y).
`relevant_cells(item, gh, gw)` turns the mask into the patch cells it touches; `oracle_order` /
`anti_oracle_order` give the keep priority of the `oracle` / `anti-oracle` pruning methods.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import pathlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxprune.data import common
from jaxprune.metrics.score import one_word_item

SOURCE = "scenes"
score_item = one_word_item  # the task's scorer (`jaxprune.data.tasks.score_item`): one-word exact match
SPLITS = ("train", "test")
SPLIT_SIZES = {"train": 40000, "test": 2000}
_SPLIT_CODES = {"train": 1, "test": 2}  # Part of each item's seed, so the splits never share a scene.
DEFAULT_SEED = 0

IMAGE_SIZE = 96  # Pixels; 12x12 patches of 8 (or 16x16 of 6).
BACKGROUND = (200, 200, 200)
SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {"red": (215, 40, 40), "green": (40, 160, 60), "blue": (45, 85, 225), "yellow": (235, 200, 35)}
COLOUR_JITTER = 16  # Per-channel +-: colours vary a little but never approach another class.
MIN_HALF_SIZE, MAX_HALF_SIZE = 6.0, 12.0  # Half the box side, pixels.
GAP = 2.0  # Pixels between object boxes, so masks never touch.
MIN_OBJECTS, MAX_OBJECTS = 3, 6
COUNTS = (1, 2, 3, 4)
RELATIONS = ("left of", "right of", "above", "below")
RELATION_SLACK = 3.0  # Target centre within this many px of the anchor's row/column centre line.
QUESTION_TYPES = ("attribute", "existence", "counting", "relation")

# (form, answer) slots per type; item i of a type uses slot (i // 4) % len, so answers are balanced exactly.
ANSWER_SLOTS: dict[str, tuple[tuple[str, str], ...]] = {
    "attribute": (*(("color", c) for c in COLOURS), *(("shape", s) for s in SHAPES)),
    "existence": (("exists", "yes"), ("exists", "no")),
    "counting": (*(("color", str(k)) for k in COUNTS), *(("shape", str(k)) for k in COUNTS)),
    "relation": (*(("shape", s) for s in SHAPES), *(("color", c) for c in COLOURS)),
}
# Chance accuracy of a text-only model per type (the question text tells the answer set, not the answer).
CHANCE = {"attribute": 1 / 4, "existence": 1 / 2, "counting": 1 / 4, "relation": 1 / 4}


@dataclasses.dataclass(frozen=True)
class SceneObject:
  shape: str
  colour: str
  x: float  # Centre, pixels (x right, y down).
  y: float
  half: float  # Half the side of its box.

  def box(self) -> tuple[float, float, float, float]:
    return (self.x - self.half, self.y - self.half, self.x + self.half, self.y + self.half)


@dataclasses.dataclass(frozen=True)
class Scene:
  objects: tuple[SceneObject, ...]
  question_type: str
  form: str  # attribute/counting/relation: "color" | "shape"; existence: "exists".
  params: Mapping[str, str]  # What the question names: shape, colour, relation.
  question: str
  answer: str
  referenced: tuple[int, ...]  # Indices into `objects`.


# ------------------------------------------------------------------------------------------- drawing


def object_mask(obj: SceneObject, size: int = IMAGE_SIZE) -> np.ndarray:
  """bool [size, size]: the pixels whose centre lies inside the shape."""
  centres = np.arange(size) + 0.5
  dx = centres[None, :] - obj.x  # [1, W]
  dy = centres[:, None] - obj.y  # [H, 1]
  r = obj.half
  if obj.shape == "circle":
    return dx**2 + dy**2 <= r**2
  if obj.shape == "square":
    return np.maximum(np.abs(dx), np.abs(dy)) <= 0.8 * r  # 0.8: about the circle's area.
  if obj.shape == "diamond":
    return np.abs(dx) + np.abs(dy) <= r
  if obj.shape == "triangle":  # Apex up, base 2r wide at the bottom of the box.
    return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
  raise ValueError(f"unknown scenes shape {obj.shape!r} (known: {', '.join(SHAPES)})")


def render(scene: Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """(image uint8 [H, W, 3], relevance bool [H, W]) with the referenced objects' pixels."""
  image = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  image[:] = BACKGROUND
  relevance = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
  for i, obj in enumerate(scene.objects):
    mask = object_mask(obj)
    jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3)
    image[mask] = np.clip(np.array(COLOURS[obj.colour]) + jitter, 0, 255).astype(np.uint8)
    if i in scene.referenced:
      relevance |= mask
  return image, relevance


# ---------------------------------------------------------------------------------------- generating


def item_rng(split: str, index: int, seed: int = DEFAULT_SEED) -> np.random.Generator:
  _check_split(split)
  if index < 0:
    raise ValueError(f"scenes item index must be >= 0, got {index}")
  return np.random.default_rng([seed, _SPLIT_CODES[split], index])


def answer_slot(index: int) -> tuple[str, str, str]:
  """(question type, form, answer) of item `index`: types rotate, then each type's answer slots."""
  qtype = QUESTION_TYPES[index % len(QUESTION_TYPES)]
  slots = ANSWER_SLOTS[qtype]
  form, answer = slots[(index // len(QUESTION_TYPES)) % len(slots)]
  return qtype, form, answer


def make_scene(split: str, index: int, seed: int = DEFAULT_SEED) -> tuple[Scene, np.random.Generator]:
  """Item `index` of a split (no pixels yet); the rng is returned to draw its colours from."""
  rng = item_rng(split, index, seed)
  qtype, form, answer = answer_slot(index)
  for _ in range(200):  # Rejection sampling; a few tries at most in practice.
    attrs, referenced, params, question = _attributes(qtype, form, answer, rng)
    placed = _place(attrs, params.get("relation"), rng)
    if placed is not None:
      break
  else:
    raise RuntimeError(f"scenes: could not place item {split}/{index} (seed {seed})")
  # Shuffle the drawing/listing order so the referenced object is not always first.
  perm = rng.permutation(len(placed))
  objects = tuple(placed[p] for p in perm)
  where = {int(p): i for i, p in enumerate(perm)}
  scene = Scene(objects, qtype, form, params, question, answer, tuple(sorted(where[r] for r in referenced)))
  return scene, rng


def _other(options: Sequence[str], exclude: str, rng: np.random.Generator) -> str:
  return str(rng.choice([o for o in options if o != exclude]))


def _pick(options: Sequence[str], rng: np.random.Generator) -> str:
  return str(rng.choice(list(options)))


def _fill(attrs: list[tuple[str, str]], n: int, ok, rng: np.random.Generator) -> None:
  """Appends random (shape, colour) pairs satisfying `ok` until there are n objects."""
  while len(attrs) < n:
    pair = (_pick(SHAPES, rng), _pick(COLOURS, rng))
    if ok(*pair):
      attrs.append(pair)


def _attributes(qtype: str, form: str, answer: str, rng: np.random.Generator):
  """(shape, colour) per object, referenced indices, question params and text, all satisfying the answer."""
  colours = list(COLOURS)
  n = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
  if qtype == "attribute" and form == "color":
    shape = _pick(SHAPES, rng)
    attrs = [(shape, answer), (_other(SHAPES, shape, rng), answer)]  # Distractor: same colour.
    _fill(attrs, n, lambda s, c: s != shape, rng)  # The shape asked about is unique.
    return attrs, [0], {"shape": shape}, f"what color is the {shape}?"
  if qtype == "attribute":
    colour = _pick(colours, rng)
    attrs = [(answer, colour), (answer, _other(colours, colour, rng))]  # Distractor: same shape.
    _fill(attrs, n, lambda s, c: c != colour, rng)
    return attrs, [0], {"colour": colour}, f"what shape is the {colour} object?"
  if qtype == "existence":
    shape, colour = _pick(SHAPES, rng), _pick(colours, rng)
    near = [(_other(SHAPES, shape, rng), colour), (shape, _other(colours, colour, rng))]
    attrs = ([(shape, colour)] if answer == "yes" else []) + near
    _fill(attrs, max(n, len(attrs) + (answer == "no")), lambda s, c: (s, c) != (shape, colour), rng)
    if answer == "yes":
      referenced = [0]
    else:  # Nothing matches: the evidence is every object with the colour or the shape asked.
      referenced = [i for i, (s, c) in enumerate(attrs) if s == shape or c == colour]
    return attrs, referenced, {"shape": shape, "colour": colour}, f"is there a {colour} {shape}?"
  if qtype == "counting":
    k = int(answer)
    n = max(n, k + 1)
    if form == "color":
      colour = _pick(colours, rng)
      attrs = [(_pick(SHAPES, rng), colour) for _ in range(k)]
      attrs.append((attrs[0][0], _other(colours, colour, rng)))  # Distractor: a counted shape, other colour.
      _fill(attrs, n, lambda s, c: c != colour, rng)
      return attrs, list(range(k)), {"colour": colour}, f"how many {colour} shapes are there?"
    shape = _pick(SHAPES, rng)
    attrs = [(shape, _pick(colours, rng)) for _ in range(k)]
    attrs.append((_other(SHAPES, shape, rng), attrs[0][1]))  # Distractor: a counted colour, other shape.
    _fill(attrs, n, lambda s, c: s != shape, rng)
    return attrs, list(range(k)), {"shape": shape}, f"how many {shape}s are there?"
  if qtype == "relation":
    anchor = (_pick(SHAPES, rng), _pick(colours, rng))
    relation = _pick(RELATIONS, rng)
    while True:
      target = (answer, _pick(colours, rng)) if form == "shape" else (_pick(SHAPES, rng), answer)
      if target != anchor:
        break
    # Distractor: shares the anchor's shape or its colour (not both: the anchor is unique).
    if rng.random() < 0.5:
      distractor = (anchor[0], _other(colours, anchor[1], rng))
    else:
      distractor = (_other(SHAPES, anchor[0], rng), anchor[1])
    attrs = [anchor, target, distractor]
    _fill(attrs, n, lambda s, c: (s, c) != anchor, rng)
    params = {"shape": anchor[0], "colour": anchor[1], "relation": relation}
    if form == "shape":
      question = f"what shape is {relation} the {anchor[1]} {anchor[0]}?"
    else:
      question = f"what color is the shape {relation} the {anchor[1]} {anchor[0]}?"
    return attrs, [0, 1], params, question
  raise ValueError(f"unknown scenes question type {qtype!r}")


def _separate(a: SceneObject, b: SceneObject) -> bool:
  """Boxes at least GAP apart along x or y (so the shapes never touch)."""
  reach = a.half + b.half + GAP
  return abs(a.x - b.x) >= reach or abs(a.y - b.y) >= reach


def relation_offsets(anchor: SceneObject, other: SceneObject, relation: str) -> tuple[float, float]:
  """(along, across): how far `other` lies beyond `anchor` in the relation's direction, and off its line."""
  dx, dy = other.x - anchor.x, other.y - anchor.y
  along, across = {"left of": (-dx, dy), "right of": (dx, dy), "above": (-dy, dx), "below": (dy, dx)}[relation]
  return along, abs(across)


def in_relation(anchor: SceneObject, other: SceneObject, relation: str, slack: float = 0.0) -> bool:
  """`other` is {relation} `anchor`: beyond it, with boxes overlapping the anchor's row/column band.

  `slack` > 0 widens the band (used to keep every non-target object clearly out of it)."""
  along, across = relation_offsets(anchor, other, relation)
  return along > 0 and across < anchor.half + other.half + slack


def _random_object(shape: str, colour: str, rng: np.random.Generator) -> SceneObject:
  half = float(rng.uniform(MIN_HALF_SIZE, MAX_HALF_SIZE))
  x, y = rng.uniform(half, IMAGE_SIZE - half, 2)
  return SceneObject(shape, colour, round(float(x), 2), round(float(y), 2), round(half, 2))


def _target_object(anchor: SceneObject, shape: str, colour: str, relation: str,
                   rng: np.random.Generator) -> SceneObject:
  """An object on the anchor's centre line (within RELATION_SLACK), beyond it in the relation's direction."""
  half = round(float(rng.uniform(MIN_HALF_SIZE, MAX_HALF_SIZE)), 2)
  along = anchor.half + half + GAP + float(rng.uniform(0, IMAGE_SIZE))
  across = float(rng.uniform(-RELATION_SLACK, RELATION_SLACK))
  x, y = {"left of": (-along, across), "right of": (along, across), "above": (across, -along),
          "below": (across, along)}[relation]
  return SceneObject(shape, colour, round(anchor.x + x, 2), round(anchor.y + y, 2), half)


def _inside(obj: SceneObject) -> bool:
  x0, y0, x1, y1 = obj.box()
  return x0 >= 0 and y0 >= 0 and x1 <= IMAGE_SIZE and y1 <= IMAGE_SIZE


def _place(attrs: list[tuple[str, str]], relation: str | None,
           rng: np.random.Generator) -> list[SceneObject] | None:
  """Positions for the objects (relation items: attrs[0] anchor, attrs[1] target); None to retry."""
  placed: list[SceneObject] = []
  for i, (shape, colour) in enumerate(attrs):
    for _ in range(100):
      if relation is not None and i == 1:
        obj = _target_object(placed[0], shape, colour, relation, rng)
      else:
        obj = _random_object(shape, colour, rng)
      if not _inside(obj) or not all(_separate(obj, p) for p in placed):
        continue
      # Relation items: only the target may lie in (a widened) band beyond the anchor.
      if relation is not None and i >= 2 and in_relation(placed[0], obj, relation, slack=GAP):
        continue
      placed.append(obj)
      break
    else:
      return None
  return placed


# ------------------------------------------------------------------------------- checking (reference)


def solve(question_type: str, form: str, params: Mapping[str, str],
          objects: Sequence[SceneObject]) -> tuple[str, tuple[int, ...]]:
  """(answer, referenced indices) recomputed from the objects alone; raises if the question is ambiguous.

  An independent statement of the task's semantics, for tests and for anyone checking an item by hand."""
  shape, colour = params.get("shape"), params.get("colour")
  if question_type == "attribute":
    key = (lambda o: o.shape == shape) if form == "color" else (lambda o: o.colour == colour)
    hits = [i for i, o in enumerate(objects) if key(o)]
    if len(hits) != 1:
      raise ValueError(f"attribute question names {len(hits)} objects")
    obj = objects[hits[0]]
    return (obj.colour if form == "color" else obj.shape), tuple(hits)
  if question_type == "existence":
    hits = [i for i, o in enumerate(objects) if o.shape == shape and o.colour == colour]
    if hits:
      return "yes", tuple(hits)
    return "no", tuple(i for i, o in enumerate(objects) if o.shape == shape or o.colour == colour)
  if question_type == "counting":
    key = (lambda o: o.colour == colour) if form == "color" else (lambda o: o.shape == shape)
    hits = tuple(i for i, o in enumerate(objects) if key(o))
    return str(len(hits)), hits
  if question_type == "relation":
    anchors = [i for i, o in enumerate(objects) if o.shape == shape and o.colour == colour]
    if len(anchors) != 1:
      raise ValueError(f"relation anchor names {len(anchors)} objects")
    a = anchors[0]
    hits = [i for i, o in enumerate(objects) if i != a and in_relation(objects[a], o, params["relation"])]
    if len(hits) != 1:
      raise ValueError(f"relation names {len(hits)} targets")
    target = objects[hits[0]]
    return (target.shape if form == "shape" else target.colour), tuple(sorted((a, hits[0])))
  raise ValueError(f"unknown scenes question type {question_type!r}")


def scene_from_metadata(metadata: Mapping[str, Any]) -> list[SceneObject]:
  return [SceneObject(o["shape"], o["colour"], o["x"], o["y"], o["half"]) for o in metadata["objects"]]


# ------------------------------------------------------------------------------------------- records


def make_item(split: str, index: int, seed: int = DEFAULT_SEED) -> common.Item:
  """The common item record of item `index` (plus `relevance_mask`); deterministic in (seed, split, index)."""
  scene, rng = make_scene(split, index, seed)
  image, relevance = render(scene, rng)
  objects = [
      {"shape": o.shape, "colour": o.colour, "x": o.x, "y": o.y, "half": o.half,
       "box": [int(np.floor(b)) if k < 2 else int(np.ceil(b)) for k, b in enumerate(o.box())]}
      for o in scene.objects
  ]
  item = common.make_item(
      id=item_id(split, index),
      image=_png(image),
      question=scene.question,
      answer=scene.answer,
      all_answers=[scene.answer],
      eval_mode="direct",
      source=SOURCE,
      metadata={
          "question_type": scene.question_type,
          "form": scene.form,
          "params": dict(scene.params),
          "objects": objects,
          "referenced": list(scene.referenced),
          "ref_positions": [[scene.objects[r].x, scene.objects[r].y] for r in scene.referenced],
          "image_size": IMAGE_SIZE,
          "seed": seed,
      },
  )
  item["relevance_mask"] = _png(relevance)
  return item


def item_id(split: str, index: int) -> str:
  return f"{split}-{index:05d}"


def _png(pixels: np.ndarray) -> bytes:
  from PIL import Image

  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="PNG")  # A bool array saves as a 1-bit PNG.
  return buf.getvalue()


def decode_mask(mask: bytes) -> np.ndarray:
  """1-bit PNG bytes -> bool [H, W]."""
  return common.decode_image(mask, mode="1").astype(bool)


def encode_record(item: Mapping[str, Any]) -> dict[str, Any]:
  return {**common.encode_item(item), "relevance_mask": item["relevance_mask"]}


def decode_record(record: Mapping[str, Any]) -> common.Item:
  """tfds example -> common item + `relevance_mask` (PNG bytes)."""
  item = common.decode_record(record)
  mask = record["relevance_mask"]
  item["relevance_mask"] = bytes(mask.item() if isinstance(mask, np.ndarray) else mask)
  return item


# ---------------------------------------------------------------------------------- relevance helpers


def relevance_mask(item_or_mask: Mapping[str, Any] | bytes | np.ndarray) -> np.ndarray:
  """bool [H, W] from an item (its `relevance_mask`), PNG bytes, or an array."""
  if isinstance(item_or_mask, Mapping):
    if "relevance_mask" not in item_or_mask:
      raise ValueError(f"item {item_or_mask.get('id', '?')!r} has no relevance_mask (only the scenes task has one)")
    item_or_mask = item_or_mask["relevance_mask"]
  if isinstance(item_or_mask, (bytes, bytearray)):
    return decode_mask(bytes(item_or_mask))
  mask = np.asarray(item_or_mask)
  if mask.ndim != 2:
    raise ValueError(f"relevance mask must be 2-D [H, W], got shape {mask.shape}")
  return mask.astype(bool)


def relevant_cells(item_or_mask: Mapping[str, Any] | bytes | np.ndarray, grid_h: int,
                   grid_w: int | None = None) -> np.ndarray:
  """bool [grid_h * grid_w], row-major: the patch cells that any relevant pixel overlaps.

  Cell r spans rows [r * H / grid_h, (r + 1) * H / grid_h) of the image; a pixel counts for every cell it
  overlaps by a positive length (one cell when the grid divides the image, up to two otherwise), which is
  what a resize to the tower's input keeps. Exact in integers.
  """
  mask = relevance_mask(item_or_mask)
  grid_w = grid_h if grid_w is None else grid_w
  if grid_h < 1 or grid_w < 1:
    raise ValueError(f"grid must be at least 1x1, got {grid_h}x{grid_w}")
  rows = _touch(grid_h, mask.shape[0])  # [gh, H]
  cols = _touch(grid_w, mask.shape[1])  # [gw, W]
  hits = rows.astype(np.int64) @ mask.astype(np.int64) @ cols.T.astype(np.int64)  # [gh, gw]
  return (hits > 0).ravel()


def _touch(cells: int, pixels: int) -> np.ndarray:
  """bool [cells, pixels]: cell c = [c*P/C, (c+1)*P/C) and pixel p = [p, p+1) overlap (scaled by C)."""
  c = np.arange(cells)[:, None]
  p = np.arange(pixels)[None, :]
  return (c * pixels < (p + 1) * cells) & (p * cells < (c + 1) * pixels)


def oracle_order(relevant: np.ndarray, seed: int = 0) -> np.ndarray:
  """int [N]: keep priority (first = kept first): relevant cells in seeded random order, then the rest."""
  relevant = np.asarray(relevant)
  if relevant.ndim != 1 or relevant.dtype != bool:
    raise ValueError(f"relevant must be a 1-D bool array of cells, got {relevant.dtype} {relevant.shape}")
  perm = np.random.default_rng(seed).permutation(relevant.size)
  return perm[np.argsort(~relevant[perm], kind="stable")]


def anti_oracle_order(relevant: np.ndarray, seed: int = 0) -> np.ndarray:
  """int [N]: keep priority with the relevant cells last (so they are the first dropped)."""
  relevant = np.asarray(relevant)
  if relevant.ndim != 1 or relevant.dtype != bool:
    raise ValueError(f"relevant must be a 1-D bool array of cells, got {relevant.dtype} {relevant.shape}")
  return oracle_order(~relevant, seed)


def order_scores(order: np.ndarray) -> np.ndarray:
  """float32 [N] scores (higher = keep) whose top-k is exactly order[:k], for score-based selection."""
  order = np.asarray(order)
  scores = np.empty(order.size, np.float32)
  scores[order] = np.arange(order.size, 0, -1)
  return scores


# ------------------------------------------------------------------------------------ floors, vocab


def text_only_floor(train: Sequence[Mapping[str, Any]], test: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """Per question type: accuracy on `test` of answering each question string with its majority answer on
  `train` (falling back to the type's majority): the best a model that ignores the image can learn."""
  by_question: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  by_type: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  for item in train:
    by_question[item["question"]][item["answer"]] += 1
    by_type[item["metadata"]["question_type"]][item["answer"]] += 1
  right: collections.Counter = collections.Counter()
  total: collections.Counter = collections.Counter()
  for item in test:
    qtype = item["metadata"]["question_type"]
    votes = by_question.get(item["question"]) or by_type[qtype]
    guess = votes.most_common(1)[0][0] if votes else ""
    right[qtype] += guess == item["answer"]
    total[qtype] += 1
  return {t: right[t] / total[t] for t in QUESTION_TYPES if total[t]}


def vocabulary() -> list[str]:
  """Every word of every question and answer, sorted (for word-level tokenizers of lab models)."""
  words = {"what", "color", "shape", "is", "the", "object", "there", "a", "how", "many", "shapes", "are",
           "yes", "no", *SHAPES, *(s + "s" for s in SHAPES), *COLOURS, *(str(k) for k in COUNTS)}
  for relation in RELATIONS:
    words.update(relation.split())
  return sorted(words)


# ---------------------------------------------------------------------------------------------- tfds


@dataclasses.dataclass(eq=False)
class ScenesConfig(tfds.core.BuilderConfig):
  """One split of one seed; the default configs are named after the split."""

  split: str = "test"
  num_items: int = SPLIT_SIZES["test"]
  seed: int = DEFAULT_SEED


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"unknown scenes split {split!r} (known: {', '.join(SPLITS)})")


class Scenes(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """The `scenes` lab task (`scenes/<config>/1.0.0/...`); items as `make_item` returns them."""

  name = "scenes"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Multi-object scenes, four question types, relevance masks."}
  BUILDER_CONFIGS = [
      ScenesConfig(name=s, description=f"scenes {s} split", split=s, num_items=SPLIT_SIZES[s]) for s in SPLITS
  ]

  def __init__(self, **kwargs: Any):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    features = common.item_features()
    return self.dataset_info_from_configs(
        description=__doc__.split("\n\n")[0],
        features=tfds.features.FeaturesDict({
            **{k: features[k] for k in common.ITEM_KEYS},
            "relevance_mask": tfds.features.Tensor(shape=(), dtype=np.object_, doc="1-bit PNG, referenced pixels"),
        }),
        disable_shuffling=True,  # Item order = index order, so ids and `limit` follow the generator.
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[int, dict[str, Any]]]]:
    del dl_manager  # Generated, nothing to download.
    config = self.builder_config
    return {config.split: self._generate_examples(config.split, config.num_items, config.seed)}

  def _generate_examples(self, split: str, num_items: int, seed: int) -> Iterator[tuple[int, dict[str, Any]]]:
    for index in range(num_items):
      yield index, encode_record(make_item(split, index, seed))


def open_task(sub: str, split: str | None, data_dir, datbench_dir) -> tuple[Scenes, common.Source, str]:
  """The task registry's entry point (`jaxprune.data.tasks`): the builder of one split and what it is made from."""
  split = split or "test"
  scenes_builder = builder(split, data_dir)
  return scenes_builder, generator_source(scenes_builder), split


def generator_source(scenes_builder: Scenes) -> common.Source:
  """The "source files" of a prepared copy: this module, so editing the generator rebuilds stale copies."""
  config = scenes_builder.builder_config
  return common.Source(f"generated: scenes seed {config.seed}, {config.num_items} {config.split} items",
                       lambda: [pathlib.Path(__file__)])


def builder(split: str = "test", data_dir: str | os.PathLike[str] | None = None, *,
            num_items: int | None = None, seed: int = DEFAULT_SEED) -> Scenes:
  """The (possibly unprepared) builder for one split; non-default sizes/seeds get their own config name."""
  _check_split(split)
  if num_items is not None and num_items < 1:
    raise ValueError(f"scenes num_items must be >= 1, got {num_items}")
  data_dir = common.resolve_data_dir(data_dir)
  if (num_items is None or num_items == SPLIT_SIZES[split]) and seed == DEFAULT_SEED:
    return Scenes(config=split, data_dir=data_dir)
  n = SPLIT_SIZES[split] if num_items is None else num_items
  config = ScenesConfig(name=f"{split}-n{n}-seed{seed}", description=f"scenes {split}, {n} items, seed {seed}",
                        split=split, num_items=n, seed=seed)
  return Scenes(config=config, data_dir=data_dir)
