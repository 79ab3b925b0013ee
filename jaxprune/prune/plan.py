"""Prune plans: what to prune, where, and how much — validated once, before anything compiles.

A plan is an ordered tuple of stages `Stage(method, layer, keep, options)`:
- `layer = K`: the score is computed from what enters decoder layer K, and layers K.. run on the reduced
  sequence (K = 0 prunes before the LLM). Layers strictly increase, keeps never increase.
- `keep`: visual tokens kept per image (an int, or a ratio in (0, 1) of the tokens the image has).
- Positions: at K >= 1 kept tokens keep their RoPE ids (gaps, as FastV); at K = 0 the LLM sequence is built
  from the kept tokens, so ids are contiguous (as VisionZip). Option `reindex` flips either default.
- `keep >= tokens present` is the identity: the stage is skipped and logits are bit-identical.

Text form (CLI, results rows): `method@layer:keep[opt=value,...]`, stages joined by `+`, e.g.
`fastv@8:288+fastv@16:144` or `latesim@2:64[aggregate=max]`; `none` is the empty plan.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from jaxprune.models.config import LlavaConfig, TextConfig


class PlanError(ValueError):
  """An invalid plan; the message is one line naming the stage and the problem."""


@dataclasses.dataclass(frozen=True)
class Method:
  layers: str  # "any", "zero" (K = 0 only) or "late" (K >= 1: needs the previous layer's attention)
  merge: bool = False  # outputs new tokens instead of a subset
  needs_grid: bool = False  # reads the 2-D patch grid
  options: tuple[tuple[str, tuple], ...] = ()  # (name, allowed values; first is the default)


_TEXT_SIM = (("norm", ("rms", "raw")), ("aggregate", ("mean", "max")), ("query", ("question", "text")))
METHODS: dict[str, Method] = {
    "latesim": Method("any", options=_TEXT_SIM),
    "embedsim": Method("zero", options=_TEXT_SIM),
    "fastv": Method("late", options=(("query", ("last", "question")),)),
    "clsattn": Method("any"),
    "visionzip": Method("zero", merge=True, options=(("contextual", (None,)),)),
    "divprune": Method("zero"),
    "random": Method("any", options=(("seed", (0,)),)),
    "uniform": Method("any", needs_grid=True),
    "pool": Method("zero", merge=True, needs_grid=True),
}
COMMON_OPTIONS = (("reindex", (None, True, False)),)
_FREE_VALUES = {"contextual", "seed"}  # integer options: the tuple holds only the default


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
  def single(cls, method: str, layer: int, keep: int | float, **options) -> "PrunePlan":
    return cls((Stage(method, layer, keep, tuple(sorted(options.items()))),))

  @classmethod
  def parse(cls, text: str) -> "PrunePlan":
    text = text.strip()
    if text in ("", "none"):
      return cls()
    stages = []
    for part in text.split("+"):
      m = re.fullmatch(r"\s*([a-z_]+)@(-?\d+):([0-9.]+)(?:\[(.*)\])?\s*", part)
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

  def validate(self, cfg: LlavaConfig | TextConfig) -> "PrunePlan":
    """Check every stage against the model; return the plan with ratios resolved to token counts."""
    if not self.stages:
      return self
    if not isinstance(cfg, LlavaConfig):
      raise PlanError(f"plan {self}: this model has no vision tower, so there are no visual tokens to prune")
    num_layers, available = cfg.text.num_layers, cfg.num_image_tokens
    grid_ok = cfg.vision_feature_select_strategy == "default"
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
        keep = max(1, round(keep * cfg.num_image_tokens))
      if keep < 1:
        raise PlanError(f"{where}: keep must be >= 1 visual token, got {keep}")
      if previous is not None:
        if stage.layer <= previous.layer:
          raise PlanError(f"{where}: layers must strictly increase (previous stage at layer {previous.layer})")
        if keep > previous.keep:
          raise PlanError(f"{where}: keep {keep} exceeds the previous stage's {previous.keep}; dropped tokens "
                          f"never come back")
      if method.layers == "zero" and stage.layer != 0:
        raise PlanError(f"{where}: {stage.method} works on the LLM input, so it exists only at layer 0")
      if method.layers == "late" and stage.layer == 0:
        raise PlanError(f"{where}: {stage.method} reads layer K-1's attention, which does not exist at layer 0")
      if method.needs_grid and not grid_ok:
        raise PlanError(f"{where}: {stage.method} needs the patch grid, but the model keeps [CLS] among its tokens")
      if stage.method == "pool" and keep < available:
        from jaxprune.prune.scorers import pool_grid
        side = cfg.vision.image_size // cfg.vision.patch_size
        kh, kw = pool_grid(side, side, keep)
        if kh * kw != keep:
          raise PlanError(f"{where}: pool cannot tile the {side}x{side} grid into {keep} tokens "
                          f"(nearest: {kh * kw})")
      allowed = dict(method.options + COMMON_OPTIONS)
      for name, value in stage.options:
        if name not in allowed:
          raise PlanError(f"{where}: unknown option {name!r} for {stage.method} (options: {', '.join(allowed)})")
        if name in _FREE_VALUES:
          if not isinstance(value, int) or isinstance(value, bool):
            raise PlanError(f"{where}: option {name} must be an integer, got {value!r}")
        elif value not in allowed[name]:
          raise PlanError(f"{where}: option {name}={value!r} must be one of {allowed[name]}")
      if stage.method == "visionzip" and stage.option("contextual") is not None:
        if not 1 <= stage.option("contextual") < min(keep, available):
          raise PlanError(f"{where}: contextual must lie in [1, keep)")
      resolved.append(dataclasses.replace(stage, keep=keep))
      previous = resolved[-1]
    return PrunePlan(tuple(resolved))


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
