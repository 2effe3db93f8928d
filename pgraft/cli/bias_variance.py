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
DOMAIN_DEFAULT = "the model's domain default"
CURVE_COLUMNS = ("cutoff", "cutoff_effective", "V", "B", "R2", "D", "D_plugin", "V_exact", "B_exact", "D_exact")
SWEEP_COLUMNS = ("cutoff", "final_reward", "realism_final", "realism_loss", "candidates", "finetune_steps", "seconds")


def add_parser(sub: Any) -> None:
    """Register the `bias-variance` subcommand on the `pgraft` subparsers."""
    from pgraft.cli.flags import add_dataclass_flags
    from pgraft.cli.run import add_config_flags
    from pgraft.studies.bias_variance.curves import CurveSpec

    p = sub.add_parser("bias-variance", help="bias-variance curves across cutoffs (and the end-to-end sweep)")
    add_config_flags(p, skip=frozenset(SKIPPED))
    add_dataclass_flags(p, CurveSpec, defaults={"states": DOMAIN_DEFAULT, "continuations": DOMAIN_DEFAULT})
    p.add_argument("--exact-points", type=int, default=30, help="toy: points of the dense exact curves (>= 2)")
    p.add_argument("--sweep", action="store_true", help="also run one P-GRAFT run per cutoff, plus GRAFT, same budget")
    p.add_argument(
        "--max-realism-loss",
        type=float,
        default=None,
        help="sweep: bound on the realism loss of the recommended cutoff (default: the domain's, loglik 0.5 on the "
        "toy, fid_real 5 on digits)",
    )
    p.add_argument("--out", type=Path, required=True, help="folder for the CSV files and the HTML plot")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def study_specs(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The run config and curve / sweep specs of the command; what is not given comes from the model's
    domain (`Domain.study`: cutoffs, states, continuations, sampling steps)."""
    from pgraft.cli.flags import values_of
    from pgraft.cli.run import config_values
    from pgraft.graft.config import RunConfig
    from pgraft.registry import domain_of
    from pgraft.studies.bias_variance.curves import CurveSpec
    from pgraft.studies.sweep import SweepSpec

    values = config_values(args)
    study = domain_of(values.get("model") or RunConfig.model).study
    if values.get("num_inference_steps") is None and study.num_inference_steps is not None:
        values["num_inference_steps"] = study.num_inference_steps
    config = RunConfig.from_dict(values, source="arguments")
    given = values_of(args, CurveSpec)
    spec_values = {"cutoffs": study.cutoffs, "states": study.states, "continuations": study.continuations, **given}
    curve_spec = CurveSpec(**spec_values)
    sweep_spec = SweepSpec(curve_spec.cutoffs, True, args.max_realism_loss) if args.sweep else None
    return config, curve_spec, sweep_spec


def _fmt(row: dict[str, Any], columns: tuple[str, ...], header: bool) -> str:
    cols = [c for c in columns if c in row]
    head = "  ".join(f"{c:>12}" for c in cols) + "\n" if header else ""
    cells = [f"{row[c]:>12d}" if isinstance(row[c], int) else f"{row[c]:>12.4g}" for c in cols]
    return head + "  ".join(cells)


def cmd_bias_variance(args: argparse.Namespace) -> int:
    from pgraft.cli.progress import StageBar
    from pgraft.core.events import Notice, Progress
    from pgraft.studies.bias_variance.curves import CurvePoint
    from pgraft.studies.bias_variance.study import StudyFinished, study_iter, write_outputs
    from pgraft.studies.sweep import SweepPoint

    if args.exact_points < 2:
        raise ValueError(f"--exact-points: {args.exact_points} is invalid; it must be an integer >= 2")
    config, curve_spec, sweep_spec = study_specs(args)
    bar = StageBar(quiet=args.quiet)
    headers = {"curve": True, "sweep": True}
    result: StudyFinished | None = None
    print(
        f"pgraft: bias-variance on {config.model}, reward {config.reward}, rule {config.rule} -> {args.out}", flush=True
    )
    print(
        f"pgraft: cutoffs {' '.join(f'{c:g}' for c in curve_spec.cutoffs)}, {curve_spec.states} states x "
        f"{curve_spec.continuations} continuations, {config.num_inference_steps} sampling steps",
        flush=True,
    )
    for ev in study_iter(config, curve_spec, sweep_spec, allow_import=True, exact_points=args.exact_points):
        if isinstance(ev, Progress):
            bar.update(ev.describe(), ev.done, ev.total)
        elif isinstance(ev, Notice):
            print(f"pgraft: {ev.message}", flush=True)
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
