"""pgraft's sampler against diffusers' `DDIMPipeline` on the same digits UNet, and one digits round by part.

    python bench/bench_digits_sampler.py [--samples 1024] [--steps 25] [--eta 1] [--repeats 3]
    python bench/bench_digits_sampler.py --sizes     # the model-size candidates of the model cards

Both samplers run the same `UNet2DModel`, the same DDIM scheduler config, the same number of steps and
`eta`, for the same number of samples (diffusers as one batch of `--samples`, pgraft as it samples in a run:
per-sample seeded noise, in chunks of the model's `sample_batch_size`). They alternate within one process
and the median of `--repeats` is reported, with the ratio (goal: pgraft ≥ 1.5× faster). Both outputs are
judged by the digits classifier, to show they draw the same kind of images. Then one default digits round
(`DEFAULT_ROUND`) is timed by part, as the app would run it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from pgraft.config import RunConfig
from pgraft.models import DiffusionModel, load_model
from pgraft.models.digits import build_digits_model, to_unit, unet_config
from pgraft.models.digits_training import classify
from pgraft.rounds import RoundRunner, run_to_end
from pgraft.sampling import sample, sample_seeds

DEFAULT_ROUND = dict(
    model="digits",
    reward="ink",
    samples=512,
    preview=64,
    num_inference_steps=25,
    finetune_steps=100,
    batch_size=64,
    lr=1e-4,
    rule="best-of-n",
    n=4,
    rounds=1,
    device="cpu",
)
PARTS = ("time_finetune", "time_sampling", "time_scoring", "time_acceptance", "time_metrics")


def diffusers_pipeline(model: DiffusionModel, steps: int) -> Any:
    from diffusers import DDIMPipeline

    scheduler = model.process.make_scheduler(steps)  # the same DDIM config pgraft samples with
    pipe = DDIMPipeline(unet=model.network.unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def confident(x_unit: torch.Tensor) -> float:
    return float((classify(x_unit).max(-1).values > 0.9).double().mean())


def compare(model: DiffusionModel, n: int, steps: int, eta: float, repeats: int) -> None:
    pipe = diffusers_pipeline(model, steps)
    seeds = sample_seeds(0, 1, n)
    times: dict[str, list[float]] = {"diffusers DDIMPipeline": [], "pgraft sample": []}
    outputs: dict[str, torch.Tensor] = {}
    for r in range(repeats):
        gen = torch.Generator().manual_seed(r)
        t0 = time.perf_counter()
        images = pipe(batch_size=n, num_inference_steps=steps, eta=eta, generator=gen, output_type="pt").images
        times["diffusers DDIMPipeline"].append(time.perf_counter() - t0)
        outputs["diffusers DDIMPipeline"] = images.float()  # already (x + 1) / 2 clamped
        t0 = time.perf_counter()
        traj = sample(model, seeds, steps, eta=eta, batch_size=model.sample_batch_size)
        times["pgraft sample"].append(time.perf_counter() - t0)
        outputs["pgraft sample"] = to_unit(traj.samples)
    print(
        f"\n{model.name}: {n} samples x {steps} DDIM steps, eta {eta}, torch threads {torch.get_num_threads()}, "
        f"pgraft chunk {model.sample_batch_size}, median of {repeats}"
    )
    print(f"{'sampler':<26}{'seconds':>10}{'samples/s':>12}{'confident':>11}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<26}{med:>10.2f}{n / med:>12.0f}{confident(outputs[name]):>11.1%}")
    ratio = statistics.median(times["diffusers DDIMPipeline"]) / statistics.median(times["pgraft sample"])
    print(f"ratio diffusers / pgraft: {ratio:.2f}x  (goal >= 1.5x: {'meets' if ratio >= 1.5 else 'misses'})")


def default_round(repeats: int) -> None:
    cfg = RunConfig(**DEFAULT_ROUND)  # type: ignore[arg-type]
    runner = RoundRunner(cfg)
    rows: dict[str, list[float]] = {p: [] for p in (*PARTS, "round_total")}
    for _ in range(repeats):
        t0 = time.perf_counter()
        results = run_to_end(runner)
        total = time.perf_counter() - t0
        m0, m1 = results[0].metrics, results[1].metrics
        for p in PARTS:
            rows[p].append(m1.get(p, 0.0))
        rows["round_total"].append(total - sum(m0.get(p, 0.0) for p in PARTS))
    print(
        f"\none default digits round: {cfg.samples} samples + {cfg.preview} preview x {cfg.num_inference_steps} "
        f"steps, {cfg.finetune_steps} fine-tuning steps at batch {cfg.batch_size}, reward {cfg.reward}, "
        f"median of {repeats}"
    )
    print(f"{'part':<18}{'seconds':>10}")
    for p, values in rows.items():
        print(f"{p.removeprefix('time_'):<18}{statistics.median(values):>10.2f}")


def sizes(n: int = 512, steps: int = 25, finetune_steps: int = 100, batch: int = 64) -> None:
    """Speed of the model-size candidates (random weights: speed does not depend on them)."""
    from pgraft.finetune import FinetuneData, finetune_iter

    candidates = {
        "(16,32) x1": {"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8},
        "(32,64) x1": {"block_out_channels": [32, 64], "layers_per_block": 1, "norm_num_groups": 8},
        "(32,64) x2": {"block_out_channels": [32, 64], "layers_per_block": 2, "norm_num_groups": 8},
    }
    print(f"\nsize candidates: {n} samples x {steps} DDIM steps; {finetune_steps} fine-tuning steps at batch {batch}")
    print("seconds of wall time, and of this process's CPU time (less sensitive to a busy shared machine)")
    print(f"{'UNet':<12}{'params':>10}{'sampling':>18}{'fine-tuning':>18}{'round':>18}")
    for label, overrides in candidates.items():
        model = build_digits_model("digits", {**unet_config(), **overrides}).frozen()
        params = sum(p.numel() for p in model.network.parameters())
        t0, c0 = time.perf_counter(), time.process_time()
        sample(model, sample_seeds(0, 1, n), steps, eta=1.0, batch_size=model.sample_batch_size)
        t1, c1 = time.perf_counter(), time.process_time()
        copy = model.trainable_copy()
        for _ in finetune_iter(copy, FinetuneData(torch.randn(128, 1, 8, 8)), finetune_steps, batch, 1e-4, seed=0):
            pass
        t2, c2 = time.perf_counter(), time.process_time()
        cells = [(t1 - t0, c1 - c0), (t2 - t1, c2 - c1), (t2 - t0, c2 - c0)]
        print(f"{label:<12}{params:>10,}" + "".join(f"{f'{w:.1f} / {c:.1f} cpu':>18}" for w, c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--eta", type=float, default=1.0, help="1: the runs' default ddpm sampler; 0: DDIM")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", action="store_true", help="only time the model-size candidates")
    args = parser.parse_args()
    if args.sizes:
        sizes()
        return
    model = load_model("digits")  # DDIMPipeline takes no class labels: the unconditional model
    compare(model, args.samples, args.steps, args.eta, args.repeats)
    default_round(args.repeats)


if __name__ == "__main__":
    main()
