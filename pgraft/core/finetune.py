"""Fine-tuning on accepted samples: GRAFT on clean samples, P-GRAFT above the cutoff (docs/method.md §1–2).

Anchorings
----------
GRAFT and the "final" anchoring of P-GRAFT train with the model's ordinary loss on accepted `x_0`
(`x_t = a_t x_0 + σ_t ε`), P-GRAFT restricting timesteps to `t > t_c`.

The "intermediate" anchoring (P-GRAFT's default) treats the accepted handoff state `x_c` as the clean end
of the forward process truncated to `[t_c, 1]`. For a Gaussian interpolant the kernel from `x_c` is

    x_t = ρ x_c + β ε',   ρ = a_t / a_c,   β² = σ_t² − ρ² σ_c²        (VP: ρ² = ᾱ_t/ᾱ_c, β² = 1 − ᾱ_t/ᾱ_c)

and its conditional score is `−ε'/β`. Denoising score matching with this kernel has the score of the
marginal `p̃_t` as its minimiser. The model's score is `−E[ε | x_t]/σ_t`, so the regression target in
noise units is `ε* = (σ_t / β) ε'`, and the implied clean sample is
`x_0* = (x_t − σ_t ε*)/a_t = x_c/a_c − (a_t σ_c² / (a_c² β)) ε'` (no division by `a_t`, so it stays finite at
pure noise). The target of the model's own parameterisation follows from `(ε*, x_0*)`: ε-prediction
`ε*`, flow velocity `ε* − x_0*`, v-prediction `a_t ε* − σ_t x_0*`.

The target's variance grows like `σ_t²/β²`, unbounded as `t → t_c`. Each timestep's loss is weighted by
`w = β² / σ_t²`: a weight that depends on `t` only changes no minimiser, it keeps
`w ‖ε_θ − ε*‖² = ‖(β/σ_t) ε_θ − ε'‖²` bounded, and at `t_c = 0` (`a_c = 1`, `σ_c = 0`, so `β = σ_t`) it is 1
and the loss is exactly the ordinary one. Both anchorings target `p̄_t(x) E[a(X_0) | X_t = x]` when the base
is exact (tower property on the chain `X_0 – X_c – X_t`), which the tests check on the toy.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import torch

from pgraft.core.distributed import LONE, Processes
from pgraft.core.events import Progress
from pgraft.core.process import NoiseProcess
from pgraft.families.base import DiffusionAdapter


@dataclass(frozen=True)
class FinetuneData:
    """Anchors to train on. `anchor_timestep` is where `x` sits (`None`: clean data, t = 0);
    `above_timestep` restricts training to timesteps strictly above it (`None`: the whole range)."""

    x: torch.Tensor
    cond: Any = None
    """Row-aligned conditioning of `x` (a tensor or `families.base.Cond`), or None."""
    anchor_timestep: float | None = None
    above_timestep: float | None = None


def _col(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return c.to(like.device, like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def training_example(
    process: NoiseProcess,
    anchor: torch.Tensor,
    timesteps: torch.Tensor,
    noise: torch.Tensor,
    anchor_timestep: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(x_t, target, weight)` for anchors at `anchor_timestep` (module docstring gives the derivation)."""
    a_t, s_t = (_col(c, anchor) for c in process.coefficients(timesteps))
    if anchor_timestep is None or anchor_timestep <= 0:
        x_t = a_t * anchor + s_t * noise
        return x_t, process.target(anchor, noise, x_t, timesteps), torch.ones_like(a_t)
    a_c, s_c = (float(c) for c in process.coefficients(torch.tensor([float(anchor_timestep)])))
    rho = a_t / a_c
    beta = (s_t**2 - rho**2 * s_c**2).clamp_min(1e-12).sqrt()
    x_t = rho * anchor + beta * noise
    eps = (s_t / beta) * noise
    x0 = anchor / a_c - (a_t * s_c**2 / (a_c**2 * beta)) * noise
    return x_t, process.output_from(eps, x0, timesteps), (beta / s_t) ** 2


def finetune_iter(
    model: DiffusionAdapter,
    data: FinetuneData,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    grad_clip: float = 1.0,
    processes: Processes = LONE,
) -> Generator[Progress, None, list[float]]:
    """Train `model` (a trainable copy) in place on `data`; yields after each step, returns the losses of the
    last tenth of the steps (their mean is the round's `finetune_loss`; a long run keeps no more).

    Minibatches, timesteps and noise come from one generator seeded with `seed`, so a fine-tuning run is
    reproducible on its own (resuming a run repeats it exactly). On several processes every rank draws the
    whole global batch from that generator and trains on its rows of it (`processes.shard`); its loss is
    scaled by its share of the rows, and the gradients are averaged across ranks before clipping, so each
    step is the single-process step on the same batch (up to the order of float sums).
    """
    if len(data.x) == 0:
        return []
    gen = torch.Generator().manual_seed(int(seed))
    device = model.device
    params = model.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    process = model.process
    losses: deque[float] = deque(maxlen=max(1, steps // 10))
    rows = processes.shard(batch_size)
    share = (rows.stop - rows.start) * processes.world / batch_size
    # A model may bring its own loss: `training_loss(x, t, noise, cond, anchor_timestep) -> scalar`, with the
    # same minibatch, timesteps and noise drawn here (e.g. `domains/molecules/model.py`, masked diffusion).
    own_loss = getattr(model, "training_loss", None)
    model.train_mode(True)
    for step in range(steps):
        idx = torch.randint(0, len(data.x), (batch_size,), generator=gen)
        x = data.x[idx].to(device)
        cond = data.cond[idx].to(device) if data.cond is not None else None
        t = process.sample_training_timesteps(batch_size, data.above_timestep, gen, device)
        noise = torch.randn(x.shape, generator=gen).to(device, x.dtype)
        if processes.distributed:
            x, t, noise = x[rows], t[rows], noise[rows]
            cond = cond[rows] if cond is not None else None
        opt.zero_grad(set_to_none=True)
        value = 0.0
        if len(x):
            with torch.enable_grad():
                if own_loss is not None:  # a family with a loss of its own (masked discrete diffusion)
                    loss = share * own_loss(x, t, noise, cond, data.anchor_timestep)
                else:
                    x_t, target, weight = training_example(process, x, t, noise, data.anchor_timestep)
                    out = model(x_t, t, cond)
                    loss = share * (weight * (out.float() - target.float()) ** 2).mean()
                loss.backward()
            value = float(loss.detach())
        value = processes.mean_grads(params, value)
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        losses.append(value)
        yield Progress("fine-tuning", step + 1, steps, loss=losses[-1])
    model.train_mode(False)
    return list(losses)
