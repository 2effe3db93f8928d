"""Distances between sets of feature vectors, for the realism metrics of every image domain: the Fréchet
distance of two Gaussians fitted to them (the FID recipe, with any feature extractor) and a diversity figure."""

from __future__ import annotations

import torch


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) covariance of `(N, D)` features, float64."""
    f = features.double()
    return f.mean(0), torch.atleast_2d(torch.cov(f.T))


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """`‖μ₁ − μ₂‖² + tr(C₁ + C₂ − 2 (C₁^½ C₂ C₁^½)^½)`, the 2-Wasserstein distance² of two Gaussians.

    Both square roots come from symmetric eigen-decompositions (eigenvalues clamped at 0), so no complex
    parts or `sqrtm` round-off appear; `tr (C₁^½ C₂ C₁^½)^½ = tr (C₁ C₂)^½`.
    """
    c1, c2 = cov1.double(), cov2.double()
    w, v = torch.linalg.eigh(c1)
    root1 = (v * w.clamp_min(0).sqrt()) @ v.T
    middle = root1 @ c2 @ root1
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    diff = mu1.double() - mu2.double()
    return max(0.0, float(diff @ diff + c1.trace() + c2.trace() - 2 * cross))  # ≥ 0 up to round-off


def mean_pairwise_distance(features: torch.Tensor, max_samples: int = 1024) -> float:
    """Mean Euclidean distance between distinct samples (the first `max_samples`), a diversity figure."""
    f = features[:max_samples].double()
    n = len(f)
    if n < 2:
        return 0.0
    return float(torch.cdist(f, f).sum() / (n * (n - 1)))
