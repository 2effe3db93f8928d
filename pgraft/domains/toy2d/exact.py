"""Exact GRAFT and P-GRAFT targets for a 2-D Gaussian-mixture toy, on a fine grid (docs/method.md §1–2).

Under perfect learning, round `k` of GRAFT turns the current law `q_{k−1}` into
`q_k ∝ q_{k−1} a(F_{k−1}(r))`, `F_{k−1}` the reward CDF of `q_{k−1}`: rounds compound.

P-GRAFT at a cutoff with noise-to-signal ratio `s = σ_c / a_c` works in the coordinates `y = x_c / a_c`,
where the forward kernel is a Gaussian blur `N(y; x_0, s² I)`. With a stochastic base continuation the
stitched sampler's handoff law is `m_k = p̄_c ρ_k`, where `ρ_k = ρ_{k−1} h_k` and
`h_k(y) = E[a_k(X_0) | X_c = y] = (G[p̄ a_k])(y) / (G p̄)(y)`; its output law is
`q_k(x_0) ∝ p̄(x_0) E[ρ_k(X_c) | X_0 = x_0]`. `s = 0` is GRAFT. Every blur is separable, so it costs two
small matrix products.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pgraft.core.acceptance import AcceptanceRule
from pgraft.domains.toy2d.mixture import GaussianMixture
from pgraft.rewards import Reward, score


@dataclass(frozen=True)
class Grid2D:
    xs: np.ndarray
    ys: np.ndarray

    @property
    def points(self) -> torch.Tensor:
        gx, gy = np.meshgrid(self.xs, self.ys, indexing="ij")
        return torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], axis=-1))

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.xs), len(self.ys)


def grid_for(mixture: GaussianMixture, n: int = 240, margin: float = 4.5) -> Grid2D:
    lo = (mixture.means - margin * mixture.stds).min(0).values.numpy()
    hi = (mixture.means + margin * mixture.stds).max(0).values.numpy()
    return Grid2D(np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n))


def _reward_levels(masses: np.ndarray, rewards: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct reward values, the mass on each, and each grid point's index into them (ties pooled)."""
    levels, inverse = np.unique(rewards, return_inverse=True)
    return levels, np.bincount(inverse, weights=masses, minlength=len(levels)), inverse


def acceptance_on_grid(rule: AcceptanceRule, masses: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """`a` at every grid point under the law with these masses, each distinct reward a level that spans its
    quantile interval `[F(r−), F(r)]` and the rewards halfway to its neighbours: points that tie (a grid
    column of reward `x`) share the level, and the level a rule's boundary falls in is accepted in part
    (`AcceptanceRule.level_acceptance`), so a quantile rule accepts exactly its mass."""
    _levels, _mass, inverse, bounds = _level_bounds(masses, rewards)
    return rule.level_acceptance(*bounds)[inverse]


def tilt_kl_on_grid(rule: AcceptanceRule, masses: np.ndarray, rewards: np.ndarray) -> float:
    """`KL(p a / Z ‖ p) = E_p[a log a] / Z − log Z` with both means taken level by level as in
    `acceptance_on_grid`: a rule whose `a` is 0 or 1 gets exactly `−log(accepted mass)`, which the grid
    masses alone would miss at the level its boundary cuts."""
    _levels, level_mass, _inverse, bounds = _level_bounds(masses, rewards)
    p = level_mass / level_mass.sum()
    z = float((p * rule.level_acceptance(*bounds)).sum())
    if z <= 0:
        return float("nan")
    return float((p * rule.level_a_log_a(*bounds)).sum()) / z - float(np.log(z))


def _level_bounds(
    masses: np.ndarray, rewards: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Levels, their masses, each point's level, and each level's `(u_lo, u_hi, r_lo, r_hi)`."""
    levels, level_mass, inverse = _reward_levels(masses, rewards)
    total = level_mass.sum()
    u_hi = np.clip(np.cumsum(level_mass) / total, 0.0, 1.0)
    u_lo = np.clip(u_hi - level_mass / total, 0.0, 1.0)
    if len(levels) > 1:
        mids = (levels[1:] + levels[:-1]) / 2
        r_lo = np.concatenate([[levels[0] - (mids[0] - levels[0])], mids])
        r_hi = np.concatenate([mids, [levels[-1] + (levels[-1] - mids[-1])]])
    else:
        r_lo = r_hi = levels
    return levels, level_mass, inverse, (u_lo, u_hi, r_lo, r_hi)


def quantiles_of(masses: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """Mid-rank reward quantile `u = F(r−) + P(r)/2` of every grid point under the law with these masses."""
    _, level_mass, inverse = _reward_levels(masses, rewards)
    total = level_mass.sum()
    mid = (np.cumsum(level_mass) - level_mass / 2) / total
    return np.clip(mid[inverse], 0.0, 1.0)


def _blur_matrix(src: np.ndarray, dst: np.ndarray, s: float) -> np.ndarray:
    """`G[j, i] = N(dst_j; src_i, s²)`: the forward kernel on one axis."""
    d = (dst[:, None] - src[None, :]) / s
    return np.exp(-0.5 * d**2) / (s * math.sqrt(2 * math.pi))


@dataclass(frozen=True)
class SeparableBlur:
    """The forward kernel `N(y; x_0, s² I)` from the data grid to a wider y-grid, one matrix per axis.

    `gx[j, i] = N(y_j; x_i, s²)` on the x axis, `gy` likewise; the y-grid reaches 5 s beyond the data grid
    with a spacing of at most `min(dx, s/3)` (at most 1,200 points per axis).
    """

    gx: np.ndarray
    gy: np.ndarray
    shape: tuple[int, int]

    @classmethod
    def for_grid(cls, grid: Grid2D, s: float, y_spacing: float | None = None) -> SeparableBlur | None:
        """The blur of std `s` on `grid`, or `None` when `s` is below half a grid cell (no blur: GRAFT).

        `y_spacing` overrides the y-grid spacing (a sum over a Gaussian of std `s` sampled every `s/4` or
        finer is exact to many digits, so far fewer y points serve when `s` is large).
        """
        nx, ny = grid.shape
        dx = float(grid.xs[1] - grid.xs[0])
        if s <= dx / 2:
            return None
        span = 5 * s
        spacing = min(dx, s / 3) if y_spacing is None else y_spacing
        ny_axis = max(16, int(2 * (span + (grid.xs[-1] - grid.xs[0]) / 2) / spacing))
        ny_axis = min(ny_axis if y_spacing is not None else max(nx, ny_axis), 1200)
        gx = _blur_matrix(grid.xs, np.linspace(grid.xs[0] - span, grid.xs[-1] + span, ny_axis), s)
        gy = _blur_matrix(grid.ys, np.linspace(grid.ys[0] - span, grid.ys[-1] + span, ny_axis), s)
        return cls(gx, gy, (nx, ny))

    def forward(self, masses: np.ndarray) -> np.ndarray:
        """`(G f)(y)` for a field `f` on the data grid (or a stack of fields): the handoff-level image of masses."""
        return self.gx @ masses.reshape(*masses.shape[:-1], *self.shape) @ self.gy.T

    def backward(self, field: np.ndarray) -> np.ndarray:
        """`E[f(Y) | X_0 = x]` on the data grid, columns normalised against the finite y-grid."""
        num = self.gx.T @ field @ self.gy
        den = self.gx.T @ np.ones_like(field) @ self.gy
        return (num / den).ravel()


class ExactChain:
    """The perfect-learning sequence of targets `q_0 = p̄, q_1, q_2, ...` for one rule and reward."""

    def __init__(
        self,
        mixture: GaussianMixture,
        reward: Reward,
        rule: AcceptanceRule,
        noise_to_signal: float = 0.0,
        grid: Grid2D | None = None,
        y_spacing: float | None = None,
    ) -> None:
        grid = grid or grid_for(mixture)
        pts = grid.points
        dens = mixture.log_prob(pts).exp().numpy()
        self._start(grid, score(reward, pts.float()).numpy(), dens / dens.sum(), rule, noise_to_signal, y_spacing)

    def _start(
        self,
        grid: Grid2D,
        rewards: np.ndarray,
        base: np.ndarray,
        rule: AcceptanceRule,
        noise_to_signal: float,
        y_spacing: float | None,
    ) -> None:
        self.grid, self.rewards, self.base, self.rule = grid, rewards, base, rule
        self.s = float(noise_to_signal)
        self.blur = SeparableBlur.for_grid(self.grid, self.s, y_spacing)
        if self.blur is not None:
            self.base_c = self.blur.forward(self.base)
            self.ratio = np.ones_like(self.base_c)
        self.targets: list[np.ndarray] = [self.base]

    def at_noise(self, noise_to_signal: float, y_spacing: float | None = None) -> ExactChain:
        """The chain of the same mixture, reward and rule at another cutoff (no rescoring of the grid)."""
        chain = ExactChain.__new__(ExactChain)
        chain._start(self.grid, self.rewards, self.base, self.rule, noise_to_signal, y_spacing)
        return chain

    def step(self) -> np.ndarray:
        """Append and return the next round's exact target."""
        current = self.targets[-1]
        a = acceptance_on_grid(self.rule, current, self.rewards)
        if self.blur is None:
            nxt = current * a
        else:
            num = self.blur.forward(self.base * a)
            den = self.base_c
            h = np.where(den > 1e-300, num / np.maximum(den, 1e-300), float((self.base * a).sum()))
            self.ratio = self.ratio * h
            self.ratio /= self.ratio.max()
            nxt = self.base * self.blur.backward(self.ratio)
        total = nxt.sum()
        nxt = current if total <= 0 else nxt / total
        self.targets.append(nxt)
        return nxt

    def target(self, k: int) -> np.ndarray:
        while len(self.targets) <= k:
            self.step()
        return self.targets[k]

    def expected_reward(self, k: int) -> float:
        return float((self.target(k) * self.rewards).sum())

    def reward_cdf_distance(self, k: int, sample_rewards: torch.Tensor) -> float:
        """Kolmogorov–Smirnov distance between the samples' reward law and round k's exact reward law."""
        levels, level_mass, _ = _reward_levels(self.target(k), self.rewards)
        # Each level's mass is spread over its grid cells, so the CDF passes through the mass midpoints.
        r_sorted, cdf = levels, (np.cumsum(level_mass) - level_mass / 2) / level_mass.sum()
        x = np.sort(sample_rewards.numpy())
        emp_hi = np.arange(1, len(x) + 1) / len(x)
        exact = np.interp(x, r_sorted, cdf, left=0.0, right=1.0)
        return float(np.max(np.maximum(np.abs(emp_hi - exact), np.abs(emp_hi - 1 / len(x) - exact))))

    def total_variation(self, k: int, samples: torch.Tensor, bins: int = 16) -> float:
        """Total variation between the samples' and the target's masses on a coarse `bins × bins` histogram."""
        nx, ny = self.grid.shape
        q = self.target(k).reshape(nx, ny)
        ex = np.linspace(self.grid.xs[0], self.grid.xs[-1], bins + 1)
        ey = np.linspace(self.grid.ys[0], self.grid.ys[-1], bins + 1)
        ix = np.clip(np.digitize(self.grid.xs, ex) - 1, 0, bins - 1)
        iy = np.clip(np.digitize(self.grid.ys, ey) - 1, 0, bins - 1)
        target_hist = np.zeros((bins, bins))
        np.add.at(target_hist, (ix[:, None].repeat(ny, 1), iy[None, :].repeat(nx, 0)), q)
        s = samples.double().numpy()
        sample_hist, _, _ = np.histogram2d(s[:, 0], s[:, 1], bins=[ex, ey])
        return float(
            0.5 * np.abs(sample_hist / max(len(s), 1) - target_hist).sum()
            + 0.5 * (1 - sample_hist.sum() / max(len(s), 1))
        )

    def sample(self, k: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw from round k's target (grid cell, then uniform within the cell)."""
        q = torch.from_numpy(self.target(k))
        idx = torch.multinomial(q, n, replacement=True, generator=generator)
        pts = self.grid.points[idx]
        dx = float(self.grid.xs[1] - self.grid.xs[0])
        dy = float(self.grid.ys[1] - self.grid.ys[0])
        jitter = (torch.rand(n, 2, generator=generator, dtype=torch.float64) - 0.5) * torch.tensor([dx, dy])
        return pts + jitter
