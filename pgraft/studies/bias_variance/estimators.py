"""Bias–variance estimators across cutoffs (docs/method.md §3.1–3.2), with bootstrap bands over groups.

From `M` base states at a cutoff `t` and `R ≥ 2` stochastic continuations each (`continuations.py`),
with rewards `r_ij` and acceptance probabilities `a_ij`:

- `V̂(t)` = mean over states of the unbiased within-group variance of `r`: estimates `E[Var(r | X_t)]`;
- `B̂(t)` = unbiased variance of the group means `− V̂/R`: estimates `Var(E[r | X_t])`;
- `R̂²(t) = B̂ / (B̂ + V̂)`;
- `D̂(t)`, the tilt size `KL(p̃_t ‖ p̄_t)`: with `ĥ_i` the mean of `a` over state `i`'s continuations and
  `w_i = ĥ_i / mean(ĥ)`, the plug-in `mean(w log w)` minus its second-order bias
  `mean(s_i² / (2 R ĥ_i)) / mean(ĥ)`, `s_i²` the unbiased within-group variance of `a` (§3.2). The
  correction is a Taylor expansion: it is accurate once `ĥ_i` is rarely far from `h_i`; for 0/1
  acceptances (threshold, quantile) that takes `R ≳ 16` (at `R = 4` it removes only half the bias).

`a = rule.acceptance(u, r)` with `u` the mid-rank of `r` in the base reward law, estimated from all
`M·R` continuation rewards of the same cutoff (they are draws from `p̄`: base state, base continuation),
per prompt for a prompted model. The bands are percentile bootstrap intervals over states (stratified by
prompt), with the CDF held fixed.

`curves.curve_iter` runs them over a grid of cutoffs.
"""

from __future__ import annotations

import numpy as np

from pgraft.core.acceptance import AcceptanceRule


def mid_rank_quantiles(rewards: np.ndarray) -> np.ndarray:
    """`u = F̂(r−) + P̂(r)/2` of every reward in the empirical law of the same rewards (ties share a mid-rank)."""
    flat = rewards.ravel()
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    mid = (np.cumsum(counts) - counts / 2) / len(flat)
    return mid[inverse].reshape(rewards.shape)


def acceptance_probabilities(rule: AcceptanceRule, rewards: np.ndarray, strata: np.ndarray) -> np.ndarray:
    """`a = rule.acceptance(u, r)` for `(M, R)` rewards, `u` from each stratum's (prompt's) own rewards."""
    a = np.empty_like(rewards, dtype=float)
    for s in np.unique(strata):
        r = rewards[strata == s]
        a[strata == s] = rule.acceptance(mid_rank_quantiles(r).ravel(), r.ravel()).reshape(r.shape)
    return a


def _tilt(h: np.ndarray, s2: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Plug-in and bias-corrected `KL(p̃ ‖ p̄)` along the last axis of state means `h` (§3.2)."""
    mean = h.mean(-1, keepdims=True)
    w = np.divide(h, mean, out=np.zeros_like(h), where=mean > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        plug = np.where(w > 0, w * np.log(w), 0.0).mean(-1)
        bias = np.where(h > 0, s2 / (2 * r * h), 0.0).mean(-1) / mean[..., 0]
    return plug, plug - bias


def _quantities(
    rm: np.ndarray, rv: np.ndarray, am: np.ndarray, av: np.ndarray, strata: np.ndarray, r: int
) -> dict[str, np.ndarray]:
    """V, B, R², D (and D's plug-in) from per-state statistics along the last axis."""
    v = rv.mean(-1)
    b = rm.var(-1, ddof=1) - v / r
    plug, corrected = [], []
    for s in np.unique(strata):
        p, c = _tilt(am[..., strata == s], av[..., strata == s], r)
        plug.append(p)
        corrected.append(c)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = b / (b + v)
    return {"V": v, "B": b, "R2": r2, "D": np.mean(corrected, 0), "D_plugin": np.mean(plug, 0)}


def estimate(
    rewards: np.ndarray,
    accept: np.ndarray,
    strata: np.ndarray | None = None,
    bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Estimates of V, B, R², D from `(M, R)` rewards and acceptance probabilities, with `_lo`/`_hi` bands.

    The bands resample states with replacement (within each stratum), `bootstrap` times.
    """
    m, r = rewards.shape
    strata = np.zeros(m, dtype=int) if strata is None else np.asarray(strata)
    stats = (rewards.mean(1), rewards.var(1, ddof=1), accept.mean(1), accept.var(1, ddof=1))
    point = _quantities(*stats, strata, r)
    rng = np.random.default_rng(seed)
    idx = np.empty((bootstrap, m), dtype=int)
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        idx[:, members] = rng.choice(members, size=(bootstrap, len(members)))
    rm, rv, am, av = (x[idx] for x in stats)
    boot = _quantities(rm, rv, am, av, strata, r)
    tail = 100 * (1 - level) / 2
    out: dict[str, float] = {}
    for name, value in point.items():
        out[name] = float(value)
        lo, hi = np.nanpercentile(boot[name], [tail, 100 - tail])
        out[f"{name}_lo"], out[f"{name}_hi"] = float(lo), float(hi)
    return out
