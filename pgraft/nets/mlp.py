"""The small MLP denoiser shared by the 2-D toy models and the correction flow of inverse noise correction."""

from __future__ import annotations

import torch
from torch import nn

HIDDEN = 128


class MLPDenoiser(nn.Module):
    """`(x_t, t) ↦ prediction` for 2-D data: sinusoidal time features (diffusers' `Timesteps`), 3 hidden layers."""

    def __init__(self, dim: int = 2, hidden: int = HIDDEN, time_features: int = 32, zero_output: bool = False):
        super().__init__()
        from diffusers.models.embeddings import Timesteps

        self.time_proj = Timesteps(time_features, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.net = nn.Sequential(
            nn.Linear(dim + time_features, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, dim),
        )
        if zero_output:
            last = self.net[-1]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        t = timesteps.expand(x.shape[0]) if timesteps.dim() == 0 else timesteps
        feats = self.time_proj(t.to(x.dtype)).to(x.dtype)
        return self.net(torch.cat([x, feats], dim=-1))
