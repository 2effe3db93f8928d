"""The correction flow of inverse noise correction, and the composed sampler `x = G(c(ε))` (docs/method.md §4.3–4).

`c` is a small flow in noise space, trained by flow matching from `N(0, I)` (at `s = 1`) to the law of the
inverted noises `z` (at `s = 0`), and sampled with its own number of Euler steps on the uniform grid
`s = 1, 1 − 1/m, …, 0`. Two interpolants are offered:

- `"trig"` (default): `x_s = cos(πs/2) z + sin(πs/2) ε`, so `dx_s/ds = (π/2)(cos(πs/2) ε − sin(πs/2) z)`. When
  `z ~ N(0, I)` every `x_s` is `N(0, I)` and the optimal velocity `E[dx_s/ds | x_s] = (π/2)(cos·sin − sin·cos) x_s`
  is exactly 0 *(derived)*: a perfect base model needs no correction, and the network's zero-initialised
  output starts there, so `c` only moves noise as far as the inverted noises demand, and does so with few steps.
- `"linear"`: the rectified-flow path `x_s = (1 − s) z + s ε`. Even for `z ~ N(0, I)` its velocity is
  `(2s − 1) x / ((1 − s)² + s²) ≠ 0` *(derived)*; one Euler step maps every ε to 0, two steps halve it. Kept
  for comparison.

The network works on flattened noise (`MLPDenoiser` of the toy with `dim = prod(shape)`), so a digits
image's 64 noise values are one vector.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pgraft.core.events import Progress, Stopped, drain
from pgraft.core.sampling import seeded_noise
from pgraft.families.base import DiffusionAdapter
from pgraft.inc.inversion import euler_sample
from pgraft.nets.mlp import MLPDenoiser

PATHS = ("trig", "linear")


@dataclass(frozen=True)
class CorrectionConfig:
    """How the correction flow is built and trained; each field is a flag of `pgraft inc`."""

    hidden: int = 64
    train_steps: int = 1000
    batch_size: int = 512
    lr: float = 1e-2
    path: str = "trig"
    seed: int = 0

    def __post_init__(self) -> None:
        checks: list[tuple[str, Any, bool, str]] = [
            ("--correction-hidden", self.hidden, 4 <= self.hidden <= 4096, "an integer in [4, 4096]"),
            ("--correction-train-steps", self.train_steps, 1 <= self.train_steps <= 10**6, "an integer in [1, 1e6]"),
            ("--correction-batch-size", self.batch_size, 1 <= self.batch_size <= 10**6, "an integer in [1, 1e6]"),
            ("--correction-lr", self.lr, 0 < self.lr <= 1, "a number in (0, 1]"),
            ("--correction-path", self.path, self.path in PATHS, ", ".join(PATHS)),
        ]
        for flag, value, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{flag}: {value!r} is invalid; allowed: {allowed}")


def interpolant(path: str, z: torch.Tensor, eps: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(x_s, dx_s/ds)` of the path from `z` (s = 0) to `ε` (s = 1); `s` has shape `(N, 1)`."""
    if path == "linear":
        return (1 - s) * z + s * eps, eps - z
    c, si = torch.cos(0.5 * math.pi * s), torch.sin(0.5 * math.pi * s)
    return c * z + si * eps, 0.5 * math.pi * (c * eps - si * z)


class CorrectionFlow(nn.Module):
    """`v(x, s)` on flattened noise of `shape`, and its Euler sampler `c(ε)` (noise → corrected noise)."""

    def __init__(self, shape: tuple[int, ...], hidden: int = 64, path: str = "trig") -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.path = path
        self.dim = math.prod(self.shape)
        self.hidden = hidden
        self.net = MLPDenoiser(dim=self.dim, hidden=hidden, zero_output=True)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Velocity at flattened states `x (N, dim)` and path times `s (N,)` in [0, 1]."""
        return self.net(x, 1000.0 * s)

    def sample(self, eps: torch.Tensor, num_steps: int) -> torch.Tensor:
        """`c(ε)`: `num_steps` Euler steps from `s = 1` to `s = 0`; 0 steps is the identity."""
        device = next(self.parameters()).device
        x = eps.reshape(len(eps), self.dim).to(device, torch.float32)
        grid = torch.linspace(1.0, 0.0, num_steps + 1)
        with torch.inference_mode():
            for s, s_next in zip(grid[:-1], grid[1:]):
                x = x + (s_next - s) * self(x, s.expand(len(x)))
        return x.reshape(len(eps), *self.shape)

    def config(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "hidden": self.hidden, "path": self.path}

    def save(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        """Weights as safetensors; the architecture and `extra` (training record, base model) in the metadata."""
        from safetensors.torch import save_file

        metadata = {"correction": json.dumps(self.config())}
        metadata.update({k: json.dumps(v) for k, v in (extra or {}).items()})
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: Path) -> CorrectionFlow:
        from safetensors.torch import load_file

        from pgraft.families.small import read_safetensors_metadata

        config = json.loads(read_safetensors_metadata(path)["correction"])
        flow = cls(tuple(config["shape"]), int(config["hidden"]), str(config["path"]))
        flow.load_state_dict(load_file(str(path)))
        return flow.eval()


def warmup_cosine(step: int, total: int, warmup_fraction: float = 0.05) -> float:
    """Learning-rate factor: linear warm-up over the first 5 % of steps, then a cosine decay to 0."""
    warmup = max(1, round(warmup_fraction * total))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_correction_iter(
    z: torch.Tensor,
    config: CorrectionConfig,
    should_stop: Callable[[], bool] = lambda: False,
    device: str | torch.device = "cpu",
) -> Generator[Progress, None, tuple[CorrectionFlow, dict[str, Any]]]:
    """Flow matching from `N(0, I)` to the empirical law of `z` (docs/method.md §4.3).

    Each step draws a minibatch of `z`, fresh noise `ε` and path times `s ~ U(0, 1)`, and regresses the
    network on `dx_s/ds`. Yields progress every 50 steps; returns the flow (eval mode) and a training record.
    """
    if len(z) < 2:
        raise ValueError(f"correction: {len(z)} inverted noises are too few to train on (need >= 2)")
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    flow = CorrectionFlow(tuple(z.shape[1:]), config.hidden, config.path).to(device)
    data = z.reshape(len(z), -1).float().to(device)
    opt = torch.optim.AdamW(flow.parameters(), lr=config.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(warmup_cosine, total=config.train_steps))
    start, loss, done = time.perf_counter(), torch.tensor(0.0), 0
    for step in range(config.train_steps):
        if should_stop():
            break
        idx = torch.randint(0, len(data), (config.batch_size,), generator=gen).to(device)
        eps = torch.randn(config.batch_size, flow.dim, generator=gen).to(device)
        s = torch.rand(config.batch_size, 1, generator=gen).to(device)
        x_s, target = interpolant(config.path, data[idx], eps, s)
        loss = ((flow(x_s, s[:, 0]) - target) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        done = step + 1
        if done % 50 == 0 or done == config.train_steps:
            yield Progress("training the correction", done, config.train_steps, loss=float(loss.detach()))
    record = {**asdict(config), "steps_done": done, "final_loss": float(loss.detach()), "n_noises": len(z)}
    record["train_seconds"] = round(time.perf_counter() - start, 2)
    return flow.eval().requires_grad_(False), record


VALIDATION_FRACTION = 0.2
VALIDATION_DRAWS = 16


def validation_loss(flow: CorrectionFlow, z: torch.Tensor, seed: int, draws: int = VALIDATION_DRAWS) -> float:
    """The flow-matching loss of `flow` on noises `z` it did not train on, over `draws` seeded `(ε, s)` pairs
    per noise (the same pairs for every candidate of a search, so their losses compare without that noise)."""
    gen = torch.Generator().manual_seed(seed)
    data = z.reshape(len(z), -1).float().repeat(draws, 1)
    eps = torch.randn(data.shape, generator=gen)
    s = torch.rand(len(data), 1, generator=gen)
    device = next(flow.parameters()).device
    x_s, target = interpolant(flow.path, data, eps, s)
    with torch.no_grad():
        return float(((flow(x_s.to(device), s[:, 0].to(device)) - target.to(device)) ** 2).mean())


def search_correction_iter(
    z: torch.Tensor,
    config: CorrectionConfig,
    hidden: tuple[int, ...],
    train_steps: tuple[int, ...],
    should_stop: Callable[[], bool] = lambda: False,
    device: str | torch.device = "cpu",
) -> Generator[Progress, None, tuple[CorrectionFlow, dict[str, Any]]]:
    """Choose the correction's width and training steps by validation loss, not by hand: every pair of
    `hidden` × `train_steps` (an empty tuple: the config's value) trains on 80 % of the noises (a seeded split)
    and is scored by `validation_loss` on the other 20 %; the best is returned, its record carrying the table
    of candidates (`search`)."""
    if len(z) < 10:
        raise ValueError(f"correction search: {len(z)} inverted noises are too few to hold some out (need >= 10)")
    order = torch.randperm(len(z), generator=torch.Generator().manual_seed(config.seed + 7))
    n_val = max(2, round(VALIDATION_FRACTION * len(z)))
    val, train = z[order[:n_val]], z[order[n_val:]]
    grid = [(h, t) for h in (hidden or (config.hidden,)) for t in (train_steps or (config.train_steps,))]
    best: tuple[float, CorrectionFlow, dict[str, Any]] | None = None
    table = []
    for i, (h, t) in enumerate(grid):
        candidate = replace(config, hidden=h, train_steps=t)
        flow, record = yield from train_correction_iter(train, candidate, should_stop, device)
        if should_stop():
            break
        loss = validation_loss(flow, val, config.seed + 11)
        table.append({"hidden": h, "train_steps": t, "validation_loss": loss, "train_loss": record["final_loss"]})
        yield Progress("searching the correction", i + 1, len(grid), loss=loss, scope=(("hidden", h), ("steps", t)))
        if best is None or loss < best[0]:
            best = (loss, flow, record)
    if best is None:
        raise Stopped
    _, flow, record = best
    return flow, {**record, "search": table, "validation_noises": n_val}


def train_correction(z: torch.Tensor, config: CorrectionConfig, **kwargs: Any) -> CorrectionFlow:
    """`train_correction_iter` run to the end; returns only the flow."""
    trained = drain(train_correction_iter(z, config, **kwargs))
    assert trained is not None
    return trained[0]


def corrected_sample(
    base: DiffusionAdapter,
    seeds: torch.Tensor,
    num_inference_steps: int,
    correction: CorrectionFlow | None = None,
    correction_steps: int = 0,
    grid: str = "linear",
) -> torch.Tensor:
    """`x = G(c(ε))` with `ε` drawn per seed exactly as `sampling.sample_iter` draws its initial noise, so a
    corrected sample and the base sample of the same seed start from the same `ε` (docs/method.md §4.4);
    `G` is the K-step sampler on `grid`."""
    eps = seeded_noise(seeds, base.sample_shape, 1)[:, 0]
    z = correction.sample(eps, correction_steps) if correction is not None else eps
    return euler_sample(base, z.to(base.device), num_inference_steps, grid=grid)
