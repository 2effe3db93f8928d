"""Nested Monte Carlo over cutoffs: base states at every cutoff, and stochastic continuations from each
(docs/method.md §3.1).

For a grid of cutoff levels (handoff indices `k` on the sampler's grid) this draws

1. `M` base trajectories, one per state, run once down to the deepest level: the state entering grid
   step `k` is recorded for every level, so one prefix feeds all cutoffs;
2. from every state at every level, `R` independent stochastic continuations (`eta = 1`: DDPM ancestral
   sampling on the grid for a VP model, the flow's posterior chain for a flow, `core.process`) to `x_0`.

All continuations of all levels run in one batch that starts together: a continuation from level `k`
has `n − k` steps left, so the batch holds samples at different timesteps and is advanced with the
process's `step_per_sample` (for VP a vectorised copy of diffusers' `DDIMScheduler.step`) with one timestep
per sample. Levels with fewer steps left finish first and are handed out at once, which is what lets the
curves stream as cutoffs finish.

Seeds are per sample, as in `sampling.seeded_noise`: the prefix of state `i` uses the seed `sample`
would use, so its states equal `sample(..., cutoff=c).x_cut`; the continuations of level `k` use a
stream keyed by `k`, so a level's results do not depend on the other levels asked for.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pgraft.core.events import Progress
from pgraft.core.sampling import sample_seeds, seeded_noise
from pgraft.families.base import DiffusionAdapter, cat_rows

PREFIX_STREAM = 7_100_000
CONTINUATION_STREAM = 7_200_000


@dataclass(frozen=True)
class LevelSamples:
    """One finished level: the `M` states at grid index `k` and their `R` continuations each."""

    k: int
    timestep: float
    states: torch.Tensor  # (M, *shape)
    samples: torch.Tensor  # (M, R, *shape)
    cond: torch.Tensor | None  # (M, ...) conditioning of each state, or None


def _chunk(base: DiffusionAdapter) -> int:
    """Rows per model call: the model's sampling batch on its device (cache-sized on a CPU)."""
    return base.sampling_batch_size


def _evaluate(
    base: DiffusionAdapter, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None, batch_size: int
) -> torch.Tensor:
    """The model's output on `x` at per-sample timesteps `t`, in chunks of `batch_size`."""
    outs = []
    with torch.inference_mode():
        for lo in range(0, len(x), batch_size):
            c = cond[lo : lo + batch_size] if cond is not None else None
            outs.append(base(x[lo : lo + batch_size], t[lo : lo + batch_size], c))
    return torch.cat(outs) if len(outs) > 1 else outs[0]


def _prefix_states(
    base: DiffusionAdapter,
    levels: list[int],
    states: int,
    num_inference_steps: int,
    seed: int,
    cond: Any,
) -> Generator[Progress, None, dict[int, torch.Tensor]]:
    """Run `M` base trajectories down to the deepest level, recording the state entering each level's step.

    Noise is drawn exactly as `sampling.sample_iter` draws it for the same seeds (one initial state and
    one noise per step), and each step is the scheduler's own, so the recorded states are `x_cut`.
    """
    process = base.process
    scheduler = process.make_scheduler(num_inference_steps)
    device = base.device
    seeds = sample_seeds(seed, PREFIX_STREAM, states)
    noise = seeded_noise(seeds, base.sample_shape, 1 + len(scheduler.timesteps)).to(device)
    x = noise[:, 0]
    c = cond.to(device) if cond is not None else None
    recorded: dict[int, torch.Tensor] = {}
    deepest = max(levels)
    for k in range(deepest + 1):
        if k in levels:
            recorded[k] = x.clone()
        if k == deepest:
            break
        t = scheduler.timesteps[k]
        out = _evaluate(base, x, t.to(device).expand(len(x)), c, _chunk(base))
        with torch.inference_mode():
            x = process.step(scheduler, out, t, x, 1.0, noise[:, 1 + k])
        yield Progress("prefix", k + 1, deepest)
    return recorded


def nested_samples_iter(
    base: DiffusionAdapter,
    levels: Sequence[int],
    states: int,
    continuations: int,
    num_inference_steps: int,
    seed: int,
    cond: Any = None,
) -> Generator[Progress | LevelSamples, None, None]:
    """Yield progress, and each level's `LevelSamples` as soon as all its continuations reach `x_0`.

    `levels` are handoff indices on the `num_inference_steps` grid (`sampling.handoff_index`), each in
    `[0, n)`: the state entering step `k` is continued by the remaining `n − k` steps. `cond` holds one
    conditioning row per state (continuations inherit their state's). Levels come out in order of the
    steps they have left, fewest first.
    """
    process = base.process
    scheduler = process.make_scheduler(num_inference_steps)
    grid = scheduler.timesteps
    n = len(grid)
    order = sorted(set(levels), key=lambda k: (n - k, k))
    if not order or min(order) < 0 or max(order) >= n:
        raise ValueError(f"levels: {list(levels)} must be grid indices in [0, {n}) with at least one step left")
    device = base.device
    states_at = yield from _prefix_states(base, order, states, num_inference_steps, seed, cond)

    r = continuations
    x = torch.cat([states_at[k].repeat_interleave(r, 0) for k in order])
    c = cat_rows([cond.to(device).repeat_interleave(r, 0)] * len(order)) if cond is not None else None
    noises = [
        seeded_noise(sample_seeds(seed, CONTINUATION_STREAM + k, states * r), base.sample_shape, n - k).to(device)
        for k in order
    ]
    size = states * r
    total = sum(size * (n - k) for k in order)
    done, first_active = 0, 0
    for m in range(n - min(order)):
        active = [j for j in range(len(order)) if n - order[j] > m]
        lo = active[0] * size
        t = torch.cat([grid[order[j] + m].expand(size) for j in active]).to(device)
        out = _evaluate(base, x[lo:], t, c[lo:] if c is not None else None, _chunk(base))
        z = torch.cat([noises[j][:, m] for j in active])
        with torch.inference_mode():
            x[lo:] = process.step_per_sample(scheduler, out, t, x[lo:], 1.0, z)
        done += len(t)
        yield Progress("continuations", done, total)
        while first_active < len(order) and n - order[first_active] == m + 1:
            k = order[first_active]
            block = x[first_active * size : (first_active + 1) * size].float().cpu().clone()
            yield LevelSamples(
                k,
                float(grid[k]),
                states_at[k].float().cpu(),
                block.reshape(states, r, *base.sample_shape),
                cond.cpu() if cond is not None else None,
            )
            first_active += 1
