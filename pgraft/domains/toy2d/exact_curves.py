"""Exact bias–variance curves of the Gaussian-mixture toy, on the grid of `exact.py` (docs/method.md §3).

At a cutoff with noise-to-signal ratio `s = σ_t / a_t`, in coordinates `y = x_t / a_t` the forward kernel
is the blur `N(y; x_0, s² I)` (`exact.SeparableBlur`), so every posterior expectation is a ratio of blurs:
`E[f(X_0) | Y = y] = G[p̄ f](y) / G[p̄](y)`. With `m_1 = E[r | y]`, `m_2 = E[r² | y]` and
`h = E[a | y]` (`a` the rule's acceptance at the base reward quantile):

- `V = E_y[m_2 − m_1²]`, `B = Var_y(m_1)`, `R² = B / (B + V)` (`B + V = Var r`, the law of total variance);
- `D = KL(p̃_t ‖ p̄_t) = E_y[w log w]`, `w = h / E_y[h]`;
- under perfect learning with a stochastic continuation the P-GRAFT target after one round is
  `q_t ∝ p̄(x_0) E[h(Y) | X_0 = x_0]` (§2); after `rounds` rounds it is `exact.ExactChain`'s (rounds
  compound). Its expected reward, and its total variation distance and `KL(q_GRAFT ‖ q_t)` to the GRAFT
  target after as many rounds.

Below half a grid cell of blur the grid cannot resolve `s`; the curves take their `t → 0` limits there
(`V = 0`, `B = Var r`, `D` and the target of GRAFT).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from pgraft.core.acceptance import AcceptanceRule
from pgraft.core.events import checkpoint
from pgraft.core.process import NoiseProcess
from pgraft.domains.toy2d.exact import ExactChain, Grid2D, SeparableBlur, acceptance_on_grid, tilt_kl_on_grid
from pgraft.domains.toy2d.mixture import GaussianMixture, get_dataset
from pgraft.rewards import Reward

Y_POINTS_PER_STD = 5  # y-grid points per blur std: sums over the Gaussian kernel are then exact to ~1e-9

EXACT_COLUMNS = (
    "cutoff",
    "timestep",
    "noise_to_signal",
    "V",
    "B",
    "R2",
    "D",
    "pgraft_reward",
    "graft_reward",
    "base_reward",
    "tv_to_graft",
    "kl_graft_to_pgraft",
    "rounds",
)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """`KL(p ‖ q)` of two mass vectors (0 log 0 = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.where(p > 0, p * np.log(p / q), 0.0).sum())


class ExactCurves:
    """The exact curves of one mixture, reward and rule, at any noise-to-signal ratio."""

    def __init__(
        self,
        mixture: GaussianMixture,
        reward: Reward,
        rule: AcceptanceRule,
        grid: Grid2D | None = None,
        rounds: int = 1,
    ) -> None:
        self.mixture, self.reward, self.rule, self.rounds = mixture, reward, rule, rounds
        self.chain = ExactChain(mixture, reward, rule, 0.0, grid)  # GRAFT's; its grid, rewards and base serve all
        self.grid, self.r, self.p = self.chain.grid, self.chain.rewards, self.chain.base
        self.a = acceptance_on_grid(rule, self.p, self.r)
        self.mean_r = float((self.p * self.r).sum())
        self.var_r = float((self.p * self.r**2).sum() - self.mean_r**2)
        self.graft = self.chain.target(rounds)

    def target(self, s: float) -> np.ndarray:
        """The perfect-learning P-GRAFT target after `rounds` rounds at ratio `s` (GRAFT's below the grid)."""
        return self.chain.at_noise(s, y_spacing=s / Y_POINTS_PER_STD).target(self.rounds)

    def at(self, s: float) -> dict[str, float]:
        """V, B, R², D and the perfect-learning P-GRAFT target's reward and distance to GRAFT at ratio `s`."""
        blur = SeparableBlur.for_grid(self.grid, s, y_spacing=s / Y_POINTS_PER_STD)
        if blur is None:
            return self._row(0.0, self.var_r, tilt_kl_on_grid(self.rule, self.p, self.r), self.graft)
        fields = blur.forward(np.stack([self.p, self.p * self.r, self.p * self.r**2, self.p * self.a]))
        den = fields[0]
        keep = den > 1e-300
        safe = np.where(keep, den, 1.0)
        m1, m2, h = (np.where(keep, f / safe, 0.0) for f in fields[1:])
        pc = den / den.sum()
        v = float((pc * (m2 - m1**2)).sum())
        b = float((pc * m1**2).sum() - (pc * m1).sum() ** 2)
        h_mean = float((pc * h).sum())
        if h_mean <= 0:
            raise ValueError("--rule: no reward on the grid is ever accepted, so the tilt is undefined")
        w = h / h_mean
        with np.errstate(divide="ignore", invalid="ignore"):
            d = float((pc * np.where(w > 0, w * np.log(w), 0.0)).sum())
        return self._row(v, b, d, self.target(s))

    def _row(self, v: float, b: float, d: float, target: np.ndarray) -> dict[str, float]:
        return {
            "V": v,
            "B": b,
            "R2": b / (b + v) if b + v > 0 else float("nan"),
            "D": d,
            "pgraft_reward": float((target * self.r).sum()),
            "graft_reward": float((self.graft * self.r).sum()),
            "base_reward": self.mean_r,
            "tv_to_graft": 0.5 * float(np.abs(target - self.graft).sum()),
            "kl_graft_to_pgraft": _kl(self.graft, target),
            "rounds": self.rounds,
        }


def exact_curves(
    mixture: GaussianMixture,
    reward: Reward,
    rule: AcceptanceRule,
    process: NoiseProcess,
    timesteps: Sequence[float],
    grid: Grid2D | None = None,
    rounds: int = 1,
) -> pd.DataFrame:
    """One row per timestep (the model's own units): cutoff fraction, `s`, and the exact curves; the targets
    are those after `rounds` rounds."""
    curves = ExactCurves(mixture, reward, rule, grid, rounds)
    rows = []
    for ts in timesteps:
        checkpoint()
        s = process.noise_to_signal(float(ts))
        rows.append(
            {"cutoff": process.fraction(float(ts)), "timestep": float(ts), "noise_to_signal": s, **curves.at(s)}
        )
    return pd.DataFrame(rows, columns=list(EXACT_COLUMNS))


def model_curves(
    model: Any, reward: Reward, rule: AcceptanceRule, timesteps: Sequence[float], rounds: int = 1
) -> pd.DataFrame:
    """`exact_curves` of a toy base model's true mixture, on its own process (the domain's `exact_curves`)."""
    mixture = get_dataset(str(model.info.get("dataset", "ring8")))
    return exact_curves(mixture, reward, rule, model.process, timesteps, rounds=rounds)


__all__ = ["ExactCurves", "exact_curves", "model_curves"]
