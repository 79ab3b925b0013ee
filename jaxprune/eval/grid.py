"""The grid of plans a command line asks for: methods x layers x keeps, or full plans, validated before any
compile."""

from __future__ import annotations

from jaxprune.eval.common import NONE, EvalError, config_key, split_list
from jaxprune.prune.methods import METHODS
from jaxprune.prune.plan import LayerUnavailable, PlanError, PrunePlan, Stage


def _parse_keeps(text: str) -> list[int | float]:
  keeps = []
  for item in split_list(text):
    try:
      keep = float(item) if "." in item else int(item)
    except ValueError:
      raise EvalError(f"--keep {item}: not a number") from None
    if keep <= 0 or (isinstance(keep, float) and keep >= 1):
      raise EvalError(f"--keep {item}: keep at least 1 visual token (an integer), or a ratio in (0, 1)")
    keeps.append(keep)
  return keeps


DEFAULT_LAYER = 2  # FastV's K; models with fewer layers use their last one


def split_methods(text: str) -> list[str]:
  """--method's comma list, where a plan's options may hold commas too: `latesim@2:64[aggregate=max,norm=raw]`."""
  entries, depth, current = [], 0, ""
  for ch in text:
    depth += (ch == "[") - (ch == "]")
    if ch == "," and depth == 0:
      entries.append(current)
      current = ""
    else:
      current += ch
  entries.append(current)
  return list(dict.fromkeys(e.strip() for e in entries if e.strip()))


def _layers_of(text: str, flag: str, num_layers: int) -> list[int]:
  """`--layer 2,16` or the `2` of `--method fastv@2` -> layers, each checked against the model's depth."""
  sep = "" if flag.endswith("@") else " "
  try:
    layers = [int(x) for x in split_list(text)]
  except ValueError:
    raise EvalError(f"{flag}{sep}{text}: expected comma-separated integers") from None
  if not layers:
    raise EvalError(f"{flag}{sep}{text}: no layer given (expected e.g. {flag}{sep}2)")
  for layer in layers:
    if not 0 <= layer < num_layers:
      raise EvalError(f"{flag}{sep}{layer}: outside [0, {num_layers}) for this model ({num_layers} decoder layers)")
  return layers


def _split_entry(entry: str) -> tuple[str, str, str]:
  """`fastv@2` -> ("fastv", "@", "2"); one line naming the entry for a malformed one (`@2`, `fastv@`, `none@1`)."""
  method, at, pinned = entry.partition("@")
  if at and not method.strip():
    raise EvalError(f"--method {entry}: no method before '@' (expected method@layer, e.g. fastv@2)")
  if method == NONE:
    raise EvalError(f"--method {entry}: 'none' is the unpruned baseline and takes no layer")
  if method not in METHODS:
    raise EvalError(f"--method {method}: unknown method (known: none, {', '.join(METHODS)})")
  if at and not pinned.strip():
    raise EvalError(f"--method {entry}: no layer after '@' (expected method@layer, e.g. {method}@2)")
  return method, at, pinned


def build_grid(args, cfg, task_signals: frozenset[str] = frozenset()) -> tuple[list, list[str]]:
  """-> (plans: None for the baseline, else validated PrunePlans; notes on skipped combinations).

  A `--method` entry is `none`, a method (crossed with `--layer` and `--keep`), a method with its own layer
  (`fastv@2`, crossed with `--keep`), or a full plan exactly as results rows print it (`fastv@8:288+latesim@16:64`),
  so any row can be run again by copying its plan. `task_signals`: what the tasks add (e.g. "relevance").
  """
  num_layers = cfg.num_layers
  layers_of = lambda text, flag: _layers_of(text, flag, num_layers)
  keeps = _parse_keeps(args.keep)
  plans, notes = [], []
  for entry in split_methods(args.method):
    if entry == NONE:
      plans.append(None)
      continue
    if ":" in entry:  # a full plan
      try:
        plans.append(PrunePlan.parse(entry).validate(cfg, task_signals))
      except PlanError as e:
        raise EvalError(f"--method {entry}: {e}") from None
      continue
    method, at, pinned = _split_entry(entry)
    options = (("seed", args.seed),) if method in METHODS and METHODS[method].seeded else ()
    # --layer applies only to methods without a pinned layer, so it is checked only when used
    if at:
      layers = layers_of(pinned, f"--method {method}@")
    elif args.layer is None:
      layers = [min(DEFAULT_LAYER, num_layers - 1)]
    else:
      layers = layers_of(args.layer, "--layer")
    valid, skipped, why = 0, [], ""
    for layer in layers:
      for keep in keeps:
        try:
          plans.append(PrunePlan((Stage(method, layer, keep, options),)).validate(cfg, task_signals))
          valid += 1
        except PlanError as e:
          if not isinstance(e, LayerUnavailable):  # only a signal missing at this layer is skippable
            raise EvalError(str(e)) from None
          if layer not in skipped:
            skipped.append(layer)
          why = str(e).split(": ", 1)[1]
    if skipped:  # one note per method, not one per (layer, budget)
      notes.append(f"skipped {method}@{','.join(map(str, skipped))}: {why}")
    if not valid:
      raise EvalError(f"--method {method}: no valid layer among {layers} ({notes[-1]})")
  if not plans:
    raise EvalError("nothing to evaluate: give --method (none for the unpruned baseline)")
  plans = list({config_key(p): p for p in plans}.values())  # fastv@1 and fastv with --layer 1 are one row
  return plans, notes
