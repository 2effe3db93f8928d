"""Backward-Euler inversion of real data: fixed-point iteration against Anderson acceleration (and `auto`, the
default: fixed-point where it contracts, Anderson for the rows it has not converged after a few iterations).

    python bench/bench_inversion_solvers.py                        # digits-flow, 1,000 real digits, K = 8 and 16
    python bench/bench_inversion_solvers.py --model toy2d-flow --samples 2000

Per solver and K: seconds, velocity evaluations per sample, the samples that did not invert (dropped), the
worst residual kept and the round-trip error max |G(z) - x|. Solvers run one after another in one process, on
the same data, so their ratios are comparable on a noisy machine (goal on 2 cores: <= 2 % dropped at K = 8 and
16, and 1,000 digits inverted at K = 16 in under 60 s).
"""

from __future__ import annotations

import argparse
import time

import torch

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
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    config = IncConfig(model=args.model)
    model = load_flow_model(config)
    tol, max_iter = config.inversion_settings(model.domain)
    data = make_quality(model, config.seed).real_data(args.samples)
    print(f"# {args.model}: {len(data)} real samples, tol {tol:g}, max-iter {max_iter}, {args.threads} threads")
    print(
        f"{'solver':>12} {'K':>4} {'seconds':>9} {'evals/sample':>13} {'dropped':>8} {'residual':>10} {'|G(z)-x|':>10}"
    )
    for k in args.steps:
        for solver in args.solvers:
            t0 = time.perf_counter()
            inv = invert(model, data, k, tol=tol, max_iter=max_iter, on_failure="drop", solver=solver)
            seconds = time.perf_counter() - t0
            kept = ~inv.failed
            err = float((euler_sample(model, inv.kept, k) - data[kept]).abs().max()) if kept.any() else float("nan")
            print(f"{solver:>12} {k:>4} {seconds:>9.2f} {inv.evaluations_per_sample:>13.1f} "
                  f"{int(inv.failed.sum()):>8d} {inv.max_residual:>10.2e} {err:>10.2e}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
