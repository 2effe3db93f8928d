"""`pgraft bias-variance`: the bias–variance curves across cutoffs, and optionally the end-to-end sweep.

pgraft bias-variance --model toy2d --reward x --rule best-of-n --n 4 --cutoffs 0.1 0.3 0.5 0.7 0.9 \
    --states 256 --continuations 8 --sweep --out runs/bv

Writes `curves.csv` (estimates with bands; `*_exact` columns on the toy), `exact.csv` (toy), `sweep.csv`
and `recommendation.json` (with `--sweep`) and `bias_variance.html` (a standalone plot) into `--out`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

SKIPPED = ("method", "cutoff")  # set per cutoff by the study itself
CURVE_COLUMNS = ("cutoff", "cutoff_effective", "V", "B", "R2", "D", "D_plugin", "V_exact", "B_exact", "D_exact")
SWEEP_COLUMNS = ("cutoff", "final_reward", "realism_final", "realism_loss", "candidates", "finetune_steps", "seconds")


def add_parser(sub: Any) -> None:
    """Register the `bias-variance` subcommand on the `pgraft` subparsers."""
    from pgraft.cli.main import add_config_flags

    p = sub.add_parser("bias-variance", help="bias-variance curves across cutoffs (and the end-to-end sweep)")
    add_config_flags(p, skip=frozenset(SKIPPED))
    p.add_argument("--config", type=Path, help="YAML file of run options (as for pgraft run); flags override it")
    p.add_argument("--cutoffs", type=float, nargs="+", required=True, help="cutoffs t in (0, 1), snapped to the grid")
    p.add_argument("--states", type=int, default=256, help="M: base states per cutoff (>= 2)")
    p.add_argument("--continuations", type=int, default=8, help="R: stochastic continuations per state (>= 2)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the states for the bands")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the bands, in (0.5, 1)")
    p.add_argument("--exact-points", type=int, default=30, help="toy: points of the dense exact curves (>= 2)")
    p.add_argument("--sweep", action="store_true", help="also run one P-GRAFT run per cutoff, plus GRAFT, same budget")
    p.add_argument(
        "--max-realism-loss",
        type=float,
        default=None,
        help="sweep: bound on the realism loss of the recommended cutoff (default: loglik 0.5, fid_real 5)",
    )
    p.add_argument("--out", type=Path, required=True, help="folder for the CSV files and the HTML plot")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _fmt(row: dict[str, Any], columns: tuple[str, ...], header: bool) -> str:
    cols = [c for c in columns if c in row]
    head = "  ".join(f"{c:>12}" for c in cols) + "\n" if header else ""
    cells = [f"{row[c]:>12d}" if isinstance(row[c], int) else f"{row[c]:>12.4g}" for c in cols]
    return head + "  ".join(cells)


def cmd_bias_variance(args: argparse.Namespace) -> int:
    from pgraft.cli.main import config_from_args
    from pgraft.cli.progress import StageBar
    from pgraft.studies.bias_variance.curves import CurvePoint, CurveProgress, CurveSpec
    from pgraft.studies.bias_variance.study import StudyFinished, study_iter, write_outputs
    from pgraft.studies.sweep import SweepPoint, SweepProgress, SweepSpec

    if args.exact_points < 2:
        raise ValueError(f"--exact-points: {args.exact_points} is invalid; it must be an integer >= 2")
    config = config_from_args(args)
    curve_spec = CurveSpec(tuple(args.cutoffs), args.states, args.continuations, args.bootstrap, args.level)
    sweep_spec = SweepSpec(tuple(args.cutoffs), True, args.max_realism_loss) if args.sweep else None
    bar = StageBar(quiet=args.quiet)
    headers = {"curve": True, "sweep": True}
    result: StudyFinished | None = None
    print(
        f"pgraft: bias-variance on {config.model}, reward {config.reward}, rule {config.rule} -> {args.out}", flush=True
    )
    for ev in study_iter(config, curve_spec, sweep_spec, allow_import=True, exact_points=args.exact_points):
        if isinstance(ev, CurveProgress | SweepProgress):
            desc = ev.stage if isinstance(ev, CurveProgress) else f"sweep t={ev.cutoff:g} round {ev.round} {ev.stage}"
            bar.update(desc, ev.done, ev.total)
        elif isinstance(ev, CurvePoint | SweepPoint):
            kind = "curve" if isinstance(ev, CurvePoint) else "sweep"
            print(_fmt(ev.row, CURVE_COLUMNS if kind == "curve" else SWEEP_COLUMNS, headers[kind]), flush=True)
            headers[kind] = False
        elif isinstance(ev, StudyFinished):
            result = ev
    bar.close()
    assert result is not None
    files = write_outputs(args.out, result)
    if result.recommendation is not None:
        print(f"recommended: {result.recommendation.describe()}")
    print("wrote " + ", ".join(str(f) for f in files))
    return 0
