"""`pgraft compare`: GRAFT, P-GRAFT, DDPO and best-of-n sampling at matched budgets of reward calls.

pgraft compare --model toy2d --reward x --samples 1024 --methods graft pgraft ddpo bon-sampling \
    --budget-reward-calls 2048 4096 --seeds 0 1 2 --out runs/compare
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    from pgraft.cli.run import add_config_flags
    from pgraft.graft.config import METHODS

    p = sub.add_parser(
        "compare",
        help="GRAFT, P-GRAFT, DDPO and best-of-n sampling side by side at matched reward calls",
        description="Each method runs on the same config (flags and YAML as `pgraft run`) with the rounds a budget "
        "of reward calls pays for; writes compare.csv (every round), summary.csv and compare.html.",
    )
    add_config_flags(p, skip=frozenset({"method", "seed", "rounds"}))
    p.add_argument("--methods", nargs="+", default=list(METHODS), help=f"methods (default: {' '.join(METHODS)})")
    p.add_argument(
        "--budget-reward-calls",
        nargs="+",
        type=int,
        required=True,
        metavar="N",
        help="total reward calls per run, round 0 and previews included; several give several budgets",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of each method (default 0 1 2)")
    p.add_argument("--out", type=Path, required=True, help="folder for compare.csv, summary.csv, compare.html")


def cmd_compare(args: argparse.Namespace) -> int:
    from pgraft.cli.progress import StageBar
    from pgraft.cli.run import config_values
    from pgraft.core.events import Cancelled, Progress
    from pgraft.graft.config import RunConfig
    from pgraft.graft.storage import check_out
    from pgraft.studies.compare import (
        CompareFinished,
        CompareRow,
        CompareSpec,
        compare_iter,
        format_summary,
        rounds_for,
        write_compare,
    )

    check_out(args.out)
    base = RunConfig.from_dict(config_values(args), source="arguments")
    spec = CompareSpec(tuple(args.methods), tuple(args.budget_reward_calls), tuple(args.seeds))
    for budget in spec.budgets:
        print(f"pgraft compare: budget {budget:,} reward calls = {rounds_for(base, budget)} rounds after the base")
    bar = StageBar()
    for ev in compare_iter(base, spec, allow_import=True):
        if isinstance(ev, Progress):
            bar.update(ev.describe(), ev.done, ev.total)
        elif isinstance(ev, CompareRow):
            r = ev.row
            if r["round"] == 0:
                continue
            bar.close()
            print(f"{r['method']:>13}  budget {r['budget']:>7,}  seed {r['seed']}  round {r['round']}  "
                  f"reward {r['reward']:.4g}  {r['realism_metric']} {r['realism']:.4g}", flush=True)  # fmt: skip
        elif isinstance(ev, Cancelled):
            return 130
        elif isinstance(ev, CompareFinished):
            bar.close()
            files = write_compare(ev.table, ev.summary, args.out)
            print(format_summary(ev.summary))
            for name, path in files.items():
                print(f"  {name:>8}: {path}")
    return 0
