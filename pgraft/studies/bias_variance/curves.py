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

`curve_iter` runs the whole curve for a `RunSetup` (the same set-up the round runner builds) and yields
one row per cutoff as soon as its continuations finish.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from pgraft.core.acceptance import AcceptanceRule
from pgraft.core.process import NoiseProcess
from pgraft.core.sampling import SamplingProgress, handoff_index, inference_timesteps
from pgraft.graft.runner import RunSetup
from pgraft.rewards import score
from pgraft.studies.bias_variance.continuations import LevelSamples, nested_samples_iter

QUANTITIES = ("V", "B", "R2", "D")


@dataclass(frozen=True)
class CurveSpec:
    """What to estimate: the cutoff grid, `M` states per cutoff, `R` continuations per state, the bands."""

    cutoffs: tuple[float, ...]
    states: int = 256
    continuations: int = 8
    bootstrap: int = 1000
    level: float = 0.95

    def __post_init__(self) -> None:
        if not self.cutoffs:
            raise ValueError("--cutoffs: give at least one cutoff in (0, 1)")
        for c in self.cutoffs:
            if not isinstance(c, int | float) or not 0.0 < float(c) < 1.0:
                raise ValueError(f"--cutoffs: {c!r} is invalid; every cutoff must lie strictly between 0 and 1")
        for flag, value, low in (("states", self.states, 2), ("continuations", self.continuations, 2)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"--{flag}: {value!r} is invalid; it must be an integer >= {low}")
        if not isinstance(self.bootstrap, int) or self.bootstrap < 10:
            raise ValueError(f"--bootstrap: {self.bootstrap!r} is invalid; it must be an integer >= 10")
        if not 0.5 < self.level < 1.0:
            raise ValueError(f"--level: {self.level!r} is invalid; the band's level must lie in (0.5, 1)")


@dataclass(frozen=True)
class CurveProgress:
    done: int
    total: int
    stage: str


@dataclass(frozen=True)
class CurvePoint:
    """One finished cutoff: a row of the curve table (estimates, bands, grid position, sizes)."""

    row: dict[str, Any]


@dataclass(frozen=True)
class CurveCancelled:
    table: pd.DataFrame


@dataclass(frozen=True)
class CurveFinished:
    table: pd.DataFrame


CurveEvent = CurveProgress | CurvePoint | CurveCancelled | CurveFinished


def check_stochastic_continuation(process: NoiseProcess, eta: float) -> None:
    """Refuse a continuation that is not ancestral: `V` would be 0 (deterministic) or too small (eta < 1)."""
    if not process.stochastic_samplers:
        raise ValueError(
            f"--model: a {process.kind} model has no stochastic sampler here, so every continuation from a state "
            "would be the same path and V(t) = E[Var(r | X_t)] would be 0; the bias-variance curves need a "
            "DDPM model (ancestral continuations)"
        )
    if eta != 1.0:
        raise ValueError(
            f"--eta: {eta:g} gives a continuation that is partly (eta = 0: fully) deterministic, so V(t) = "
            "E[Var(r | X_t)] would be underestimated (0 at eta = 0); use --sampler ddpm or --eta 1 "
            "(DDPM ancestral continuations)"
        )


def grid_levels(process: NoiseProcess, num_inference_steps: int, cutoffs: Sequence[float]) -> list[int]:
    """The handoff index of each cutoff on the sampler's grid; refuses a cutoff with no base step below it."""
    timesteps = inference_timesteps(process, num_inference_steps)
    levels = [handoff_index(timesteps, process, c) for c in cutoffs]
    for c, k in zip(cutoffs, levels):
        if k >= len(timesteps):
            raise ValueError(
                f"--cutoffs: {c:g} lies below every step of the {num_inference_steps}-step grid (lowest "
                f"t = {float(timesteps[-1]) / process.num_train_timesteps:.4f}), so nothing is left to continue; "
                "raise it or use more --num-inference-steps"
            )
    return levels


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


def curve_iter(
    setup: RunSetup, spec: CurveSpec, should_stop: Callable[[], bool] | None = None
) -> Generator[CurveEvent, None, None]:
    """Estimate the curves of `setup`'s base model, reward and rule on `spec`'s cutoffs.

    Uses `setup.config.num_inference_steps`, `effective_eta` (must be 1) and `seed`. States are assigned
    to the prompts of a prompted model in turn. Yields progress, one `CurvePoint` per cutoff as it
    finishes (cutoffs nearest the data first), then `CurveFinished` (or `CurveCancelled` when
    `should_stop()` turns true) with the table sorted by cutoff.
    """
    cfg, base = setup.config, setup.base
    check_stochastic_continuation(base.process, cfg.effective_eta)
    levels = grid_levels(base.process, cfg.num_inference_steps, spec.cutoffs)
    strata = np.arange(spec.states) % max(1, len(setup.prompts))
    cond = setup.cond[torch.from_numpy(strata)] if setup.cond is not None else None
    stop = should_stop or (lambda: False)
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    sampler = nested_samples_iter(
        base, levels, spec.states, spec.continuations, cfg.num_inference_steps, cfg.seed, cond
    )
    for ev in sampler:
        if isinstance(ev, SamplingProgress):
            yield CurveProgress(ev.done, ev.total, ev.stage)
            if stop():
                sampler.close()
                yield CurveCancelled(_table(rows))
                return
            continue
        for cutoff in (c for c, k in zip(spec.cutoffs, levels) if k == ev.k):
            row = _level_row(setup, spec, ev, strata, cutoff)
            row["seconds"] = round(time.perf_counter() - start, 3)
            rows.append(row)
            yield CurvePoint(row)
    yield CurveFinished(_table(rows))


def _level_row(
    setup: RunSetup, spec: CurveSpec, level: LevelSamples, strata: np.ndarray, cutoff: float
) -> dict[str, Any]:
    m, r = spec.states, spec.continuations
    prompts = [setup.prompts[s] for s in np.repeat(strata, r)] if setup.prompts else None
    flat = level.samples.reshape(m * r, *level.samples.shape[2:])
    rewards = score(setup.reward, flat, prompts).numpy().reshape(m, r)
    accept = acceptance_probabilities(setup.rule, rewards, strata)
    process = setup.base.process
    est = estimate(rewards, accept, strata, spec.bootstrap, spec.level, seed=setup.config.seed * 7 + level.k)
    return {
        "cutoff": float(cutoff),
        "cutoff_effective": process.fraction(level.timestep),
        "timestep": level.timestep,
        "noise_to_signal": process.noise_to_signal(level.timestep),
        **est,
        "reward_mean": float(rewards.mean()),
        "reward_var": float(rewards.var(ddof=1)),
        "accept_mean": float(accept.mean()),
        "states": m,
        "continuations": r,
        "level": spec.level,
    }


def _table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame(columns=["cutoff", *QUANTITIES])
    return pd.DataFrame(rows).sort_values("cutoff", kind="stable").reset_index(drop=True)


def run_curves(setup: RunSetup, spec: CurveSpec, should_stop: Callable[[], bool] | None = None) -> pd.DataFrame:
    """`curve_iter` run to the end: the table of the finished cutoffs."""
    table = _table([])
    for ev in curve_iter(setup, spec, should_stop):
        if isinstance(ev, CurveFinished | CurveCancelled):
            table = ev.table
    return table
