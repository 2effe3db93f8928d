"""How far inverted noises are from `N(0, I)` (docs/method.md §4.2), each figure with its null reference.

For `n` noises in `d` dimensions:

- mean: `|m̄|₂`; under the null `n |m̄|² ~ χ²_d` exactly, which gives a p-value and the typical size `sqrt(d/n)`;
- covariance: `‖S − I‖_F` of the sample covariance; Nagao's statistic `(n/2) tr((S − I)²)` is asymptotically
  `χ²_{d(d+1)/2}` under the null, typical size `sqrt(d(d+1)/n)`;
- norms: `|z|` against the chi law with `d` degrees of freedom (Kolmogorov–Smirnov, scipy);
- MMD: the unbiased squared MMD between the noises and as many fresh `N(0, I)` draws, Gaussian kernel with
  the median-distance bandwidth, p-value from a permutation null (its 95 % quantile is reported too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class MMDResult:
    mmd2: float
    pvalue: float
    null_q95: float
    bandwidth: float


@dataclass(frozen=True)
class NoiseDiagnostics:
    n: int
    dim: int
    mean_error: float
    mean_error_null: float
    mean_pvalue: float
    cov_error: float
    cov_error_null: float
    cov_pvalue: float
    norm_mean: float
    chi_mean: float
    ks_statistic: float
    ks_pvalue: float
    mmd2: float
    mmd_null_q95: float
    mmd_pvalue: float

    def passes(self, alpha: float = 0.01) -> bool:
        """Every test keeps `N(0, I)` at level `alpha`."""
        return min(self.mean_pvalue, self.cov_pvalue, self.ks_pvalue, self.mmd_pvalue) > alpha

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def median_bandwidth(pooled: torch.Tensor, max_points: int = 1000) -> float:
    """The median pairwise distance (over an evenly spaced subset of at most `max_points` rows)."""
    rows = pooled[:: max(1, -(-len(pooled) // max_points))]
    d = torch.cdist(rows, rows)
    off = d[~torch.eye(len(d), dtype=torch.bool)]
    return float(off.median().clamp_min(1e-12))


def gaussian_kernel(x: torch.Tensor, y: torch.Tensor, bandwidth: float | Sequence[float]) -> torch.Tensor:
    """`exp(−|x − y|² / 2h²)`, summed over the bandwidths when several are given (a multi-scale kernel)."""
    sq = torch.cdist(x, y).square()
    widths = [bandwidth] if isinstance(bandwidth, float | int) else list(bandwidth)
    return sum((torch.exp(-sq / (2 * h**2)) for h in widths), torch.zeros_like(sq))


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, bandwidth: float | Sequence[float]) -> float:
    """Unbiased `MMD²(x, y)` with a Gaussian kernel of the given bandwidth(s) (sizes may differ)."""
    x, y = x.double().flatten(1), y.double().flatten(1)
    kxx, kyy, kxy = gaussian_kernel(x, x, bandwidth), gaussian_kernel(y, y, bandwidth), gaussian_kernel(x, y, bandwidth)
    n, m = len(x), len(y)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.mean())


def mmd_test(
    x: torch.Tensor, y: torch.Tensor, num_permutations: int = 200, generator: torch.Generator | None = None
) -> MMDResult:
    """Two-sample MMD test: median-heuristic bandwidth on the pooled sample, permutation p-value.

    All permutations are evaluated at once: with `A` the `(2n, P)` indicator of the first group under each
    permutation, the within and cross kernel sums are the quadratic forms `aᵀKa`, `bᵀKb`, `aᵀKb`.
    """
    x, y = x.double().flatten(1), y.double().flatten(1)
    pooled = torch.cat([x, y])
    bandwidth = median_bandwidth(pooled)
    k = gaussian_kernel(pooled, pooled, bandwidth)
    n, m = len(x), len(y)
    ranks = torch.rand(num_permutations, n + m, generator=generator, dtype=torch.float64).argsort(1)
    first = (ranks < n).double().T  # (n + m, P): column p marks the first group under permutation p
    first = torch.cat([torch.cat([torch.ones(n), torch.zeros(m)]).double()[:, None], first], dim=1)
    second = 1 - first
    trace_a = first.T @ k.diagonal()  # Σ over the group of k(i, i)
    trace_b = second.T @ k.diagonal()
    ka = k @ first
    kb = k.sum(1, keepdim=True) - ka  # = k @ second
    sxx = ((first * ka).sum(0) - trace_a) / (n * (n - 1))
    syy = ((second * kb).sum(0) - trace_b) / (m * (m - 1))
    sxy = (second * ka).sum(0) / (n * m)
    stats = sxx + syy - 2 * sxy
    observed, null = float(stats[0]), stats[1:]
    pvalue = (1 + int((null >= observed).sum())) / (1 + num_permutations)
    return MMDResult(observed, pvalue, float(null.quantile(0.95)), bandwidth)


MIN_NOISES = 3
"""The fewest noises `diagnose` accepts (a covariance and a two-sample test need a few)."""


def diagnose(z: torch.Tensor, seed: int = 0, max_points: int = 1000, num_permutations: int = 200) -> NoiseDiagnostics:
    """All the figures of the module docstring for noises `z (n, *shape)` (flattened to `d` dimensions).

    The MMD uses at most `max_points` noises (a seeded subset) against as many fresh `N(0, I)` draws.
    """
    from scipy import stats

    x = z.double().flatten(1)
    n, d = x.shape
    if n < MIN_NOISES:
        raise ValueError(f"noise diagnostics need at least {MIN_NOISES} noises, got {n}")
    gen = torch.Generator().manual_seed(seed)
    mean = x.mean(0)
    cov = torch.cov(x.T).reshape(d, d)
    dev = cov - torch.eye(d, dtype=torch.float64)
    nagao = 0.5 * n * float((dev @ dev).diagonal().sum())
    norms = x.norm(dim=1).numpy()
    ks = stats.kstest(norms, "chi", args=(d,))
    subset = x[torch.randperm(n, generator=gen)[:max_points]]
    reference = torch.randn(len(subset), d, generator=gen, dtype=torch.float64)
    mmd = mmd_test(subset, reference, num_permutations, gen)
    return NoiseDiagnostics(
        n=n,
        dim=d,
        mean_error=float(mean.norm()),
        mean_error_null=math.sqrt(d / n),
        mean_pvalue=float(stats.chi2.sf(n * float(mean.square().sum()), d)),
        cov_error=float(dev.norm()),
        cov_error_null=math.sqrt(d * (d + 1) / n),
        cov_pvalue=float(stats.chi2.sf(nagao, d * (d + 1) / 2)),
        norm_mean=float(norms.mean()),
        chi_mean=float(stats.chi.mean(d)),
        ks_statistic=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        mmd2=mmd.mmd2,
        mmd_null_q95=mmd.null_q95,
        mmd_pvalue=mmd.pvalue,
    )
