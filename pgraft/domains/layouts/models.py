"""The `layouts` base model: an x₀-predicting, self-conditioned transformer over the page's slots
(shared/docs/domains.md §A.4), on diffusers' DDPM/DDIM schedulers.

- `X0Process`: DDPM with the cosine ("squaredcos_cap_v2") schedule whose model output is `x̂_0`
  (diffusers' `prediction_type="sample"`). With it, every generic part of pgraft works unchanged: the sampler
  steps with diffusers' `DDIMScheduler`, and fine-tuning regresses the network's `x̂_0` on the core's target
  in x₀ units (`NoiseProcess.output_from(ε*, x₀*) = x₀*`), which for P-GRAFT's intermediate anchoring is the
  ε-form target converted to x₀ (see `pgraft.domains.layouts.targets` for why not the base's own prediction).
- `LayoutDenoiser`: slot features + the previous `x̂_0` estimate (self-conditioning) → `d`-dimensional tokens,
  learned slot positions, a sinusoidal time embedding added to every token, pre-norm transformer blocks,
  and a head giving 6 class logits and 4 box values; `x̂_0 = concat(2·softmax(logits) − 1, box)` (the box
  clamped to [−1, 1] when not training).

Self-conditioning: in training, half of the rows (a seeded coin per row) get the network's own detached
estimate as input, the others zeros. When sampling, the estimate of the previous step is fed back; it lives
in a small cache shared by the model and its fine-tuned copies, used only when the next call has the same
shape and a smaller timestep (the next step of the same batch), so a new batch or a new trajectory starts
from zeros. Attention uses `F.scaled_dot_product_attention` (`fused=False`: the explicit softmax, for the
benchmark).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pgraft.core.process import VPProcess, ddim_mean_std
from pgraft.domains.base import asset_dir
from pgraft.domains.layouts.generator import EMPTY, FEATURES, SLOTS
from pgraft.families.small import DiffusionModel, read_safetensors_metadata

ASSETS = asset_dir("pgraft.domains.layouts")
DOMAIN = "layouts"
NAME = "layouts"
CLASS_DIMS = EMPTY + 1
SIZES: dict[str, dict[str, int]] = {
    "default": {"d": 128, "layers": 4, "heads": 4, "ff": 256},
    "tiny": {"d": 32, "layers": 2, "heads": 2, "ff": 64},
}
# 1 thread, bench/bench_layouts.py: chunks of 512 rows sampled as fast per row as one batch of 2,048.
CPU_SAMPLE_BATCH_SIZE = 512


class X0Process(VPProcess):
    """DDPM (cosine schedule) whose model predicts the clean sample `x_0` (see the module docstring)."""

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "squaredcos_cap_v2") -> None:
        from diffusers import DDPMScheduler

        super().__init__(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule)
        self.prediction_type = "sample"  # type: ignore[assignment]  # diffusers' name; not a core PredictionType
        scheduler: Any = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            prediction_type="sample",
            clip_sample=False,
        )
        self.train_scheduler = scheduler
        self.alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64)

    def _ab(self, like: torch.Tensor, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, s = self.coefficients(timesteps)
        shape = (-1, *([1] * (like.dim() - 1)))
        return a.to(like.dtype).reshape(shape), s.to(like.dtype).reshape(shape)

    def predicted_noise(self, output: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        a, s = self._ab(x_t, timesteps)
        return (x_t - a * output) / s

    def output_from(self, eps: torch.Tensor, x0: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return x0

    def _as_epsilon(self, scheduler: Any, output: torch.Tensor, timesteps: torch.Tensor, x: torch.Tensor) -> Any:
        """The ε an x₀ output implies, and a view of the scheduler that says so (for `ddim_mean_std`)."""
        config = SimpleNamespace(**{**dict(scheduler.config), "prediction_type": "epsilon"})
        view = SimpleNamespace(
            config=config,
            alphas_cumprod=scheduler.alphas_cumprod,
            final_alpha_cumprod=scheduler.final_alpha_cumprod,
            num_inference_steps=scheduler.num_inference_steps,
        )
        return view, self.predicted_noise(output, x, timesteps)

    def transition(
        self, scheduler: Any, model_output: torch.Tensor, timesteps: torch.Tensor, x: torch.Tensor, eta: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        view, eps = self._as_epsilon(scheduler, model_output, timesteps, x)
        return ddim_mean_std(view, eps, timesteps, x, eta)


def time_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of (float) timesteps, `(N, dim)`."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=timesteps.device) / half)
    angles = timesteps.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], -1)


class Block(nn.Module):
    """A pre-norm transformer block (self-attention over the slots, then a GELU feed-forward)."""

    def __init__(self, d: int, heads: int, ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))

    def forward(self, h: torch.Tensor, fused: bool = True) -> torch.Tensor:
        n, e, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(n, e, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if fused:
            att = F.scaled_dot_product_attention(q, k, v)
        else:
            w = (q @ k.transpose(-1, -2)) / math.sqrt(d // self.heads)
            att = w.softmax(-1) @ v
        h = h + self.proj(att.transpose(1, 2).reshape(n, e, d))
        return h + self.ff(self.norm2(h))


class EstimateCache:
    """The previous sampling step's `x̂_0`, for self-conditioning (see the module docstring)."""

    def __init__(self) -> None:
        self.timestep: float | None = None
        self.estimate: torch.Tensor | None = None

    def lookup(self, x: torch.Tensor, timestep: float) -> torch.Tensor | None:
        e = self.estimate
        if e is None or self.timestep is None or e.shape != x.shape or e.device != x.device:
            return None
        return e if timestep < self.timestep else None

    def store(self, estimate: torch.Tensor, timestep: float) -> None:
        self.estimate, self.timestep = estimate.detach(), timestep


class LayoutDenoiser(nn.Module):
    """`(x_t, timesteps, cond) ↦ x̂_0` over `(N, SLOTS, FEATURES)` layouts (see the module docstring)."""

    def __init__(self, d: int = 128, layers: int = 4, heads: int = 4, ff: int = 256, seed: int = 0) -> None:
        super().__init__()
        self.config = {"d": d, "layers": layers, "heads": heads, "ff": ff}
        self.embed = nn.Linear(2 * FEATURES, d)
        self.position = nn.Parameter(torch.randn(SLOTS, d) * 0.02)
        self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList([Block(d, heads, ff) for _ in range(layers)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, FEATURES)
        self.fused = True
        self.cache = EstimateCache()
        self.coin = torch.Generator().manual_seed(int(seed))

    def logits_and_box(
        self, x: torch.Tensor, timesteps: torch.Tensor, previous: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.embed(torch.cat([x, previous], -1)) + self.position
        h = h + self.time(time_embedding(timesteps.reshape(-1).expand(len(x)), h.shape[-1]))[:, None]
        for block in self.blocks:
            h = block(h, self.fused)
        out = self.head(self.norm(h))
        return out[..., :CLASS_DIMS], out[..., CLASS_DIMS:]

    @staticmethod
    def estimate(logits: torch.Tensor, box: torch.Tensor, clamp: bool) -> torch.Tensor:
        """`x̂_0` from the head: `2·softmax − 1` for the class block, the box (clamped to [−1, 1] if asked)."""
        return torch.cat([2 * logits.softmax(-1) - 1, box.clamp(-1, 1) if clamp else box], -1)

    def self_condition(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Training input of the previous estimate: the network's own (no gradient) for a seeded half of the
        rows, zeros for the others."""
        out = torch.zeros_like(x)
        rows = (torch.rand(len(x), generator=self.coin) < 0.5).nonzero().squeeze(1).to(x.device)
        if len(rows):
            t = timesteps.reshape(-1).expand(len(x))[rows]
            with torch.no_grad():
                out[rows] = self.estimate(*self.logits_and_box(x[rows], t, out[rows]), clamp=False)
        return out

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, cond: Any = None) -> torch.Tensor:
        if self.training:
            return self.estimate(*self.logits_and_box(x, timesteps, self.self_condition(x, timesteps)), clamp=False)
        t = float(timesteps.max())
        previous = self.cache.lookup(x, t)
        out = self.estimate(
            *self.logits_and_box(x, timesteps, previous if previous is not None else torch.zeros_like(x)), clamp=True
        )
        self.cache.store(out, t)
        return out

    def trainable_copy(self) -> LayoutDenoiser:
        """A deep copy sharing the estimate cache (the stitched sampler hands over mid-trajectory), with a coin
        seeded from the global RNG (which the family seeds from the run's seed)."""
        cache, self.cache = self.cache, EstimateCache()
        try:
            twin = copy.deepcopy(self)
        finally:
            self.cache = cache
        twin.cache = cache
        twin.coin = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
        return twin


def layout_process() -> X0Process:
    return X0Process()


def build_layout_model(
    size: str | dict[str, int] = "default", info: dict[str, Any] | None = None, seed: int = 0
) -> DiffusionModel:
    config = SIZES[size] if isinstance(size, str) else dict(size)
    if isinstance(size, str) and size not in SIZES:
        raise ValueError(f"--size: {size!r} is not a layouts size; choose one of {sorted(SIZES)}")
    network = LayoutDenoiser(**config, seed=seed)
    return DiffusionModel(
        network,
        layout_process(),
        (SLOTS, FEATURES),
        NAME,
        DOMAIN,
        info={"network_config": config, **(info or {})},
        sample_batch_size=4096,
        cpu_sample_batch_size=CPU_SAMPLE_BATCH_SIZE,
    )


def weights_path(name: str = NAME) -> Path:
    return ASSETS / f"{name}.safetensors"


def load_layout_model(device: str = "cpu", path: Path | None = None) -> DiffusionModel:
    """Load the shipped (or given) weights; the network config comes from the file's metadata."""
    path = Path(path) if path is not None else weights_path()
    if not path.exists():
        raise ValueError(f"--model: weights {str(path)!r} are missing; run `pgraft pretrain layouts`")
    meta = read_safetensors_metadata(path)
    config = json.loads(meta["network_config"])
    info = {k: json.loads(v) for k, v in meta.items() if k in ("training", "quality", "data")}
    model = build_layout_model(config, info)
    model.load_weights(path)
    return model.to(device).frozen()
