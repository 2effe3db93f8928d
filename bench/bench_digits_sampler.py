"""pgraft's sampler against diffusers' `DDIMPipeline` on the same digits UNet, and one digits round by part.

    python bench/bench_digits_sampler.py [--samples 1024] [--steps 25] [--eta 1] [--repeats 3]
    python bench/bench_digits_sampler.py --sizes [--threads 1]  # the model-size candidates of the model cards

Both samplers run the same `UNet2DModel`, the same DDIM scheduler config, the same number of steps and
`eta`, for the same number of samples (diffusers as one batch of `--samples`, pgraft as it samples in a run:
per-sample seeded noise, in chunks of the model's `sampling_batch_size`; a third row runs diffusers in those
chunks too, to show what the chunking alone is worth). They alternate within one process and the median of
`--repeats` is reported, with the ratio (goal: pgraft ≥ 1.5× faster). Both outputs are
judged by the digits classifier, to show they draw the same kind of images. Then one digits round with the
app's defaults (`app_round`) is timed by part, as the app would run it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from round_parts import print_parts, round_parts

from pgraft.core.sampling import sample, sample_seeds
from pgraft.domains.digits.metrics import classify
from pgraft.domains.digits.models import build_digits_model, to_unit, unet_config, use_sampling_layout
from pgraft.families.small import DiffusionModel, load_model
from pgraft.graft.config import RunConfig
from pgraft.inc.flops import forward_flops


def app_round(model: str = "digits") -> dict[str, Any]:
    """One round with the app's defaults for the model's domain (what a click on Run does)."""
    from pgraft.ui.controls import default_reward, domain_defaults

    return {**domain_defaults(model), "model": model, "reward": default_reward(model), "rounds": 1, "device": "cpu"}


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
    chunk = model.sampling_batch_size

    def diffusers_in(batch: int, r: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(r)
        sizes = [min(batch, n - lo) for lo in range(0, n, batch)]
        calls = [pipe(batch_size=b, num_inference_steps=steps, eta=eta, generator=gen, output_type="pt") for b in sizes]
        return torch.cat([out.images for out in calls]).float()  # already (x + 1) / 2, clamped

    samplers = {
        f"diffusers DDIMPipeline, 1 x {n}": lambda r: diffusers_in(n, r),
        f"diffusers DDIMPipeline, {-(-n // chunk)} x {chunk}": lambda r: diffusers_in(chunk, r),
        f"pgraft sample, {-(-n // chunk)} x {chunk}": lambda r: to_unit(sample(model, seeds, steps, eta=eta).samples),
    }
    times: dict[str, list[float]] = {name: [] for name in samplers}
    outputs: dict[str, torch.Tensor] = {}
    for r in range(repeats):  # alternate, so a busy moment of the machine hits every sampler alike
        for name, run in samplers.items():
            t0 = time.perf_counter()
            outputs[name] = run(r)
            times[name].append(time.perf_counter() - t0)
    print(
        f"\n{model.name}: {n} samples x {steps} DDIM steps, eta {eta}, torch threads {torch.get_num_threads()}, "
        f"median of {repeats}"
    )
    print(f"{'sampler':<36}{'seconds':>10}{'samples/s':>12}{'confident':>11}")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, med in medians.items():
        print(f"{name:<36}{med:>10.2f}{n / med:>12.0f}{confident(outputs[name]):>11.1%}")
    one_batch, chunked, ours = medians.values()
    ratio = one_batch / ours
    verdict = "meets" if ratio >= 1.5 else "misses"
    print(f"ratio diffusers (one batch) / pgraft: {ratio:.2f}x  (goal >= 1.5x: {verdict})")
    print(f"of which cache-sized chunks: {one_batch / chunked:.2f}x; the rest of pgraft's loop: {chunked / ours:.2f}x")


def default_round(repeats: int) -> None:
    cfg = RunConfig(**app_round())
    parts = round_parts(cfg, repeats)
    print(
        f"\none default digits round: {cfg.samples} samples + {cfg.preview} preview x {cfg.num_inference_steps} "
        f"steps, {cfg.finetune_steps} fine-tuning steps at batch {cfg.batch_size}, reward {cfg.reward}, "
        f"median of {repeats}"
    )
    print_parts(parts)


SIZE_CANDIDATES = {
    "(16,32) x1": {"block_out_channels": [16, 32], "layers_per_block": 1},
    "(32,64) x1": {"block_out_channels": [32, 64], "layers_per_block": 1},
    "(32,64) x2": {"block_out_channels": [32, 64], "layers_per_block": 2},
    "(64,128) x1": {"block_out_channels": [64, 128], "layers_per_block": 1},
    "(64,128) x2": {"block_out_channels": [64, 128], "layers_per_block": 2},
}


def sizes(repeats: int) -> None:
    """The app's default digits round (sampling + fine-tuning) for each UNet size candidate, on random weights
    (speed does not depend on them): the model cards choose the largest size that keeps a round interactive."""
    from pgraft.core.finetune import FinetuneData, finetune_iter

    cfg = app_round()
    n, steps = cfg["samples"] + cfg["preview"], cfg["num_inference_steps"]
    ft_steps, batch, lr = cfg["finetune_steps"], cfg["batch_size"], cfg["lr"]
    print(
        f"\nsize candidates, the app's default digits round: {n} samples x {steps} steps, {ft_steps} fine-tuning "
        f"steps at batch {batch}; torch threads {torch.get_num_threads()}; wall seconds, median of {repeats}"
    )
    print(f"{'UNet':<13}{'params':>10}{'MFLOP/sample':>14}{'sampling':>10}{'fine-tuning':>13}{'round':>8}")
    for label, overrides in SIZE_CANDIDATES.items():
        model = build_digits_model("digits", {**unet_config(), **overrides}).frozen()
        use_sampling_layout(model)  # as `load_digits_model` does
        params = sum(p.numel() for p in model.network.parameters())
        mflop = forward_flops(model.network, torch.zeros(4, 1, 8, 8), torch.full((4,), 500)) / 1e6
        cells: list[list[float]] = [[], []]
        for _ in range(repeats):
            t0 = time.perf_counter()
            sample(model, sample_seeds(0, 1, n), steps, eta=1.0)
            t1 = time.perf_counter()
            copy = model.trainable_copy()
            for _ in finetune_iter(copy, FinetuneData(torch.randn(64, 1, 8, 8)), ft_steps, batch, lr, seed=0):
                pass
            cells[0].append(t1 - t0)
            cells[1].append(time.perf_counter() - t1)
        sampling, finetune = (statistics.median(c) for c in cells)
        print(f"{label:<13}{params:>10,}{mflop:>14.1f}{sampling:>10.2f}{finetune:>13.2f}{sampling + finetune:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--eta", type=float, default=1.0, help="1: the runs' default ddpm sampler; 0: DDIM")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", action="store_true", help="only time the model-size candidates")
    parser.add_argument("--chunk", type=int, default=None, help="pgraft's sampling batch (default: the model's)")
    parser.add_argument("--no-round", action="store_true", help="skip the default round")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (the app uses cores - 1)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.sizes:
        sizes(args.repeats)
        return
    model = load_model("digits")  # DDIMPipeline takes no class labels: the unconditional model
    model.cpu_sample_batch_size = model.sample_batch_size = args.chunk or model.sampling_batch_size
    compare(model, args.samples, args.steps, args.eta, args.repeats)
    if not args.no_round:
        default_round(args.repeats)


if __name__ == "__main__":
    main()
