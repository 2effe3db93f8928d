"""`pgraft scout`: an Optuna search over the cutoff, the rule, the budget and the learning rate, then the
full run's config and its predicted cost.

pgraft scout --model toy2d --reward x --rounds 2 --trials 20 --out runs/scout
pgraft scout --model toy2d --reward x --search cutoff=0:0.6:0.1 --search lr=1e-4:1e-2:log --samples 1024 --out s
pgraft scout --config run.yaml --trials 40 --workers 2 --out runs/scout --resume
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    from pgraft.cli.run import add_config_flags
    from pgraft.studies.scout import OBJECTIVES, SEARCHABLE

    p = sub.add_parser(
        "scout",
        help="search cutoff, rule, budget and learning rate with short runs (Optuna), then export the full run",
        description="Each trial is a short `pgraft run`. A parameter given as a flag is fixed for every trial; "
        f"the others are searched (searchable: {', '.join(n.replace('_', '-') for n in SEARCHABLE)}).",
    )
    add_config_flags(p)
    p.add_argument("--out", type=Path, required=True, help="study folder: trials/, trials.csv, study.db, best.yaml")
    p.add_argument("--trials", type=int, default=20, help="trials the study should hold (default 20)")
    p.add_argument(
        "--search",
        action="append",
        default=[],
        metavar="NAME=RANGE",
        help="a range to search: cutoff=0:0.8 (uniform), cutoff=0:0.8:0.1 (a grid), lr=1e-4:1e-2:log, "
        "rule=best-of-n,quantile, n=2,4,8 (repeatable; replaces that parameter's default range)",
    )
    p.add_argument("--objective", choices=OBJECTIVES, default="pareto",
                   help="pareto: final reward up and realism loss down (no pruning); reward: the final reward; "
                   "penalised: reward - w * realism loss (both pruned round by round)")  # fmt: skip
    p.add_argument("--realism-weight", type=float, default=1.0, help="w of --objective penalised (default 1)")
    p.add_argument("--max-realism-loss", type=float, help="the chosen trial's realism bound (default: the domain's)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine sharing the study")
    p.add_argument("--storage", help="an Optuna storage URL shared by many machines (default: OUT/study.db)")
    p.add_argument("--study-name", default="pgraft-scout", help="the study's name in the storage")
    p.add_argument("--scale", type=float, default=4.0, help="full_run.yaml: the chosen trial's budget times this")
    p.add_argument("--devices", type=int, default=8, help="the predicted cost and the accelerate command for N GPUs")
    p.add_argument("--resume", action="store_true", help="add trials to the study in OUT until it holds --trials")


def cmd_scout(args: argparse.Namespace) -> int:
    from pgraft.cli.flags import values_of
    from pgraft.cli.run import config_values
    from pgraft.graft.config import RunConfig
    from pgraft.studies.scout import (
        ScoutCancelled,
        ScoutFinished,
        ScoutSpec,
        SearchSpace,
        TrialDone,
        full_run_commands,
        parse_range,
        scout_iter,
    )

    values = config_values(args)
    base = RunConfig.from_dict(values, source="arguments")
    fixed = list(values_of(args, RunConfig))
    if args.config is not None:
        fixed += list(RunConfig.read_yaml(args.config))
    ranges = [parse_range(text) for text in args.search]
    space = SearchSpace.build(base, fixed, ranges)
    spec = ScoutSpec(
        trials=args.trials, objective=args.objective, realism_weight=args.realism_weight,
        max_realism_loss=args.max_realism_loss, workers=args.workers, storage=args.storage,
        study_name=args.study_name, scale=args.scale, devices=args.devices, seed=base.seed,
    )  # fmt: skip
    print(f"pgraft scout: {spec.trials} trials of {base.model}, reward {base.reward}, objective {spec.objective}")
    print(f"pgraft scout: searching {space.describe() or 'nothing (every parameter is fixed)'}", flush=True)
    searched = {name.replace("_", "-") for name in space.ranges}
    for ev in scout_iter(base, space, spec, args.out, resume=args.resume):
        if isinstance(ev, TrialDone):
            r = ev.row
            params = "  ".join(f"{k}={_fmt(r[k])}" for k in r if k in searched)
            metric = r.get("realism_metric")
            realism = f"  {metric} loss {_fmt(r.get('realism_loss'))}" if metric else ""
            print(f"trial {r['trial']:>3}  reward {_fmt(r.get('final_reward'))}{realism}  {params}", flush=True)
        elif isinstance(ev, ScoutCancelled):
            print("pgraft scout: stopped; the finished trials are in the study", file=sys.stderr)
            return 130
        elif isinstance(ev, ScoutFinished):
            states = ev.table["state"].value_counts().to_dict() if "state" in ev.table else {}
            print("pgraft scout: " + ", ".join(f"{n} {s}" for s, n in states.items()))
            if ev.best is None:
                print("pgraft scout: no trial completed; nothing to export", file=sys.stderr)
                return 1
            if ev.recommendation is not None:
                print(f"pgraft scout: chosen trial {ev.best['trial']}: {ev.recommendation.describe()}")
            else:
                print(f"pgraft scout: chosen trial {ev.best['trial']} (best {spec.objective})")
            for name, path in ev.files.items():
                print(f"  {name:>9}: {path}")
            if ev.cost is not None and not ev.cost.empty:
                for row in ev.cost.to_dict("records"):
                    print(f"  predicted full run on {row['devices']} device(s): {_duration(row['predicted_s'])}")
            for command in full_run_commands(args.out, spec.devices):
                print(f"  {command}")
    return 0


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
