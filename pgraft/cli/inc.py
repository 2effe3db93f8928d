"""`pgraft inc`: inverse noise correction of a flow model on the command line (docs/method.md §4).

pgraft inc --model toy2d-flow --train-steps 300 --steps 8 16 32 --correction-steps 1 2 4 --out runs/inc-toy
pgraft inc --model digits-flow --steps 4 8 16 --invert 1000 --out runs/inc-digits

Every field of `IncConfig` is a flag of the same name; the run writes the files listed in `inc_report`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

SHOWN = ("method", "grid", "num_inference_steps", "correction_steps", "flops_per_image", "loglik", "mmd", "fd")


def add_parser(sub: Any) -> None:
    """Register the `inc` subcommand on the `pgraft` subparsers."""
    from pgraft.cli.flags import add_dataclass_flags
    from pgraft.inc.config import IncConfig

    p = sub.add_parser("inc", help="inverse noise correction of a flow model: quality against FLOPs per image")
    add_dataclass_flags(p, IncConfig)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/inc-<model>-<timestamp>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> Any:
    from pgraft.cli.flags import values_of
    from pgraft.inc.config import IncConfig

    return IncConfig(**values_of(args, IncConfig))


GAINS = ("gain_vs_own_grid", "gain_vs_same_k", "gain_at_equal_flops")


def _print_table(table: Any, primary: str) -> None:
    from pgraft.inc.tables import verdict

    cols = [c for c in (*SHOWN, *GAINS) if c in table.columns]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"), flush=True)
    if text := verdict(table, primary):
        print(text, flush=True)


def cmd_inc(args: argparse.Namespace) -> int:
    from pgraft.cli.progress import StageBar
    from pgraft.core.events import Notice, Progress, drain
    from pgraft.inc.report import write_outputs
    from pgraft.inc.run import IncResult, run_inc_iter

    config = config_from_args(args)
    out = args.out or Path("runs") / f"inc-{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"pgraft inc: {config.model}, K in {list(config.steps)}, m in {list(config.correction_steps)} -> {out}")
    bar = StageBar(quiet=args.quiet)

    def show(ev: Any) -> None:
        if isinstance(ev, Notice):
            print(f"warning: {ev.message}", file=sys.stderr)
        elif isinstance(ev, Progress):
            bar.update(ev.describe(), ev.done, ev.total)

    result: IncResult | None = drain(run_inc_iter(config), show)
    bar.close()
    assert result is not None
    _print_table(result.table(), result.primary)
    written = write_outputs(result, out)
    print(f"done: {len(written)} files in {out} (quality_vs_flops.csv, diagnostics.json, report.html, ...)")
    return 0
