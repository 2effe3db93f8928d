"""`pgraft inc`: inverse noise correction of a flow model on the command line (docs/method.md §4).

pgraft inc --model toy2d-flow --train-steps 300 --steps 8 16 32 --correction-steps 1 2 4 --out runs/inc-toy
pgraft inc --model digits-flow --steps 4 8 16 --invert 1000 --out runs/inc-digits

Every field of `IncConfig` is a flag of the same name; the run writes the files listed in `inc_report`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

SHOWN = ("method", "num_inference_steps", "correction_steps", "flops_per_image", "loglik", "mmd", "fd")


def add_parser(sub: Any) -> None:
    """Register the `inc` subcommand on the `pgraft` subparsers."""
    from pgraft.inc.run import IncConfig

    p = sub.add_parser("inc", help="inverse noise correction of a flow model: quality against FLOPs per image")
    for f in dataclasses.fields(IncConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} (default: {f.default})"
        if f.name in ("steps", "correction_steps"):
            p.add_argument(flag, type=int, nargs="+", default=argparse.SUPPRESS, help=help_text)
        elif f.name in ("train_steps", "invert", "samples", "preview", "max_iter", "seed") or f.name.endswith(
            ("_hidden", "_train_steps", "_batch_size")
        ):
            p.add_argument(flag, type=int, default=argparse.SUPPRESS, help=help_text)
        elif f.name in ("tol", "correction_lr"):
            p.add_argument(flag, type=float, default=argparse.SUPPRESS, help=help_text)
        else:
            p.add_argument(flag, default=argparse.SUPPRESS, help=help_text)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/inc-<model>-<timestamp>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> Any:
    from pgraft.inc.run import IncConfig

    names = {f.name for f in dataclasses.fields(IncConfig)}
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in names}
    return IncConfig(**values)


def _print_table(table: Any) -> None:
    cols = [c for c in (*SHOWN, "gain_at_equal_flops") if c in table.columns]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"), flush=True)


def cmd_inc(args: argparse.Namespace) -> int:
    from pgraft.cli.progress import StageBar
    from pgraft.inc.report import write_outputs
    from pgraft.inc.run import IncNotice, IncProgress, run_inc_iter

    config = config_from_args(args)
    out = args.out or Path("runs") / f"inc-{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"pgraft inc: {config.model}, K in {list(config.steps)}, m in {list(config.correction_steps)} -> {out}")
    bar = StageBar(quiet=args.quiet)
    gen = run_inc_iter(config)
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        if isinstance(ev, IncNotice):
            print(f"warning: {ev.message}", file=sys.stderr)
        elif isinstance(ev, IncProgress):
            bar.update(f"K={ev.steps} {ev.stage}", ev.done, ev.total)
    bar.close()
    _print_table(result.table())
    written = write_outputs(result, out)
    print(f"done: {len(written)} files in {out} (quality_vs_flops.csv, diagnostics.json, report.html, ...)")
    return 0
