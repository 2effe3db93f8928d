"""Inverse noise correction: the quality-vs-FLOPs table, and the time to invert 1,000 images and to train the
correction, on the digits flow (the toy flow when the digits flow is not available).

    python bench/bench_inc.py [--model digits-flow|toy2d-flow] [--steps 8 16 32] [--threads 2]

Timings are single runs on `--threads` torch threads (goal: what a 2-core CPU does); the table is the run
of `pgraft inc` with the same settings (real data held out from the inverted data).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from pgraft.core.events import Notice
from pgraft.families.small import DiffusionModel
from pgraft.inc.config import IncConfig
from pgraft.inc.correction import train_correction_iter
from pgraft.inc.inversion import invert
from pgraft.inc.quality import make_quality
from pgraft.inc.run import load_flow_model, run_inc_iter


def pick_model(requested: str, weights: Path | None) -> tuple[IncConfig, DiffusionModel] | None:
    """The config and model to bench, or None with a printed reason when the model cannot be loaded."""
    config = IncConfig(model=requested)
    try:
        if weights is not None:
            from pgraft.domains.digits.models import load_digits_model

            return config, load_digits_model(requested, path=weights)
        return config, load_flow_model(config)
    except (ValueError, FileNotFoundError) as exc:
        print(f"skip {requested}: {exc}")
        return None


def time_parts(config: IncConfig, model: DiffusionModel, k: int, n: int) -> None:
    data = make_quality(model, config.seed).real_data(n)
    t0 = time.perf_counter()
    tol, max_iter, grid = config.resolved(model.domain).inversion_options()
    inv = invert(model, data, k, tol=tol, max_iter=max_iter, on_failure="drop", grid=grid)
    t_inv = time.perf_counter() - t0
    gen = train_correction_iter(inv.kept, config.correction_config())
    t0 = time.perf_counter()
    for _ in gen:
        pass
    t_train = time.perf_counter() - t0
    print(f"{'part':<52}{'seconds':>10}")
    print(f"{f'invert {len(data)} real samples through K={k} Euler steps ({grid})':<52}{t_inv:>10.2f}")
    print(f"{'  velocity evaluations per sample':<52}{inv.evaluations_per_sample:>10.1f}")
    print(f"{'  samples that did not invert (dropped)':<52}{int(inv.failed.sum()):>10d}")
    c = config.correction_config()
    label = f"train the correction ({c.train_steps} steps, batch {c.batch_size})"
    print(f"{label:<52}{t_train:>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits-flow", choices=["digits-flow", "toy2d-flow", "toy2d-flow-exact"])
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--correction-steps", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--invert", type=int, default=1000, help="real samples to invert (the timing is for these)")
    parser.add_argument("--weights", type=Path, default=None, help="digits-flow weights file (default: the asset)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    picked = pick_model(args.model, args.weights)
    if picked is None:
        print("falling back to the toy flow (toy2d-flow, under-trained: 300 steps)")
        config = IncConfig(model="toy2d-flow", train_steps=300)
        picked = config, load_flow_model(config)
    config, model = picked
    config = dataclasses.replace(
        config,
        steps=tuple(args.steps),
        correction_steps=tuple(args.correction_steps),
        samples=args.samples,
        invert=args.invert,
    )
    print(f"{config.model}, torch threads {torch.get_num_threads()}")
    time_parts(config, model, args.steps[len(args.steps) // 2], args.invert)
    t0 = time.perf_counter()
    gen = run_inc_iter(config, model=model)
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        if isinstance(ev, Notice):
            print(f"note: {ev.message}")
    table = result.table()
    cols = ["method", "grid", "num_inference_steps", "correction_steps", "flops_per_image", result.primary]
    cols += [c for c in ("mmd",) if c in table.columns] + ["gain_at_equal_flops"]
    seconds = time.perf_counter() - t0
    print(f"\nquality vs FLOPs per image ({config.samples} samples per row; whole run {seconds:.0f} s)")
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
