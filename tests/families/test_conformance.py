"""The family conformance suite: every family in the registry passes the same checks, each from the family's one
fixture (a `Case`: tests/families/<family>.py, built once per run by `<family>_case` in tests/conftest.py).

- logits equal transformers' at every position (fp32, max abs difference <= 1e-4): prompts with one image (of
  every size the family distinguishes), with several images, and text only;
- a batch equals each of its prompts alone, unpruned and under plans that run every method in METHODS;
- keep >= the visual count is the identity for every method (no prune point at all; bit-identical end to end);
- `fastv`'s scores equal transformers' eager attention, `latesim`/`embedsim`'s a NumPy reference from transformers'
  hidden states, `divprune` a plain-Python greedy on them; fastv keeps what transformers' attention ranks first;
- a pruned prefill then cached decoding equals recomputing the pruned prefill on prompt + generated tokens (and,
  unpruned, transformers on the same tokens);
- one compile per (bucket, plan); the orbax round trip loads the same weights and config.

The checks share programs: per family one Generator and its outputs per (plan, batch) (`base.Runs`), one scoring
program for every score check, one uncached-prefill program per (batch shape, plan). A new method is added to the
batch plans automatically; a new family is checked once its fixture exists.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from families.base import SCORE_TOL, STEPS, TASK_SIGNALS, TOL, Case, Runs, prefill_logits
from jaxprune.convert.__main__ import main as convert_main
from jaxprune.convert.hf import load_model
from jaxprune.generate import decoder_inputs
from jaxprune.models import registry
from jaxprune.prune.methods import METHODS, VISIONZIP_CONTEXTUAL_SHARE
from jaxprune.prune.pipeline import Pruner
from jaxprune.prune.plan import PlanError, PrunePlan
from jaxprune.prune.select import kept_map

FAMILIES = [family.name for family in registry.VLM_FAMILIES]


def _with_every_method(plans: list[str]) -> list[str]:
  """The plans, plus a single-stage plan for every method none of them names (a method added later)."""
  named = {stage.method for plan in plans if plan != "none" for stage in PrunePlan.parse(plan).stages}
  first = {"zero": 0, "late": 1, "any": 0}
  return plans + [f"{name}@{first[m.layers]}:6" for name, m in METHODS.items() if name not in named]


# Batch = alone: every method, most in three-stage plans (a few programs cover them all), with the options the
# methods take. pool needs one fixed grid per image: on the other families its check is the refusal.
MULTI_STABLE = ["embedsim@0:12+fastv@1:9[query=question]+latesim@2:6",
                "clsattn@0:12[reindex=false]+uniform@1:9+random@2:6[seed=3,reindex=true]"]
BATCH_PLANS = _with_every_method(["none", "visionzip@0:8", *MULTI_STABLE,
                                  "divprune@0:12+fastv@1:9+latesim@2:6[aggregate=max,norm=raw,query=text]",
                                  "oracle@1:8+anti-oracle@2:5", "pool@0:4"])
# Cached decode = recompute: plans whose scores generated tokens cannot move (they read the image, the layout, the
# task or the question only), so the recompute keeps the same tokens; the merges, and the multi-stage plans.
DECODE_PLANS = ["none", "visionzip@0:8", *MULTI_STABLE, "pool@0:4"]
# End to end against transformers (fastv) and plain Python (divprune), every prompt of the batch.
FASTV_PLAN, DIVPRUNE_PLAN = "fastv@2:6", "divprune@0:6"
# Scores against transformers, all in one program per family ({last}: the last layer, {mid}: the middle one).
LATESIM_PLANS = ["latesim@1:5", "latesim@{last}:5[aggregate=max,norm=raw]", "latesim@{mid}:5[query=text]",
                 "embedsim@0:5", "embedsim@0:5[aggregate=max,norm=raw,query=text]"]


@pytest.fixture(scope="module", params=FAMILIES)
def case(request) -> Case:
  """The family's fixture; its programs are dropped once its checks are done (tests are grouped by family)."""
  name = request.param
  try:
    case = request.getfixturevalue(f"{name}_case")
  except pytest.FixtureLookupError:
    pytest.fail(f"family {name!r} is in the registry but has no conformance fixture: add `{name}_case` to "
                f"tests/conftest.py (a Case from tests/families/{name}.py)")
  assert case.name == name
  yield case
  case.release()


# ------------------------------------------------------------------------------------------------ helpers


def _plan(text: str) -> str | None:
  return None if text == "none" else text


def _refused(case: Case, plan: str | None) -> bool:
  """True (after checking the one-line refusal) where the plan needs one fixed grid and the family has none."""
  if plan is None:
    return False
  needs_grid = any(METHODS[s.method].fixed_grid for s in PrunePlan.parse(plan).stages)
  if not needs_grid or case.fixed_grid:
    return False
  with pytest.raises(PlanError) as e:
    Pruner.build(plan, case.config, TASK_SIGNALS)
  assert "needs one fixed token grid per image" in str(e.value) and "\n" not in str(e.value)
  return True


def _stable(plan: str) -> bool:
  """No stage reads text that generation extends (fastv's last token, latesim over all text)."""
  for stage in PrunePlan.parse(plan).stages:
    method = METHODS[stage.method]
    if any(name == "query" for name, _ in method.options) and not method.reads_question(stage):
      return False
  return True


def _shape(inputs) -> tuple:
  return tuple((jax.tree_util.keystr(path), np.shape(leaf)) for path, leaf in
               jax.tree_util.tree_flatten_with_path(inputs)[0])


def _kept(out: dict, slots: int) -> np.ndarray:
  return np.asarray(kept_map(out["kept"], slots))


def _image_positions(case: Case, sample) -> np.ndarray:
  return np.flatnonzero(np.asarray(sample.ids) == case.image_token)


def _check_scores(got: np.ndarray, expected: list[np.ndarray], what: str) -> None:
  """Scores [B, N] over each prompt's visual positions in sequence order: its padded slots (in the left padding)
  first, never scored, then its real tokens against `expected[b]`."""
  for b, ref in enumerate(expected):
    n = len(ref)
    assert np.all(got[b, :-n] == -np.inf), (what, b)
    assert np.abs(got[b, -n:] - ref).max() <= SCORE_TOL, (what, b)


def _score_plans(case: Case) -> tuple[str, ...]:
  last = case.num_layers - 1
  fastv = [f"fastv@{k}:5[query={q}]" for q in ("last", "question") for k in range(1, case.num_layers)]
  return tuple(fastv + [p.format(last=last, mid=case.num_layers // 2) for p in LATESIM_PLANS])


def _oracle_relevant_kept(stages, relevant: np.ndarray, real: np.ndarray) -> np.ndarray:
  """[B] relevant cells left after oracle (relevant first) / anti-oracle (relevant last) stages."""
  r, i = (relevant & real).sum(1), (~relevant & real).sum(1)
  for stage in stages:
    if stage.method == "oracle":
      r = np.minimum(stage.keep, r)
      i = stage.keep - r
    else:
      i = np.minimum(stage.keep, i)
      r = stage.keep - i
  return r


def _identity_plans(case: Case, n: int) -> list[str]:
  """keep >= N end to end: stages of different methods (a layer-0 one at N + 3, then N)."""
  zero = next(name for name, m in METHODS.items() if m.layers == "zero" and not m.fixed_grid)
  return [f"{zero}@0:{n + 3}+fastv@1:{n}+clsattn@{case.num_layers - 1}:{n}"]


# ------------------------------------------------------------------------------------------------ checks
# (functions, so that tests elsewhere can run them on one family, e.g. through blocked attention)


def check_logits(case: Case, samples) -> tuple:
  """Logits at every position of every prompt of one padded batch equal transformers' on the prompt alone."""
  inputs = case.inputs(samples)
  logits, tokens = prefill_logits(case.model, inputs)
  logits = np.asarray(logits)
  for i, sample in enumerate(samples):
    ref = case.hf_logits(sample)
    ours = logits[i, -len(sample.ids):]
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= TOL, f"prompt {i}: {np.abs(ours - ref).max():.2e}"
  return inputs, tokens


def check_several_images(case: Case) -> None:
  """Prompts with several images: logits, and the visual tokens carry their image's index, image-major."""
  samples = case.several_images_samples()
  _, tokens = check_logits(case, samples)
  for b, sample in enumerate(samples):
    runs = sample.image_runs(case.image_token)
    assert len(runs) == len(case.two_images)
    visual = np.asarray(tokens.image[b]) & np.asarray(tokens.valid[b])
    ids = np.asarray(tokens.image_id[b])[visual]
    if case.image_id_counts_views:  # image-major: non-decreasing, and no index shared by two images
      per_image = np.split(ids, np.cumsum(runs)[:-1])
      assert ids[0] == 0 and (np.diff(ids) >= 0).all()
      assert all(a.max() < c.min() for a, c in zip(per_image, per_image[1:]))
    else:
      np.testing.assert_array_equal(ids, np.repeat(np.arange(len(runs)), runs))


def check_batch_equals_each_alone(case: Case, runs: Runs, plan: str | None) -> None:
  """Together and alone (B = 1, another length bucket and, with padded visual slots, fewer slots): the same new
  tokens, logits within 1e-4, the same kept tokens; no padded visual slot is ever kept and every prompt keeps what
  the plan asks (VisionZip: minus its merged contextual tokens; the oracle bounds: relevant cells first / last).
  Unpruned, every slot is kept and the first new token's logits equal transformers'."""
  samples, inputs = runs.inputs("batch")
  together = runs.generate(plan)
  real = case.real_slots(inputs)
  maps = _kept(together, case.slots(inputs))
  if plan is None:
    np.testing.assert_array_equal(maps, real)
    for i, sample in enumerate(samples):
      assert np.abs(together["logits"][i, 0] - case.hf_logits(sample)[-1]).max() <= TOL, i
  else:
    stages = Pruner.build(plan, case.config, TASK_SIGNALS).plan.stages
    keep = stages[-1].keep
    if stages[-1].method == "visionzip":
      keep -= max(1, round(keep * VISIONZIP_CONTEXTUAL_SHARE))  # contextual tokens are merged (slot -1)
    assert not (maps & ~real).any()  # no padded slot kept
    np.testing.assert_array_equal(maps.sum(1), keep)
    if all(stage.method in ("oracle", "anti-oracle") for stage in stages):
      relevant = np.asarray(inputs.relevance) > 0
      np.testing.assert_array_equal((maps & relevant).sum(1), _oracle_relevant_kept(stages, relevant, real))
  shapes = set()
  for i in case.alone:
    _, alone_inputs = runs.inputs(("alone", i))
    assert alone_inputs.ids.shape[1] != inputs.ids.shape[1]  # alone, a prompt is padded differently
    shapes.add(_shape(alone_inputs))
    alone = runs.generate(plan, ("alone", i))
    np.testing.assert_array_equal(together["tokens"][i], alone["tokens"][0])
    assert np.abs(together["logits"][i] - alone["logits"][0]).max() <= TOL, i
    alone_map = _kept(alone, case.slots(alone_inputs))[0][case.real_slots(alone_inputs)[0]]
    np.testing.assert_array_equal(maps[i][real[i]], alone_map)
  assert len(shapes) == 1  # the prompts alone share one program


def check_decode_equals_recompute(case: Case, runs: Runs, plan: str | None) -> None:
  """Cached steps after a (pruned) prefill == the (pruned) prefill of prompt + generated tokens without a cache,
  read at every generated position; the recompute keeps the same visual tokens at the same positions. Unpruned,
  transformers on prompt + generated tokens agrees too. A generated image placeholder would be read as an image
  by the recompute, so a prompt's check ends at its first one (some prompt runs past Gemma 3's window of 6)."""
  samples, _ = runs.inputs("batch")
  out = runs.generate(plan)
  generated, logits = out["tokens"], out["logits"]
  steps = [int(np.argmax(row == case.image_token)) + 1 if (row == case.image_token).any() else STEPS
           for row in generated]
  assert max(steps) >= 8, f"steps checked per prompt: {steps}; pick other prompt seeds"
  longer = [sample.extended(generated[i, :steps[i] - 1]) for i, sample in enumerate(samples)]
  ref, final = prefill_logits(case.model, case.inputs(longer), runs.pruner(plan))
  kept = out["kept"]
  for b in range(len(samples)):
    mine = kept.image[b] & kept.valid[b]
    theirs = np.asarray(final.image[b]) & np.asarray(final.valid[b])
    np.testing.assert_array_equal(kept.patch[b][mine], np.asarray(final.patch[b])[theirs])
    np.testing.assert_array_equal(kept.positions[b][mine], np.asarray(final.positions[b])[theirs])
  ref = np.asarray(ref)
  for i, n in enumerate(steps):
    assert np.abs(logits[i, :n] - ref[i, -n:]).max() <= TOL, i
    if plan is None:
      assert np.abs(logits[i, :n] - case.hf_logits(longer[i])[-n:]).max() <= TOL, i


# ------------------------------------------------------------------------------------------------- tests


def test_logits_match_transformers_at_every_position(case):
  """A batch of prompts of different lengths, one image each (of every size or crop layout the family has)."""
  check_logits(case, case.batch_samples())


def test_several_images_in_one_prompt(case):
  check_several_images(case)


def test_text_only_prompts(case):
  samples = case.text_only_samples()
  inputs = case.inputs(samples)
  assert inputs.pixels is None and (inputs.layout is None or inputs.layout.max_visual == 0)
  check_logits(case, samples)


@pytest.mark.parametrize("plan", BATCH_PLANS)
def test_batch_equals_each_prompt_alone(case, plan):
  if not _refused(case, _plan(plan)):
    check_batch_equals_each_alone(case, case.runs, _plan(plan))


def test_keep_at_least_the_visual_count_is_the_identity(case):
  """keep >= N (the visual slots) for every method at every layer where its signal exists builds no prune point
  at all, so nothing is gathered and the program is the unpruned one; run end to end, bit-identical logits and
  tokens. Refused in one line instead: a method needing one fixed grid on a family without one, and the oracle
  bounds without the task's relevance."""
  runs = case.runs
  _, inputs = runs.inputs("batch")
  n = case.slots(inputs)
  tokens, vision = nnx.eval_shape(decoder_inputs, case.model, inputs)
  assert vision.layout.max_visual == n
  for name, method in METHODS.items():
    if "relevance" in method.needs:
      with pytest.raises(PlanError, match=f"{name} needs the signal 'relevance'") as e:
        Pruner.build(f"{name}@1:4", case.config)
      assert "\n" not in str(e.value)
    for layer in range(case.num_layers):
      for keep in (n, n + 3):
        plan = f"{name}@{layer}:{keep}"
        if method.unavailable_at(layer) or _refused(case, plan):
          continue
        assert Pruner.build(plan, case.config, TASK_SIGNALS)(case.model, tokens, vision) == {}, plan
    if method.fixed_grid:
      _refused(case, f"{name}@0:4")  # at any keep
  base = runs.generate(None)
  for plan in _identity_plans(case, n):
    out = runs.generate(plan)
    np.testing.assert_array_equal(out["logits"], base["logits"], err_msg=plan)
    np.testing.assert_array_equal(out["tokens"], base["tokens"], err_msg=plan)


def _sliding(case: Case, layer: int) -> bool:
  """Whether decoder layer `layer` attends within a sliding window (Gemma 3's local layers)."""
  layer_types = getattr(case.config.text, "layer_types", None)
  return bool(layer_types) and layer_types[layer] == "sliding_attention"


@pytest.mark.parametrize("layer", [1, 2, 3])
@pytest.mark.parametrize("query", ["last", "question"])
def test_fastv_scores_equal_transformers_eager_attention(case, query, layer):
  """At layer K, for every prompt of the batch: the head-mean attention of the last token (or the question tokens'
  mean) on each visual token in transformers' layer K-1 (Gemma 3's sliding layers: within the window); padded
  visual slots -inf."""
  if layer >= case.num_layers:
    pytest.skip(f"{case.name} has {case.num_layers} layers")
  samples, _ = case.runs.inputs("batch")
  expected = []
  for sample, out in zip(samples, case.runs.hf()):
    attn = out.attentions[layer - 1][0].numpy()  # [H, L, L]
    rows = [len(sample.ids) - 1] if query == "last" else list(range(*sample.question))
    expected.append(attn[:, rows][:, :, _image_positions(case, sample)].mean(axis=(0, 1)))
  _check_scores(case.runs.scores(_score_plans(case))[f"fastv@{layer}:5[query={query}]"], expected, f"layer {layer}")


def test_fastv_keeps_the_tokens_transformers_attends_to_most(case):
  """End to end (score, select, gather), every prompt of the batch: the kept tokens are the top of the last token's
  head-mean attention row in transformers (layer 2: every family's layer 1 attends globally); padded slots never."""
  _, inputs = case.runs.inputs("batch")
  out = case.runs.generate(FASTV_PLAN)
  stage = PrunePlan.parse(FASTV_PLAN).stages[0]
  layer, keep = stage.layer, stage.keep
  assert not _sliding(case, layer - 1)
  real = case.real_slots(inputs)
  if not case.fixed_grid:
    assert (real.sum(1) < case.slots(inputs)).any()  # padded visual slots are present
  kept = _kept(out, case.slots(inputs))
  for b, (sample, hf) in enumerate(zip(case.runs.inputs("batch")[0], case.runs.hf())):
    row = hf.attentions[layer - 1][0].numpy()[:, -1, _image_positions(case, sample)].mean(axis=0)
    expected = np.sort(np.argsort(-row, kind="stable")[:keep])
    np.testing.assert_array_equal(np.flatnonzero(kept[b][real[b]]), expected)


def _numpy_latesim(h, image, query, weight, eps, aggregate):
  normed = lambda x: x if weight is None else x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * weight
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  sims = unit(normed(h[image])) @ unit(normed(h[query])).T  # [Nv, Q]
  return sims.mean(1) if aggregate == "mean" else sims.max(1)


@pytest.mark.parametrize("template", LATESIM_PLANS)
def test_latesim_scores_equal_numpy_from_transformers_hidden_states(case, template):
  """h = what enters decoder layer K in transformers, normalised by that layer's input RMSNorm (norm=rms), cosine
  similarity to the question (or to all text), mean or max over it; every prompt of the batch."""
  plan = template.format(last=case.num_layers - 1, mid=case.num_layers // 2)
  stage = PrunePlan.parse(plan).stages[0]
  weight = None
  if stage.option("norm") == "rms":
    weight = case.norm_offset + case.hf_decoder_layers()[stage.layer].input_layernorm.weight.detach().numpy()
  samples, _ = case.runs.inputs("batch")
  expected = []
  for sample, out in zip(samples, case.runs.hf()):
    h = out.hidden_states[stage.layer][0].numpy().astype(np.float64)
    ids = np.asarray(sample.ids)
    query = (np.arange(*sample.question) if stage.option("query") == "question"
             else np.flatnonzero(ids != case.image_token))
    expected.append(_numpy_latesim(h, _image_positions(case, sample), query, weight,
                                   case.hf.config.text_config.rms_norm_eps, stage.option("aggregate")))
  _check_scores(case.runs.scores(_score_plans(case))[plan], expected, plan)


def _greedy_max_min(feats: np.ndarray, keep: int) -> list[int]:
  """DivPrune in plain Python: the token farthest (cosine) from its nearest neighbour, then each next one farthest
  from those chosen; ties to the lower index."""
  x = feats / np.linalg.norm(feats, axis=1, keepdims=True)
  dist = 1 - x @ x.T
  n = len(x)
  chosen = [max(range(n), key=lambda i: (min(dist[i, j] for j in range(n) if j != i), -i))]
  while len(chosen) < keep:
    rest = [i for i in range(n) if i not in chosen]
    chosen.append(max(rest, key=lambda i: (min(dist[i, j] for j in chosen), -i)))
  return sorted(chosen)


def test_divprune_equals_plain_python_greedy(case):
  """End to end, every prompt of the batch: the kept tokens are the greedy max-min choice over the visual tokens
  entering the LLM (transformers' input embeddings at the image positions)."""
  _, inputs = case.runs.inputs("batch")
  keep = PrunePlan.parse(DIVPRUNE_PLAN).stages[0].keep
  kept, real = _kept(case.runs.generate(DIVPRUNE_PLAN), case.slots(inputs)), case.real_slots(inputs)
  for b, (sample, hf) in enumerate(zip(case.runs.inputs("batch")[0], case.runs.hf())):
    feats = hf.hidden_states[0][0].numpy()[_image_positions(case, sample)]
    np.testing.assert_array_equal(np.flatnonzero(kept[b][real[b]]), _greedy_max_min(feats, keep))


@pytest.mark.parametrize("plan", DECODE_PLANS)
def test_pruned_prefill_then_cached_decode_equals_recompute(case, plan):
  assert plan == "none" or _stable(plan)
  if not _refused(case, _plan(plan)):
    check_decode_equals_recompute(case, case.runs, _plan(plan))


def test_one_compile_per_bucket_and_plan(case):
  """New prompts, lengths and images (of new sizes, where the family has several) in the batch's bucket reuse the
  program of its (bucket, plan); an equal plan built again hashes the same; different plans never do."""
  runs = case.runs
  _, inputs = runs.inputs("batch")
  runs.generate(FASTV_PLAN)  # compiled by the fastv check already, or now
  compiles = runs.generator.compiles
  for k, variants in enumerate(case.compile_sets):
    samples = [case.sample(100 + 10 * k + i, (v,), before=1 + k + 2 * i, after=k) for i, v in enumerate(variants)]
    batch = case.inputs(samples)
    assert _shape(batch) == _shape(inputs)
    runs.generator(batch, prune_points_fn=runs.pruner(FASTV_PLAN), keep_logits=True)
    assert runs.generator.compiles == compiles, k
  fastv, rebuilt = runs.pruner(FASTV_PLAN), runs.pruner(FASTV_PLAN)
  assert fastv is not rebuilt and fastv == rebuilt and hash(fastv) == hash(rebuilt)  # the same program
  for other in (FASTV_PLAN.replace(":6", ":5"), "fastv@2:6[query=question]", DIVPRUNE_PLAN):
    assert runs.pruner(other) != fastv  # another program


def test_orbax_round_trip(case, tmp_path):
  """The converter CLI writes orbax; `load_model` finds the family, the same config and the same weights, and the
  restored model's logits equal transformers'."""
  assert convert_main(["--hf", str(case.path), "--out", str(tmp_path / "orbax"), "--dtype", "float32"]) == 0
  restored = load_model(tmp_path / "orbax")
  assert restored.family.name == case.name and restored.config == case.config
  ours = list(nnx.to_flat_state(nnx.state(case.model)))
  theirs = list(nnx.to_flat_state(nnx.state(restored.model)))
  assert [path for path, _ in ours] == [path for path, _ in theirs]
  for (path, a), (_, b) in zip(ours, theirs):
    np.testing.assert_array_equal(np.asarray(a[...]), np.asarray(b[...]), err_msg=str(path))
  samples = case.batch_samples()
  logits, _ = prefill_logits(restored.model, case.inputs(samples))
  for i, sample in enumerate(samples):
    assert np.abs(np.asarray(logits)[i, -len(sample.ids):] - case.hf_logits(sample)).max() <= TOL, i
