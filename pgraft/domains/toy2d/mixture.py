"""Gaussian mixtures with diagonal covariances: the toy data laws, and everything exact about them.

A Gaussian interpolant `x_t = a_t x_0 + σ_t ε` maps a mixture to a mixture, so the noised density, its
score and the posterior mean `E[x_0 | x_t]` all have closed forms. The exact base models and the exact
references of the toy domain are built on these formulas (docs/method.md §3).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GaussianMixture:
    """`Σ_k w_k N(μ_k, diag(s_k²))` in `D` dimensions. `weights (K,)`, `means (K, D)`, `stds (K, D)`."""

    weights: torch.Tensor
    means: torch.Tensor
    stds: torch.Tensor

    def __post_init__(self) -> None:
        k, d = self.means.shape
        if self.weights.shape != (k,) or self.stds.shape != (k, d):
            raise ValueError(
                f"mixture shapes disagree: weights {tuple(self.weights.shape)}, means {(k, d)}, "
                f"stds {tuple(self.stds.shape)}"
            )
        if not math.isclose(float(self.weights.sum()), 1.0, abs_tol=1e-5):
            raise ValueError(f"mixture weights must sum to 1, got {float(self.weights.sum())}")

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def num_modes(self) -> int:
        return int(self.means.shape[0])

    def noised(self, a: float, sigma: float) -> GaussianMixture:
        """The law of `a x_0 + σ ε`."""
        stds = torch.sqrt((a * self.stds) ** 2 + sigma**2)
        return GaussianMixture(self.weights, a * self.means, stds)

    def component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """`log w_k + log N(x; μ_k, s_k²)` for every sample and component, shape `(N, K)`."""
        x = x.to(self.means.dtype)
        z = (x[:, None, :] - self.means[None]) / self.stds[None]
        log_norm = -torch.log(self.stds).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)
        return torch.log(self.weights)[None] + log_norm[None] - 0.5 * (z**2).sum(-1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.component_log_probs(x), dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype)
        return self.means[idx] + self.stds[idx] * eps

    def posterior_mean(self, x_t: torch.Tensor, a: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """`E[x_0 | x_t]` under `x_t = a x_0 + σ ε`; `a`, `σ` broadcast against `(N, 1)`.

        Each component's posterior is Gaussian, `μ_k + a s_k² / (a² s_k² + σ²) (x_t − a μ_k)`, mixed with
        the responsibilities of the noised mixture.
        """
        x_t = x_t.to(self.means.dtype)
        a = a.reshape(-1, 1, 1).to(self.means.dtype)
        sigma = sigma.reshape(-1, 1, 1).to(self.means.dtype)
        var_t = (a * self.stds[None]) ** 2 + sigma**2  # (N, K, D)
        diff = x_t[:, None, :] - a * self.means[None]
        log_comp = torch.log(self.weights)[None] - 0.5 * torch.log(var_t).sum(-1) - 0.5 * (diff**2 / var_t).sum(-1)
        resp = torch.softmax(log_comp, dim=-1)  # (N, K)
        comp_mean = self.means[None] + a * self.stds[None] ** 2 / var_t * diff
        return (resp[..., None] * comp_mean).sum(1)

    def mode_index(self, x: torch.Tensor) -> torch.Tensor:
        """The component each sample most probably came from, shape `(N,)`."""
        return self.component_log_probs(x).argmax(-1)

    def within_modes(self, x: torch.Tensor, radius: float = 3.0) -> torch.Tensor:
        """`(N, K)` booleans: sample within `radius` standard deviations of each mode's mean."""
        z = (x[:, None, :].to(self.means.dtype) - self.means[None]) / self.stds[None]
        return z.norm(dim=-1) <= radius


def ring8(radius: float = 4.0, std: float = 0.35) -> GaussianMixture:
    """Eight equal modes on a circle: the classic mode-coverage toy."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)
    return GaussianMixture(torch.full((8,), 1 / 8, dtype=torch.float64), means, torch.full((8, 2), std).double())


def asymmetric() -> GaussianMixture:
    """Five modes with unequal weights and widths: the rare modes are where the reward lives."""
    weights = torch.tensor([0.40, 0.25, 0.15, 0.12, 0.08], dtype=torch.float64)
    means = torch.tensor([[-2.5, -1.0], [0.0, 2.0], [1.5, -2.0], [3.0, 1.0], [3.5, 3.5]], dtype=torch.float64)
    stds = torch.tensor([[0.6, 0.5], [0.5, 0.5], [0.4, 0.4], [0.35, 0.35], [0.3, 0.3]], dtype=torch.float64)
    return GaussianMixture(weights, means, stds)


DATASETS: dict[str, Callable[[], GaussianMixture]] = {"ring8": ring8, "asymmetric": asymmetric}


def get_dataset(name: str) -> GaussianMixture:
    if name not in DATASETS:
        raise ValueError(f"--dataset: unknown {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]()
