"""Prune plans: what to prune, where, and how much — validated once, before anything compiles.

A plan is an ordered tuple of stages `Stage(method, layer, keep, options)`:
- `layer = K`: the score is computed from what enters decoder layer K, and layers K.. run on the reduced
  sequence (K = 0 prunes before the LLM). Layers strictly increase, keeps never increase.
- `keep`: visual tokens kept per prompt — all of its images together, so per image for the usual one-image
  prompt — as an int, or as a ratio in (0, 1) of the prompt's visual tokens (for families whose images have a
  fixed token count; others take counts). Padded visual slots never count and are never kept.
- Positions: at K >= 1 kept tokens keep their RoPE ids (gaps, as FastV); at K = 0 the LLM sequence is built
  from the kept tokens, so ids are contiguous (as VisionZip). Option `reindex` flips either default.
- `keep >=` the batch's visual slots is the identity: the stage is skipped and logits are bit-identical (a keep
  below the padded slots but >= a prompt's real count keeps every real token; README says what holds there).

Text form (CLI, results rows): `method@layer:keep[opt=value,...]`, stages joined by `+`, e.g.
`fastv@8:288+fastv@16:144` or `latesim@2:64[aggregate=max]`; `none` is the empty plan.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from jaxprune.prune.methods import COMMON_OPTIONS, FREE_VALUES, METHODS, MethodError

SEED_MAX = 2**32 - 1  # a `seed` option becomes a jax PRNG key


class PlanError(ValueError):
  """An invalid plan; the message is one line naming the stage and the problem."""


class LayerUnavailable(PlanError):
  """A stage at a layer where its method's signal does not exist (FastV at layer 0, a merge after it): a grid
  skips such (method, layer) pairs with a note instead of failing."""


@dataclasses.dataclass(frozen=True)
class Stage:
  method: str
  layer: int
  keep: int | float
  options: tuple[tuple[str, Any], ...] = ()

  def option(self, name: str) -> Any:
    given = dict(self.options)
    if name in given:
      return given[name]
    spec = dict(METHODS[self.method].options + COMMON_OPTIONS)
    return spec[name][0]

  @property
  def reindex(self) -> bool:
    value = self.option("reindex")
    return self.layer == 0 if value is None else bool(value)

  def __str__(self) -> str:
    opts = "".join(f"[{','.join(f'{k}={v}' for k, v in self.options)}]" if self.options else "")
    return f"{self.method}@{self.layer}:{self.keep}{opts}"


@dataclasses.dataclass(frozen=True)
class PrunePlan:
  stages: tuple[Stage, ...] = ()

  def __str__(self) -> str:
    return "+".join(str(s) for s in self.stages) or "none"

  def __bool__(self) -> bool:
    return bool(self.stages)

  @classmethod
  def single(cls, method: str, layer: int, keep: int | float, **options) -> PrunePlan:
    return cls((Stage(method, layer, keep, tuple(sorted(options.items()))),))

  @classmethod
  def parse(cls, text: str) -> PrunePlan:
    text = text.strip()
    if text in ("", "none"):
      return cls()
    stages = []
    for part in text.split("+"):
      m = re.fullmatch(r"\s*([a-z_-]+)@(-?\d+):([0-9.]+)(?:\[(.*)\])?\s*", part)
      if not m:
        raise PlanError(f"cannot parse stage {part!r}: expected method@layer:keep[opt=value,...]")
      method, layer, keep, opts = m.groups()
      options = []
      for item in filter(None, (opts or "").split(",")):
        if "=" not in item:
          raise PlanError(f"stage {part!r}: option {item!r} needs the form name=value")
        name, value = (s.strip() for s in item.split("=", 1))
        options.append((name, _parse_value(value)))
      stages.append(Stage(method, int(layer), _parse_keep(keep, part), tuple(sorted(options))))
    return cls(tuple(stages))

  def validate(self, cfg: Any, task_signals: frozenset[str] = frozenset()) -> PrunePlan:
    """Check every stage against the model's description (`models/base.py: VLMConfig`) and the signals the task
    adds (e.g. "relevance"); return the plan with ratios resolved to token counts."""
    if not self.stages:
      return self
    if not hasattr(cfg, "vision_signals"):
      raise PlanError(f"plan {self}: this model has no vision tower, so there are no visual tokens to prune")
    num_layers, available = cfg.num_layers, cfg.visual_tokens_per_image
    resolved, previous = [], None
    for stage in self.stages:
      where = f"stage {stage}"
      if stage.method not in METHODS:
        raise PlanError(f"{where}: unknown method {stage.method!r} (known: {', '.join(METHODS)})")
      method = METHODS[stage.method]
      if not 0 <= stage.layer < num_layers:
        raise PlanError(f"{where}: layer {stage.layer} is outside [0, {num_layers}) for this model")
      keep = stage.keep
      if isinstance(keep, float):
        if not 0 < keep < 1:
          raise PlanError(f"{where}: a ratio keep must lie in (0, 1), got {keep}")
        if available is None:
          raise PlanError(f"{where}: this model's visual-token count depends on the image, so give keep as a "
                          f"token count, not a ratio")
        keep = max(1, round(keep * available))
      if keep < 1:
        raise PlanError(f"{where}: keep must be >= 1 visual token, got {keep}")
      if previous is not None:
        if stage.layer <= previous.layer:
          raise PlanError(f"{where}: layers must strictly increase (previous stage at layer {previous.layer})")
        if keep > previous.keep:
          raise PlanError(f"{where}: keep {keep} exceeds the previous stage's {previous.keep}; dropped tokens "
                          f"never come back")
      unavailable = method.unavailable_at(stage.layer)
      if unavailable:
        raise LayerUnavailable(f"{where}: {unavailable}")
      missing = sorted(method.needs - cfg.vision_signals - task_signals)
      if missing:
        why = {"relevance": "only tasks with ground-truth relevance masks (scenes, easyvqa) give it","grid": "its visual tokens do not all sit on an image grid (e.g. [CLS] kept as a token)",
               "importance": "its vision tower gives no attention-based importance at the selected layer",
               "keys": "its vision tower gives no attention keys at the selected layer"}
        raise PlanError(f"{where}: {stage.method} needs the signal {missing[0]!r}, which is missing here: "
                        f"{why.get(missing[0], 'not offered by this family')}")
      if method.fixed_grid and (available is None or cfg.grid is None):
        raise PlanError(f"{where}: {stage.method} needs one fixed token grid per image; this model's visual "
                        f"tokens vary with the image")
      _check_options(where, stage, dict(method.options + COMMON_OPTIONS))
      checked = dataclasses.replace(stage, keep=keep)
      try:
        method.check(checked, cfg)
      except MethodError as e:
        raise PlanError(str(e)) from None
      resolved.append(checked)
      previous = resolved[-1]
    return PrunePlan(tuple(resolved))


def _check_options(where: str, stage: Stage, allowed: dict[str, tuple]) -> None:
  for name, value in stage.options:
    if name not in allowed:
      raise PlanError(f"{where}: unknown option {name!r} for {stage.method} (options: {', '.join(allowed)})")
    if name in FREE_VALUES:
      if not isinstance(value, int) or isinstance(value, bool):
        raise PlanError(f"{where}: option {name} must be an integer, got {value!r}")
      if name == "seed" and not 0 <= value <= SEED_MAX:
        raise PlanError(f"{where}: option seed must lie in [0, {SEED_MAX}], got {value}")
    elif value not in allowed[name]:
      raise PlanError(f"{where}: option {name}={value!r} must be one of {allowed[name]}")


def _parse_keep(text: str, part: str) -> int | float:
  try:
    return float(text) if "." in text else int(text)
  except ValueError:
    raise PlanError(f"stage {part!r}: keep {text!r} is neither an integer nor a ratio") from None


def _parse_value(text: str) -> Any:
  lowered = text.lower()
  if lowered in ("true", "false"):
    return lowered == "true"
  if re.fullmatch(r"-?\d+", text):
    return int(text)
  return text
