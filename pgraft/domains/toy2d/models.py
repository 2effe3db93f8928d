"""The 2-D toy base models: a small learned MLP denoiser and the exact analytic score of the mixture.

`toy2d` is an MLP trained in seconds on the chosen mixture (shipped in `assets/`, retrained and cached
when missing); `toy2d-exact` predicts with the closed-form posterior mean of the mixture, so it has no
learning error at all. Fine-tuning the exact model trains a zero-initialised residual MLP on top of the
analytic prediction, so the fine-tuned copy starts exactly at the base.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pgraft.cache import cache_dir, ensure_weights
from pgraft.core.events import checkpoint
from pgraft.core.process import FlowProcess, NoiseProcess, VPProcess
from pgraft.domains.base import asset_dir
from pgraft.domains.toy2d.mixture import GaussianMixture, get_dataset
from pgraft.families.small import DiffusionModel, read_safetensors_metadata
from pgraft.nets.mlp import MLPDenoiser

ASSETS = asset_dir("pgraft.domains.toy2d")
TOY_TRAIN_STEPS = 3000


class ExactMixtureDenoiser(nn.Module):
    """The prediction of a perfectly trained network: `E[ε | x_t]` of the mixture, in the process's parameterisation."""

    def __init__(self, mixture: GaussianMixture, process: NoiseProcess, residual: nn.Module | None = None):
        super().__init__()
        self.mixture = mixture
        self.process = process
        self.residual = residual

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        t = timesteps.expand(x.shape[0]) if timesteps.dim() == 0 else timesteps
        t_cpu = t.detach().cpu()
        a, s = self.process.coefficients(t_cpu)
        x64 = x.detach().to("cpu", torch.float64)  # the mixture's closed forms run in float64 on the CPU
        x0 = self.mixture.posterior_mean(x64, a, s)
        eps = (x64 - a[:, None] * x0) / s[:, None]
        out = self.process.output_from(eps, x0, t_cpu).to(x.device, x.dtype)
        if self.residual is not None:
            out = out + self.residual(x, t, cond)
        return out

    def trainable_copy(self) -> ExactMixtureDenoiser:
        residual = copy.deepcopy(self.residual) if self.residual is not None else MLPDenoiser(zero_output=True)
        device = next((b.device for b in self.buffers()), torch.device("cpu"))
        return ExactMixtureDenoiser(self.mixture, self.process, residual.to(device))


def toy_process(kind: str = "vp") -> NoiseProcess:
    # Linear betas: with the cosine schedule a_T ≈ 5e-5, so any ε error at the first sampling step is
    # amplified ~300x (a_{t-1}/a_t) and fine-tuned models drift; linear keeps a_{t-1}/a_t ≈ 1.1 there.
    return FlowProcess() if kind == "flow" else VPProcess(beta_schedule="linear")


def train_mlp(
    mixture: GaussianMixture,
    process: NoiseProcess,
    steps: int = TOY_TRAIN_STEPS,
    batch_size: int = 1024,
    lr: float = 2e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[MLPDenoiser, dict[str, Any]]:
    """Train the MLP denoiser with the process's ordinary loss on fresh mixture samples each step."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = MLPDenoiser().to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    start = time.perf_counter()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        checkpoint()  # a stop asked for in the app ends a long training on first use
        x0 = mixture.sample(batch_size, gen).float().to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = process.sample_training_timesteps(batch_size, None, gen, torch.device(device))
        x_t = process.add_noise(x0, noise, t)
        loss = ((net(x_t, t) - process.target(x0, noise, x_t, t)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    info = {
        "train_steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "train_seconds": round(time.perf_counter() - start, 1),
        "final_loss": float(loss.detach()),
    }
    return net, info


def weights_path(dataset: str, kind: str = "vp", train_steps: int = TOY_TRAIN_STEPS) -> Path:
    """The shipped asset for the default training length; a cache file naming the step count otherwise."""
    stem = f"toy2d-{dataset}" if kind == "vp" else f"toy2d-flow-{dataset}"
    if train_steps != TOY_TRAIN_STEPS:
        stem += f"-{train_steps}steps"
    shipped = ASSETS / f"{stem}.safetensors"
    if shipped.exists():
        return shipped
    return cache_dir() / f"{stem}.safetensors"


def pretrain_toy(dataset: str, out: Path, kind: str = "vp", steps: int = TOY_TRAIN_STEPS, seed: int = 0) -> Path:
    """Train and save the learned toy model (the command `pgraft pretrain toy2d` runs this)."""
    from safetensors.torch import save_file

    mixture = get_dataset(dataset)
    process = toy_process(kind)
    net, info = train_mlp(mixture, process, steps=steps, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"dataset": dataset, "process": kind, **{k: str(v) for k, v in info.items()}}
    tmp = out.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp), metadata=meta)
    tmp.replace(out)
    return out


def load_toy2d(
    dataset: str = "ring8", device: str = "cpu", kind: str = "vp", train_steps: int = TOY_TRAIN_STEPS
) -> DiffusionModel:
    """The learned toy model; `train_steps` below the default gives a deliberately under-trained one
    (trained on first use and cached under a file name that includes the step count)."""
    from safetensors.torch import load_file

    if not isinstance(train_steps, int) or train_steps < 1:
        raise ValueError(f"--train-steps: {train_steps!r} is invalid; allowed: an integer >= 1")
    path = weights_path(dataset, kind, train_steps)
    ensure_weights(path, lambda out: pretrain_toy(dataset, out, kind, train_steps))
    net = MLPDenoiser()
    net.load_state_dict(load_file(str(path)))
    info = read_safetensors_metadata(path)
    name = "toy2d" if kind == "vp" else "toy2d-flow"
    model = DiffusionModel(
        net,
        toy_process(kind),
        (2,),
        name,
        "toy2d",
        info={"dataset": dataset, **info},
        sample_batch_size=16384,
    )
    return model.to(device).frozen()


def load_toy2d_exact(dataset: str = "ring8", device: str = "cpu", kind: str = "vp") -> DiffusionModel:
    mixture = get_dataset(dataset)
    process = toy_process(kind)
    name = "toy2d-exact" if kind == "vp" else "toy2d-flow-exact"
    model = DiffusionModel(
        ExactMixtureDenoiser(mixture, process),
        process,
        (2,),
        name,
        "toy2d",
        info={"dataset": dataset},
        sample_batch_size=16384,
    )
    return model.to(device).frozen()
