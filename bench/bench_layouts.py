"""The layouts domain: one default app round by part, and the denoiser's sampling speed with and without
`scaled_dot_product_attention` and inference mode.

    python bench/bench_layouts.py [--threads 2] [--repeats 3] [--samples 512] [--steps 25]

1. One round with the app's defaults for `layouts` (what a click on Run does: its default reward, 1 round),
   timed by part with `round_parts` (goal on 2 CPU cores: under 20 s).
2. Sampling `--samples` pages × `--steps` DDIM steps with the shipped denoiser, four ways: attention through
   `F.scaled_dot_product_attention` or as an explicit softmax, each under `torch.inference_mode()` or plain
   `torch.no_grad()`; the median of `--repeats`, in pages per second. The sampler's own loop (which always uses
   inference mode) is the first row.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import AbstractContextManager
from typing import Any

import torch
from round_parts import print_parts, round_parts

from pgraft.core.sampling import sample_seeds, seeded_noise
from pgraft.graft.config import RunConfig


def app_round() -> dict[str, Any]:
    from pgraft.ui.controls import default_reward, domain_defaults

    return {**domain_defaults("layouts"), "model": "layouts", "reward": default_reward("layouts"), "rounds": 1}


def sample_loop(model: Any, n: int, steps: int, context: type[AbstractContextManager[Any]]) -> float:
    """Seconds to sample `n` pages: the same loop as `core.sampling.sample_iter` (DDIM, eta 1), one batch."""
    seeds = sample_seeds(0, 0, n)
    process = model.process
    t0 = time.perf_counter()
    noise = seeded_noise(seeds, model.sample_shape, 1 + steps)
    scheduler = process.make_scheduler(steps)
    x = noise[:, 0]
    for k, t in enumerate(scheduler.timesteps):
        with context():
            out = model(x, t.expand(n), None)
            x = process.step(scheduler, out, t, x, 1.0, noise[:, 1 + k])
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--skip-round", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    if not args.skip_round:
        cfg = RunConfig(**app_round())
        print(
            f"\n1. one app round of layouts: {cfg.samples} candidates + {cfg.preview} preview x "
            f"{cfg.num_inference_steps} steps, {cfg.finetune_steps} fine-tuning steps at batch {cfg.batch_size}, "
            f"reward {cfg.reward}, rule {cfg.rule}"
        )
        print_parts(round_parts(cfg, args.repeats))

    from pgraft.registry import load_model

    model = load_model("layouts")
    net = model.network
    print(f"\n2. sampling {args.samples} pages x {args.steps} DDIM steps (median of {args.repeats})")
    print(f"{'attention':<30}{'grad mode':<18}{'seconds':>10}{'pages/s':>10}")
    for fused in (True, False):
        for name, context in (("inference_mode", torch.inference_mode), ("no_grad", torch.no_grad)):
            net.fused = fused
            times = [sample_loop(model, args.samples, args.steps, context) for _ in range(args.repeats)]
            seconds = statistics.median(times)
            label = "scaled_dot_product_attention" if fused else "explicit softmax"
            print(f"{label:<30}{name:<18}{seconds:>10.2f}{args.samples / seconds:>10.0f}")
    net.fused = True


if __name__ == "__main__":
    main()
