"""DDPO (Black et al., 2023): policy-gradient fine-tuning over the denoising steps, the paper's rival.

The stochastic sampler (DDIM with η > 0; η = 1 is ancestral) makes every step a Gaussian
`x_{k+1} ~ N(μ_θ(x_k, t_k), σ_k²)` (`NoiseProcess.transition`), so a sample's trajectory has a likelihood
under the model that drew it. One round:

1. `rollout_iter` samples the candidates from the current model and keeps every state and each step's
   log-probability `log p_old(x_{k+1} | x_k)` (per-element mean, as ddpo-pytorch's `ddim_step_with_logprob`);
   with the same seeds it draws exactly the samples `sample_iter` draws;
2. `advantages` normalises the rewards per prompt (the whole round for an unprompted model) and clips them
   to ±`adv_clip`;
3. `ddpo_iter` runs PPO on a copy: for `inner_epochs`, over shuffled minibatches and, per sample, a random
   `timestep_fraction` of its steps, the clipped surrogate `max(−A r, −A clip(r, 1 − ε, 1 + ε))` with the
   importance ratio `r = exp(log p_θ − log p_old)`; gradients accumulate over the steps (and over
   `accumulation` minibatches) before one optimizer step, clipped at norm 1.

Defaults follow ddpo-pytorch's `config/base.py` (clip range 1e-4, advantage clip 5, timestep fraction 1, one
inner epoch, AdamW with its betas and eps), except weight decay: 0 as in pgraft's own fine-tuning (ddpo-pytorch
uses 1e-4), so that zero advantages leave the model exactly unchanged. On a tie of PPO's two branches the
clipped one is taken, so a clip range of 0 moves nothing (`torch.maximum` would split the gradient).
Steps whose σ is 0 (a deterministic last step onto x̂_0) carry no likelihood and are not trained. It
fine-tunes whatever the family's `trainable_parameters` are (the whole small network, a pipeline's LoRA).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import torch

from pgraft.core.distributed import LONE, Processes
from pgraft.core.events import Progress
from pgraft.core.sampling import inference_timesteps, seeded_batches
from pgraft.families.base import DiffusionAdapter

LOG_2PI = math.log(2 * math.pi)
RATIO_NOISE = 1e-6
"""A log importance ratio below this is the float noise of recomputing the sampling step, and counts as 0."""


@dataclass(frozen=True)
class DDPOOptions:
    clip_range: float = 1e-4
    adv_clip: float = 5.0
    timestep_fraction: float = 1.0
    inner_epochs: int = 1
    batch_size: int = 64
    accumulation: int = 1
    lr: float = 3e-4
    grad_clip: float = 1.0


@dataclass
class Rollout:
    """The candidates' trajectories: `states[:, k]` enters step `k` (`states[:, -1]` is the sample),
    `log_probs[:, k]` is `log p(states[:, k+1] | states[:, k])` under the sampling model."""

    states: torch.Tensor
    log_probs: torch.Tensor
    timesteps: torch.Tensor
    trainable: torch.Tensor
    cond: torch.Tensor | None
    num_inference_steps: int
    eta: float

    @property
    def samples(self) -> torch.Tensor:
        return self.states[:, -1]


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-row mean over the elements of the Gaussian log-density `log N(x; mean, std²)` (float64)."""
    x, mean, std = x.double(), mean.double(), std.double().expand_as(mean)
    logp = -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * LOG_2PI
    return logp.flatten(1).mean(dim=1)


def rollout_iter(
    model: DiffusionAdapter,
    seeds: torch.Tensor,
    num_inference_steps: int,
    eta: float,
    cond: Any = None,
    batch_size: int | None = None,
) -> Generator[Progress, None, Rollout]:
    """Sample one trajectory per seed (the noises of `sample_iter`: the same samples) and score its steps."""
    process = model.process
    if not (eta > 0 and process.stochastic_samplers):
        raise ValueError("--method ddpo needs a stochastic sampler: --sampler ddpm, or --sampler ddim with --eta > 0")
    timesteps = inference_timesteps(process, num_inference_steps)
    k_steps = len(timesteps)
    n = len(seeds)
    states = torch.empty(n, k_steps + 1, *model.sample_shape)
    log_probs = torch.zeros(n, k_steps, dtype=torch.float64)
    std_seen = torch.zeros(k_steps, dtype=torch.float64)
    device = model.device
    n_batches = -(-n // (batch_size or model.sampling_batch_size))
    for b, (lo, hi, noise, c) in enumerate(seeded_batches(model, seeds, 1 + k_steps, cond, batch_size)):
        scheduler = process.make_scheduler(num_inference_steps)
        x = noise[:, 0]
        for k, t in enumerate(scheduler.timesteps):
            states[lo:hi, k] = x.float().cpu()
            with torch.inference_mode():
                out = model(x, t.to(device).expand(hi - lo), c)
                mean, std = process.transition(scheduler, out, t.expand(hi - lo), x, eta)
                x_next = (mean + std * noise[:, 1 + k].to(mean.dtype)).to(x.dtype)
                s = float(std.max())
                std_seen[k] = max(float(std_seen[k]), s)
                if s > 0:
                    log_probs[lo:hi, k] = gaussian_log_prob(x_next, mean, std).cpu()
            x = x_next
            yield Progress("sampling", b * k_steps + k + 1, n_batches * k_steps)
        states[lo:hi, k_steps] = x.float().cpu()
    return Rollout(states, log_probs, timesteps.cpu(), std_seen > 0, cond, num_inference_steps, eta)


def advantages(rewards: torch.Tensor, groups: torch.Tensor, clip: float) -> torch.Tensor:
    """Rewards standardised within each prompt's samples, clipped to ±`clip` (ddpo-pytorch's per-prompt stat
    tracking, over the round)."""
    out = torch.zeros(len(rewards), dtype=torch.float64)
    r = rewards.double()
    for g in torch.unique(groups):
        rows = groups == g
        std = r[rows].std(unbiased=False) if int(rows.sum()) > 1 else torch.tensor(0.0, dtype=torch.float64)
        out[rows] = (r[rows] - r[rows].mean()) / (std + 1e-8)
    return out.clamp(-clip, clip)


@dataclass
class DDPOStats:
    losses: list[float]
    clip_fraction: float
    approx_kl: float
    forward: int
    """Network evaluations (rows × steps) of the training forward passes; as many backward."""


def ddpo_iter(
    model: DiffusionAdapter,
    rollout: Rollout,
    adv: torch.Tensor,
    options: DDPOOptions,
    seed: int,
    processes: Processes = LONE,
) -> Generator[Progress, None, DDPOStats]:
    """PPO on `model` (a trainable copy) over the rollout's trainable steps; yields after each optimizer step."""
    if processes.distributed:
        raise ValueError("--method ddpo runs on one process; launch it without accelerate (issue noted)")
    process, device = model.process, model.device
    params = model.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=options.lr, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8)
    gen = torch.Generator().manual_seed(seed)
    steps = torch.nonzero(rollout.trainable).flatten()
    n, n_steps = len(rollout.states), len(steps)
    per_sample = max(1, round(n_steps * options.timestep_fraction)) if n_steps else 0
    scheduler = process.make_scheduler(rollout.num_inference_steps)
    batches = max(1, -(-n // options.batch_size))
    total = options.inner_epochs * -(-batches // options.accumulation)
    losses: list[float] = []
    clipped, kl, counted, forward, done = 0.0, 0.0, 0, 0, 0
    model.train_mode(True)
    if n == 0 or per_sample == 0:
        model.train_mode(False)
        return DDPOStats([], 0.0, 0.0, 0)
    for _epoch in range(options.inner_epochs):
        order = torch.randperm(n, generator=gen)
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for b in range(batches):
            rows = order[b * options.batch_size : (b + 1) * options.batch_size]
            # each sample trains on its own random subset of steps, as ddpo-pytorch shuffles time per sample
            pick = torch.argsort(torch.rand(len(rows), n_steps, generator=gen), dim=1)[:, :per_sample]
            a = adv[rows].to(device)
            for j in range(per_sample):
                k = steps[pick[:, j]]
                x = rollout.states[rows, k].to(device)
                x_next = rollout.states[rows, k + 1].to(device)
                t = rollout.timesteps[k]
                c = rollout.cond[rows].to(device) if rollout.cond is not None else None
                with torch.enable_grad():
                    out = model(x, t.to(device), c)
                    mean, std = process.transition(scheduler, out, t, x, rollout.eta)
                    logp = gaussian_log_prob(x_next, mean, std)
                    log_ratio = logp - rollout.log_probs[rows, k].to(device)
                    # on policy is on policy: the recomputation's float noise (batches of other shapes) is not
                    # a policy change; its value is made exactly 0, its gradient kept
                    log_ratio = torch.where(log_ratio.abs() < RATIO_NOISE, log_ratio - log_ratio.detach(), log_ratio)
                    ratio = torch.exp(log_ratio)
                    low, high = 1.0 - options.clip_range, 1.0 + options.clip_range
                    # PPO's pessimistic surrogate; on a tie the clipped branch, so a clip range of 0 moves nothing
                    inside = (ratio > low) & (ratio < high)  # strictly: at the boundary the clipped branch is flat
                    unclipped = -a * ratio
                    clipped_loss = -a * torch.where(inside, ratio, ratio.detach().clamp(low, high))
                    surrogate = torch.where(unclipped > clipped_loss, unclipped, clipped_loss).mean()
                    (surrogate / (per_sample * options.accumulation)).backward()
                forward += len(rows)
                step_loss += float(surrogate.detach()) / per_sample
                with torch.no_grad():
                    clipped += float(((ratio - 1).abs() > options.clip_range).double().sum())
                    kl += float((0.5 * (logp - rollout.log_probs[rows, k].to(device)) ** 2).sum())
                    counted += len(rows)
            last = b == batches - 1
            if (b + 1) % options.accumulation == 0 or last:
                if options.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, options.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                losses.append(step_loss / min(options.accumulation, b % options.accumulation + 1))
                step_loss = 0.0
                done += 1
                yield Progress("fine-tuning", done, total, loss=losses[-1])
    model.train_mode(False)
    return DDPOStats(losses, clipped / max(1, counted), kl / max(1, counted), forward)
