"""The study's plan (methods x layers x budgets, from the model's config) and its three eval stages."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from jaxprune import eval as jeval
from jaxprune.convert.hf import CheckpointError, config_of
from jaxprune.eval.common import split_list
from jaxprune.eval.runner import task_relevance_signals
from jaxprune.prune.methods import METHODS
from jaxprune.prune.plan import LayerUnavailable, PlanError, PrunePlan, Stage
from jaxprune.study import analysis
from jaxprune.study.cli import BUDGET_FRACTIONS, StudyError

PLAN_FILE = "study.json"  # what the study swept and why (read by the analysis)


def default_layers(num_layers: int) -> list[int]:
  """First, second, a quarter, half, three quarters and the last two layers (the image is read early; the
  information horizon is somewhere in between)."""
  n = num_layers
  return sorted({0, 1, n // 4, n // 2, 3 * n // 4, n - 2, n - 1} & set(range(n)))


def default_keeps(cfg) -> list[int]:
  """Budgets as counts, fractions of one image's visual tokens (BUDGET_FRACTIONS)."""
  nv = cfg.visual_tokens_per_image
  if nv is None:
    raise StudyError("--keep: this model's visual token count depends on the image; give budgets as counts "
                     "(e.g. --keep 64,128,256)")
  return sorted({max(1, round(nv * f)) for f in BUDGET_FRACTIONS})


def _ints(text: str, flag: str, low: int, high: int | None = None) -> list[int]:
  try:
    values = [int(x) for x in split_list(text)]
  except ValueError:
    raise StudyError(f"{flag} {text}: expected comma-separated integers") from None
  bad = [v for v in values if v < low or (high is not None and v >= high)]
  if not values or bad:
    where = f"lie in [{low}, {high})" if high is not None else f"be >= {low}"
    raise StudyError(f"{flag} {text}: every value must {where}")
  return sorted(set(values))


def sweep_plans(cfg, signals: frozenset[str], methods: Sequence[str], layers: Sequence[int],
                keeps: Sequence[int], seeds: Sequence[int]) -> tuple[list[str], list[str]]:
  """-> (plan strings, notes). Every method at every (layer, budget) where the plan validates; `random` once per
  seed (the control's draws), other seeded methods (the oracle bounds) at the first seed. A layer without the
  method's signal is skipped silently (FastV has none at layer 0); any other refusal is noted once per method."""
  plans, notes = [], []
  for name in methods:
    seeded = METHODS[name].seeded
    draws = seeds if name == "random" else seeds[:1] if seeded else [None]
    made, refused = 0, None
    for layer in layers:
      for keep in keeps:
        for seed in draws:
          stage = Stage(name, layer, keep, () if seed is None else (("seed", seed),))
          try:
            plans.append(str(PrunePlan((stage,)).validate(cfg, signals)))
            made += 1
          except LayerUnavailable:
            pass
          except PlanError as e:
            refused = refused or str(e)
    if refused:
      notes.append(f"{name}: {'not swept' if not made else 'some budgets skipped'} ({refused})")
  return plans, notes


def plan_study(args) -> dict:
  """The study's plan from the model's config alone (no weights read), written to DIR/study.json."""
  try:
    family, cfg = config_of(args.eval.model)
  except CheckpointError as e:
    raise StudyError(str(e)) from None
  if not family.is_vlm:
    raise StudyError(f"--model {args.eval.model}: a {family.name} model has no vision tower to prune")
  tasks = split_list(args.eval.tasks)
  signals = frozenset.intersection(*(task_relevance_signals(t, cfg) for t in tasks))
  layers = default_layers(cfg.num_layers) if args.layer is None else _ints(args.layer, "--layer", 0, cfg.num_layers)
  keeps = default_keeps(cfg) if args.keep is None else _ints(args.keep, "--keep", 1)
  nv = cfg.visual_tokens_per_image
  if nv is not None and max(keeps) >= nv:
    raise StudyError(f"--keep {args.keep}: one image has {nv} visual tokens; a study prunes to fewer")
  methods = list(METHODS) if args.method is None else split_list(args.method)
  unknown = [m for m in methods if m not in METHODS]
  if unknown:
    why = "the unpruned baseline always runs; " if unknown == ["none"] else ""
    raise StudyError(f"--method {','.join(unknown)}: {why or 'unknown; '}give method names (known: "
                     f"{', '.join(METHODS)})")
  if "random" not in methods:
    methods.append("random")  # the same-layer control every verdict is read against
  plans, notes = sweep_plans(cfg, signals, methods, layers, keeps, args.seeds)
  # on every item, not only the blind-filtered ones: the bounds at layer 0 (a lab model's acceptance check)
  bounds = [m for m in ("oracle", "random", "anti-oracle") if m in methods]  # random always is
  full_plans = sweep_plans(cfg, signals, bounds, [0], keeps, args.seeds[:1])[0] if "relevance" in signals else []
  return {"model": args.eval.model, "family": family.name, "tasks": tasks, "num_layers": cfg.num_layers,
          "visual_tokens_per_image": cfg.visual_tokens_per_image, "layers": layers, "keeps": keeps,
          "seeds": args.seeds, "methods": methods, "relevance": "relevance" in signals, "plans": plans, "full_plans": full_plans,
          "notes": notes, "bootstrap": args.bootstrap}


def _stage(name: str, argv: list[str]) -> None:
  code = jeval.main(argv)
  if code == 130:
    raise KeyboardInterrupt
  if code != 0:
    raise StudyError(f"the {name} stage failed (exit {code}; its message is above); rerun to resume")


def run_study(args, shared: list[str]) -> dict:
  """Plan, run the three stages (each resumes), analyse -> the analysis written to DIR/analysis.json."""
  out = Path(args.output_path)
  plan = plan_study(args)
  out.mkdir(parents=True, exist_ok=True)
  (out / PLAN_FILE).write_text(json.dumps(plan, indent=1) + "\n")
  print(f"study: {len(plan['plans'])} plans x blind-filtered items of {', '.join(plan['tasks'])}; layers "
        f"{plan['layers']}, budgets {plan['keeps']}, random seeds {plan['seeds']}", flush=True)
  for note in plan["notes"]:
    print(f"note: {note}", flush=True)
  _stage("full", [*shared, "--method", ",".join(["none", *plan["full_plans"]]), "--output-path", str(out / "full")])
  _stage("blind", [*shared, "--blind", "--output-path", str(out / "blind")])
  _stage("sweep", [*shared, "--drop-blind", str(out / "blind" / "blind_correct.json"),
                   "--method", ",".join(["none", *plan["plans"]]), "--output-path", str(out / "sweep")])
  result = analysis.analyse(out, plan)
  (out / analysis.ANALYSIS_FILE).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
  return result
