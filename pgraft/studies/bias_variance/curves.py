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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from pgraft.core.events import Cancelled, Finished, Progress, Stopped, relay
from pgraft.core.process import NoiseProcess
from pgraft.core.sampling import handoff_index, inference_timesteps
from pgraft.graft.setup import RunSetup
from pgraft.rewards import score
from pgraft.studies.bias_variance.continuations import LevelSamples, nested_samples_iter
from pgraft.studies.bias_variance.estimators import (  # noqa: F401  (the estimators' public names, here too)
    acceptance_probabilities,
    estimate,
    mid_rank_quantiles,
)

QUANTITIES = ("V", "B", "R2", "D")


@dataclass(frozen=True)
class CurveSpec:
    """What to estimate: the cutoff grid, `M` states per cutoff, `R` continuations per state, the bands."""

    cutoffs: tuple[float, ...] = field(
        metadata={
            "help": "cutoffs t in (0, 1), snapped to the sampler's grid (default: the model's domain's)",
            "ui": {"widget": "textbox", "label": "Cutoffs t in (0, 1)", "info": "snapped to the sampler's grid"},
        }
    )
    states: int = field(
        default=256,
        metadata={
            "help": "M: base states per cutoff (>= 2)",
            "ui": {
                "widget": "slider",
                "label": "M: base states per cutoff",
                "minimum": 16,
                "maximum": 1024,
                "step": 16,
            },
        },
    )
    continuations: int = field(
        default=8,
        metadata={
            "help": "R: stochastic continuations per state (>= 2)",
            "ui": {
                "widget": "slider",
                "label": "R: ancestral continuations per state",
                "minimum": 2,
                "maximum": 32,
                "step": 1,
            },
        },
    )
    bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples of the states for the bands"})
    level: float = field(default=0.95, metadata={"help": "confidence level of the bands, in (0.5, 1)"})

    def __post_init__(self) -> None:
        if not self.cutoffs:
            raise ValueError("--cutoffs: give at least one cutoff in (0, 1)")
        for c in self.cutoffs:
            if not isinstance(c, int | float) or isinstance(c, bool) or not 0.0 < float(c) < 1.0:
                raise ValueError(f"--cutoffs: {c!r} is invalid; every cutoff must lie strictly between 0 and 1")
        repeated = sorted({float(c) for c in self.cutoffs if list(self.cutoffs).count(c) > 1})
        if repeated:
            raise ValueError(f"--cutoffs: {repeated} given more than once; give each cutoff once")
        for flag, value, low in (("states", self.states, 2), ("continuations", self.continuations, 2)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"--{flag}: {value!r} is invalid; it must be an integer >= {low}")
        if not isinstance(self.bootstrap, int) or self.bootstrap < 10:
            raise ValueError(f"--bootstrap: {self.bootstrap!r} is invalid; it must be an integer >= 10")
        if not 0.5 < self.level < 1.0:
            raise ValueError(f"--level: {self.level!r} is invalid; the band's level must lie in (0.5, 1)")


@dataclass(frozen=True)
class CurvePoint:
    """One finished cutoff: a row of the curve table (estimates, bands, grid position, sizes)."""

    row: dict[str, Any]


@dataclass(frozen=True)
class CurveCancelled(Cancelled):
    """Stopped: the table of the cutoffs that finished."""

    table: pd.DataFrame


@dataclass(frozen=True)
class CurveFinished(Finished):
    table: pd.DataFrame


CurveEvent = Progress | CurvePoint | CurveCancelled | CurveFinished


def check_stochastic_continuation(process: NoiseProcess, eta: float) -> None:
    """Refuse a continuation that is not ancestral: `V` would be 0 (deterministic) or too small (eta < 1)."""
    if not process.stochastic_samplers:
        raise ValueError(
            f"--model: a {process.kind} model has no stochastic sampler here, so every continuation from a state "
            "would be the same path and V(t) = E[Var(r | X_t)] would be 0; the bias-variance curves need a "
            "model with a stochastic sampler"
        )
    if eta != 1.0:
        raise ValueError(
            f"--eta: {eta:g} gives a continuation that is partly (eta = 0: fully) deterministic, so V(t) = "
            "E[Var(r | X_t)] would be underestimated (0 at eta = 0); use --sampler ddpm or --eta 1 "
            "(DDPM ancestral continuations, or the flow's posterior chain)"
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
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    sampler = nested_samples_iter(
        base, levels, spec.states, spec.continuations, cfg.num_inference_steps, cfg.seed, cond
    )
    try:
        for ev in relay(sampler, should_stop):
            if isinstance(ev, Progress):
                yield ev
                continue
            for cutoff in (c for c, k in zip(spec.cutoffs, levels) if k == ev.k):
                row = _level_row(setup, spec, ev, strata, cutoff)
                row["seconds"] = round(time.perf_counter() - start, 3)
                rows.append(row)
                yield CurvePoint(row)
                if should_stop is not None and should_stop():  # several cutoffs can share a grid level
                    raise Stopped
    except Stopped:
        yield CurveCancelled(_table(rows))
        return
    yield CurveFinished(_table(rows))


def _level_row(
    setup: RunSetup, spec: CurveSpec, level: LevelSamples, strata: np.ndarray, cutoff: float
) -> dict[str, Any]:
    m, r = spec.states, spec.continuations
    prompts = [setup.prompts[s] for s in np.repeat(strata, r)] if setup.prompts else None
    flat = level.samples.reshape(m * r, *level.samples.shape[2:])
    scored = score(setup.reward, setup.base.decode(flat), prompts)
    rewards = scored.numpy().reshape(m, r)
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
