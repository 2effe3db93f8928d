"""Trajectory sampling with per-sample seeds, and the stitched sampler of P-GRAFT (docs/method.md §2).

`sample_iter` runs the reverse process of a base model, optionally with a fine-tuned model for the steps
above a cutoff, and records the state handed over at the cutoff and the final sample. It is a generator
that yields a progress event after every step and returns the `Trajectory`, so callers can report
progress and stop between steps; `sample` runs it to the end.

Noise is drawn per sample from its own seed (all of a sample's noises at once), so a sample's trajectory
does not depend on the batch it is drawn in: "before" and "after" drawn from the same seeds share their
noise exactly. DDIM with `eta = 1` on a grid is DDPM ancestral sampling on that grid: its step variance
is the posterior variance β̃ of the DDPM chain between the two grid points (tested against diffusers'
`DDPMScheduler`).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pgraft.core.events import Progress, drain
from pgraft.core.process import NoiseProcess
from pgraft.families.base import DiffusionAdapter


@dataclass(frozen=True)
class Trajectory:
    """What one pass of the (stitched) sampler produced.

    `x_cut` is the state at the handoff grid point (`cutoff_timestep`), `None` when no cutoff was asked;
    at cutoff 0 the handoff is the final sample itself.
    """

    samples: torch.Tensor
    seeds: torch.Tensor
    x_cut: torch.Tensor | None
    cutoff_timestep: float | None
    cutoff_fraction: float | None
    num_inference_steps: int
    handoff_index: int


def sample_seeds(seed: int, stream: int, n: int) -> torch.Tensor:
    """`n` distinct per-sample seeds for a stream (a round, or the fixed preview set), reproducible from `seed`."""
    state = np.random.SeedSequence([int(seed), int(stream)]).generate_state(n, dtype=np.uint64)
    return torch.from_numpy((state >> np.uint64(1)).astype(np.int64))


def seeded_noise(seeds: torch.Tensor, shape: tuple[int, ...], count: int) -> torch.Tensor:
    """`(N, count, *shape)` standard normal noise, row `i` drawn from a generator seeded with `seeds[i]`."""
    out = torch.empty(len(seeds), count, *shape)
    gen = torch.Generator()
    for i, s in enumerate(seeds.tolist()):
        gen.manual_seed(int(s))
        out[i] = torch.randn(count, *shape, generator=gen)
    return out


def seeded_batches(
    model: DiffusionAdapter, seeds: torch.Tensor, draws: int, cond: Any = None, batch_size: int | None = None
) -> Iterator[tuple[int, int, torch.Tensor, Any]]:
    """The batches of a sampling loop: `(lo, hi, noise, c)` with `noise (hi − lo, draws, *shape)` drawn per
    seed (`seeded_noise`: the initial state, then one per stochastic step) and the rows' conditioning, both on
    the model's device. No batch for no seeds (a network may refuse an empty batch)."""
    size = batch_size or model.sampling_batch_size
    for lo in range(0, len(seeds), size):
        hi = min(len(seeds), lo + size)
        noise = seeded_noise(seeds[lo:hi], model.sample_shape, draws).to(model.device)
        yield lo, hi, noise, cond[lo:hi].to(model.device) if cond is not None else None


def handoff_index(timesteps: torch.Tensor, process: NoiseProcess, cutoff: float) -> int:
    """How many grid steps run above the cutoff: the fine-tuned model is used at every `t > cutoff`."""
    fractions = torch.as_tensor(timesteps, dtype=torch.float64) / process.num_train_timesteps
    return int((fractions > cutoff).sum())


def inference_timesteps(process: NoiseProcess, num_inference_steps: int) -> torch.Tensor:
    return process.make_scheduler(num_inference_steps).timesteps


def snap_cutoff(process: NoiseProcess, num_inference_steps: int, cutoff: float) -> tuple[int, float | None]:
    """The handoff index on the sampler's grid, and the grid timestep the handoff state sits at (`None` at x_0)."""
    timesteps = inference_timesteps(process, num_inference_steps)
    k = handoff_index(timesteps, process, cutoff)
    return k, (float(timesteps[k]) if k < len(timesteps) else None)


def sample_iter(
    base: DiffusionAdapter,
    seeds: torch.Tensor,
    num_inference_steps: int,
    eta: float = 1.0,
    finetuned: DiffusionAdapter | None = None,
    cutoff: float | None = None,
    cond: Any = None,
    batch_size: int | None = None,
) -> Generator[Progress, None, Trajectory]:
    """Draw one sample per seed; with `finetuned`, it runs every step at `t > cutoff` (cutoff 0: all steps).

    1. set the grid (diffusers scheduler) and find the handoff index `k_c` of the cutoff on it;
    2. per batch, draw each sample's noises from its seed: the initial state and, for a stochastic
       sampler, one noise per step;
    3. step `k` evaluates the fine-tuned model when `k < k_c`, the base model otherwise;
    4. the state entering step `k_c` is recorded as `x_cut` (the final sample when `k_c` is the last).
    """
    process = base.process
    timesteps = inference_timesteps(process, num_inference_steps)
    num_steps = len(timesteps)
    use_cut = cutoff is not None
    k_c = handoff_index(timesteps, process, cutoff) if cutoff is not None else 0
    if finetuned is not None and not use_cut:
        k_c, use_cut = num_steps, True
    stochastic = eta > 0 and process.stochastic_samplers
    device = base.device
    n = len(seeds)
    samples = torch.empty(n, *base.sample_shape)
    x_cut = torch.empty(n, *base.sample_shape) if use_cut else None
    n_batches = -(-n // (batch_size or base.sampling_batch_size))
    draws = 1 + (num_steps if stochastic else 0)
    for b, (lo, hi, noise, c) in enumerate(seeded_batches(base, seeds, draws, cond, batch_size)):
        scheduler = process.make_scheduler(num_inference_steps)
        x = noise[:, 0]
        for k, t in enumerate(scheduler.timesteps):
            if x_cut is not None and k == k_c:
                x_cut[lo:hi] = x.cpu()
            model = finetuned if (finetuned is not None and k < k_c) else base
            # Inference mode only around the step: it is global state, and must not leak to the caller at `yield`.
            with torch.inference_mode():
                out = model(x, t.to(device).expand(hi - lo), c)
                x = process.step(scheduler, out, t, x, eta, noise[:, 1 + k] if stochastic else None)
            yield Progress("sampling", b * num_steps + k + 1, n_batches * num_steps)
        samples[lo:hi] = x.float().cpu()
        if x_cut is not None and k_c >= num_steps:
            x_cut[lo:hi] = x.float().cpu()
    cut_t = float(timesteps[k_c]) if use_cut and k_c < num_steps else (0.0 if use_cut else None)
    return Trajectory(
        samples=samples,
        seeds=seeds,
        x_cut=x_cut,
        cutoff_timestep=cut_t,
        cutoff_fraction=None if cut_t is None else cut_t / process.num_train_timesteps,
        num_inference_steps=num_inference_steps,
        handoff_index=k_c,
    )


def sample(base: DiffusionAdapter, seeds: torch.Tensor, num_inference_steps: int, **kwargs: object) -> Trajectory:
    """`sample_iter` run to the end."""
    trajectory = drain(sample_iter(base, seeds, num_inference_steps, **kwargs))  # type: ignore[arg-type]
    assert trajectory is not None
    return trajectory
