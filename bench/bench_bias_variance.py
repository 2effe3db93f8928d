"""Wall time of a 10-cutoff bias–variance curve (M = 256 states, R = 8 continuations), shared against naive.

    python bench/bench_bias_variance.py [--models toy2d digits] [--threads 2] [--repeats 1]

For each model, the same curve is estimated twice, side by side in one process:

- shared: one prefix per state feeds every cutoff, and the continuations of all cutoffs run in one
  batch with per-sample timesteps (`pgraft.bias_variance.run_curves`);
- naive: a loop over the cutoffs, each drawing its own prefixes and running its continuations alone
  (the same function called with one cutoff at a time).

Both use the same seeds, so they give the same estimates (checked); the table shows the times, the model
evaluations (sample-steps) each needs, and the saving. Goals on 2 CPU cores: toy < 5 s, digits < 60 s.
`digits` is skipped, with a message, when its weights are not shipped (`--untrained` times the same
architecture with random weights instead: the cost does not depend on the weights).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pgraft.graft.config import RunConfig
from pgraft.graft.runner import RunSetup, build_setup
from pgraft.studies.bias_variance.curves import CurveSpec, grid_levels, run_curves

CUTOFFS = tuple(round(0.05 + 0.1 * i, 2) for i in range(10))
SETTINGS = {  # model -> (reward, num_inference_steps, goal in seconds)
    "toy2d": ("x", 100, 5.0),
    "toy2d-exact": ("x", 100, 5.0),
    "digits": ("digit-prob", 20, 60.0),
}


def evaluations(setup: RunSetup, spec: CurveSpec, shared: bool) -> int:
    """Sample-steps the model evaluates: prefixes plus continuations."""
    n = setup.config.num_inference_steps
    levels = grid_levels(setup.base.process, n, spec.cutoffs)
    cont = sum(spec.states * spec.continuations * (n - k) for k in levels)
    prefix = spec.states * max(levels) if shared else sum(spec.states * k for k in levels)
    return cont + prefix


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench(model: str, args: argparse.Namespace) -> None:
    reward, steps, goal = SETTINGS[model]
    cfg = RunConfig(model=model, reward=reward, num_inference_steps=args.steps or steps, device="cpu", preview=0)
    try:
        setup = build_setup(cfg)
    except ValueError as exc:
        if not (args.untrained and model == "digits"):
            print(f"\n{model}: skipped ({exc}); --untrained times its architecture with random weights")
            return
        from pgraft.domains.digits.models import build_digits_model, unet_config

        print(f"\n{model}: weights missing; timing the shipped architecture with random weights (same cost)")
        setup = build_setup(cfg, base=build_digits_model(model, unet_config("default")).frozen())
    spec = CurveSpec(CUTOFFS, args.states, args.continuations, bootstrap=200)
    run_curves(setup, CurveSpec((0.5,), 4, 2, bootstrap=10))  # warm-up: imports and first calls
    shared_s, shared = timed(lambda: run_curves(setup, spec), args.repeats)

    def naive_loop() -> list[Any]:
        return [run_curves(setup, CurveSpec((c,), args.states, args.continuations, bootstrap=200)) for c in CUTOFFS]

    naive_s, naive = timed(naive_loop, args.repeats)
    naive_v = np.array([t["V"].iloc[0] for t in naive])
    diff = float(np.max(np.abs(shared["V"].to_numpy() - naive_v) / np.maximum(naive_v, 1e-12)))
    e_shared, e_naive = evaluations(setup, spec, True), evaluations(setup, spec, False)
    print(f"\n{model}: 10 cutoffs {CUTOFFS[0]}..{CUTOFFS[-1]}, M = {args.states}, R = {args.continuations}, ")
    print(
        f"{cfg.num_inference_steps} ancestral steps, torch threads {torch.get_num_threads()}, median of {args.repeats}"
    )
    print(f"{'loop':<10}{'seconds':>10}{'sample-steps':>16}")
    print(f"{'shared':<10}{shared_s:>10.2f}{e_shared:>16,}")
    print(f"{'naive':<10}{naive_s:>10.2f}{e_naive:>16,}")
    saving = 1 - shared_s / naive_s
    print(f"shared saves {100 * saving:.0f} % of the time ({100 * (1 - e_shared / e_naive):.0f} % of the evaluations)")
    print(f"same estimates: max relative difference of V = {diff:.1e}")
    verdict = "meets" if shared_s < goal else "misses"
    print(f"goal: < {goal:g} s on 2 CPU cores -> {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["toy2d", "digits"], choices=sorted(SETTINGS))
    parser.add_argument("--states", type=int, default=256)
    parser.add_argument("--continuations", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: 100 toy, 20 digits)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--untrained", action="store_true", help="digits without shipped weights: random weights")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for model in args.models:
        bench(model, args)


if __name__ == "__main__":
    main()
