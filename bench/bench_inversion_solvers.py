"""Backward-Euler inversion of real data: fixed-point iteration against Anderson acceleration (and `auto`, the
default: fixed-point where it contracts, Anderson for the rows it has not converged after a few iterations).

    python bench/bench_inversion_solvers.py                        # digits-flow, 1,000 real digits, K = 8 and 16
    python bench/bench_inversion_solvers.py --model toy2d-flow --samples 2000

Per sampler grid, solver and K: seconds, velocity evaluations per sample, the samples that did not invert
(dropped), the worst residual kept and the round-trip error max |G(z) - x| (sampled again on the same grid).
They run one after another in one process, on the same data, so their ratios are comparable on a noisy machine
(goal on 2 cores: <= 2 % dropped at K = 8 and 16, and 1,000 digits inverted at K = 16 in under 60 s). The
linear grid is the one before the grid option existed; `--tol` defaults to the domain's.
"""

from __future__ import annotations

import argparse
import time

import torch

from pgraft.core.process import FLOW_GRIDS
from pgraft.inc.config import IncConfig
from pgraft.inc.inversion import SOLVERS, euler_sample, invert
from pgraft.inc.quality import make_quality
from pgraft.inc.run import load_flow_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="digits-flow", choices=["digits-flow", "toy2d-flow"])
    p.add_argument("--steps", type=int, nargs="+", default=[8, 16])
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--solvers", nargs="+", default=["fixed-point", "anderson", "auto"], choices=SOLVERS)
    p.add_argument("--grids", nargs="+", default=["linear", "karras"], choices=tuple(FLOW_GRIDS))
    p.add_argument("--tol", type=float, default=None, help="residual tolerance (default: the domain's)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_flow_model(IncConfig(model=args.model))
    config = IncConfig(model=args.model, tol=args.tol).resolved(model.domain)
    tol, max_iter, _grid = config.inversion_options()
    data = make_quality(model, config.seed).real_data(args.samples)
    print(f"# {args.model}: {len(data)} real samples, tol {tol:g}, max-iter {max_iter}, {args.threads} threads")
    header = f"{'grid':>12} {'solver':>12} {'K':>4} {'seconds':>9} {'evals/sample':>13} {'dropped':>8} {'residual':>10}"
    print(f"{header} {'|G(z)-x|':>10}")
    for k in args.steps:
        for grid in args.grids:
            for solver in args.solvers:
                t0 = time.perf_counter()
                inv = invert(model, data, k, tol=tol, max_iter=max_iter, on_failure="drop", solver=solver, grid=grid)
                seconds = time.perf_counter() - t0
                kept = ~inv.failed
                back = euler_sample(model, inv.kept, k, grid=grid) if kept.any() else None
                err = float((back - data[kept]).abs().max()) if back is not None else float("nan")
                print(f"{grid:>12} {solver:>12} {k:>4} {seconds:>9.2f} {inv.evaluations_per_sample:>13.1f} "
                      f"{int(inv.failed.sum()):>8d} {inv.max_residual:>10.2e} {err:>10.2e}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
