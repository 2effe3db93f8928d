"""The end-to-end cutoff sweep (docs/method.md §3.4): one P-GRAFT run per cutoff, all with the same budget.

Every run is the round runner (`rounds.RoundRunner`) on the same `RunConfig` with only `method` and
`cutoff` changed, so the candidates per round, the rounds, the fine-tuning steps and batch size, the
model, its capacity and the seeds are equal by construction; the sweep also *counts* what each run spent
(candidates drawn, reward calls, fine-tuning steps, trainable parameters) from the runner's own events,
so the table shows the budget was equal rather than assuming it. Cutoff 0 is GRAFT (`method="graft"`).

Each row reports the final round's mean reward and a realism metric of the domain (`loglik` on the toy,
higher is better; `fid_real` on digits, lower is better), as its loss against round 0 (the base model,
drawn from the same seeds in every run). The recommended cutoff is the one with the best final reward
among those whose realism loss stays within a bound (`max_realism_loss`, in the metric's own units).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pgraft.core.events import Cancelled, Finished, Progress
from pgraft.domains.base import Realism
from pgraft.graft.config import RunConfig
from pgraft.graft.runner import RoundResult, RoundRunner
from pgraft.graft.setup import build_setup
from pgraft.registry import DOMAINS, domain_of

BUDGET_COLUMNS = ("candidates", "reward_calls", "finetune_steps", "trainable_params", "rounds", "seed")


@dataclass(frozen=True)
class SweepSpec:
    """The cutoffs to run (GRAFT at cutoff 0 is added when `include_graft`), and the realism bound."""

    cutoffs: tuple[float, ...]
    include_graft: bool = True
    max_realism_loss: float | None = None

    def __post_init__(self) -> None:
        if not self.cutoffs:
            raise ValueError("--cutoffs: give at least one cutoff in (0, 1)")
        for c in self.cutoffs:
            if not isinstance(c, int | float) or isinstance(c, bool) or not 0.0 < float(c) < 1.0:
                raise ValueError(f"--cutoffs: {c!r} is invalid; every cutoff must lie strictly between 0 and 1")
        repeated = sorted({float(c) for c in self.cutoffs if list(self.cutoffs).count(c) > 1})
        if repeated:
            raise ValueError(f"--cutoffs: {repeated} given more than once; give each cutoff once")
        if self.max_realism_loss is not None and not self.max_realism_loss >= 0:
            raise ValueError(f"--max-realism-loss: {self.max_realism_loss!r} is invalid; it must be >= 0")

    @property
    def points(self) -> list[float]:
        return ([0.0] if self.include_graft else []) + sorted({float(c) for c in self.cutoffs})


@dataclass(frozen=True)
class SweepPoint:
    row: dict[str, Any]


@dataclass(frozen=True)
class Recommendation:
    """The recommended cutoff (0 = GRAFT), what it reached, and the budget it was measured at."""

    cutoff: float
    final_reward: float
    realism_metric: str | None
    realism_loss: float | None
    bound: float | None
    within_bound: bool
    budget: dict[str, int] = field(default_factory=dict)
    row: Any = None
    """The index of the recommended row in the table given to `recommend`."""

    def describe(self) -> str:
        where = "GRAFT (cutoff 0)" if self.cutoff == 0 else f"cutoff {self.cutoff:g}"
        budget = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in self.budget.items())
        if self.realism_metric is None:
            return f"{where}: best final reward {self.final_reward:.4g} (no realism metric) at {budget}"
        loss = f"{self.realism_metric} loss {self.realism_loss:.3g}"
        if not self.within_bound:
            return (
                f"{where}: no cutoff kept the {self.realism_metric} loss within {self.bound:g}; this one lost "
                f"least ({loss}), final reward {self.final_reward:.4g}, at {budget}"
            )
        return f"{where}: best final reward {self.final_reward:.4g} with {loss} <= {self.bound:g}, at {budget}"


@dataclass(frozen=True)
class SweepCancelled(Cancelled):
    """Stopped: the rows of the cutoffs that finished."""

    table: pd.DataFrame


@dataclass(frozen=True)
class SweepFinished(Finished):
    table: pd.DataFrame
    recommendation: Recommendation | None


SweepEvent = Progress | SweepPoint | SweepCancelled | SweepFinished


def realism_of(metric: str) -> Realism | None:
    """The realism description of a metrics column (from the domain that declares it)."""
    return next((d.realism for d in DOMAINS.values() if d.realism is not None and d.realism.metric == metric), None)


def _trainable_params(base: Any) -> int:
    return sum(p.numel() for p in base.trainable_copy().trainable_parameters())


def sweep_iter(
    config: RunConfig,
    spec: SweepSpec,
    should_stop: Callable[[], bool] | None = None,
    allow_import: bool = False,
    base: Any | None = None,
) -> Generator[SweepEvent, None, None]:
    """Run one full run per cutoff of `spec.points` and yield a row as each finishes, then the recommendation."""
    stop = should_stop or (lambda: False)
    points = spec.points
    base = base or build_setup(config.replace(method="graft"), allow_import=allow_import).base
    params = _trainable_params(base)
    rows: list[dict[str, Any]] = []
    for i, cutoff in enumerate(points):
        run_config = (
            config.replace(method="graft", cutoff=RunConfig.cutoff, anchoring=RunConfig.anchoring)
            if cutoff == 0
            else config.replace(method="pgraft", cutoff=cutoff)
        )
        setup = build_setup(run_config, allow_import=allow_import, base=base)
        runner = RoundRunner(run_config, should_stop=stop, setup=setup)
        results: list[RoundResult] = []
        steps: dict[int, int] = {}
        start = time.perf_counter()
        for ev in runner.run():
            if isinstance(ev, Progress):
                if ev.stage == "fine-tuning" and ev.round is not None:
                    steps[ev.round] = max(steps.get(ev.round, 0), ev.done)
                yield ev.within(cutoff=cutoff, run=f"{i + 1}/{len(points)}")
            elif isinstance(ev, RoundResult):
                results.append(ev)
            elif isinstance(ev, Cancelled):
                yield SweepCancelled(sweep_table(rows))
                return
        row = run_row(cutoff, run_config, results, sum(steps.values()), params, time.perf_counter() - start)
        rows.append(row)
        yield SweepPoint(row)
    table = sweep_table(rows)
    yield SweepFinished(table, recommend(table, spec.max_realism_loss))


def run_row(
    cutoff: float, config: RunConfig, results: Sequence[RoundResult], steps: int, params: int, seconds: float
) -> dict[str, Any]:
    first, last = results[0].metrics, results[-1].metrics
    realism = domain_of(config.model).realism
    metric = realism.metric if realism is not None and realism.metric in last else None
    row: dict[str, Any] = {
        "cutoff": cutoff,
        "method": config.method,
        "cutoff_effective": float(last.get("cutoff_effective", 0.0)),
        "base_reward": float(first["reward_mean"]),
        "final_reward": float(last["reward_mean"]),
        "target_reward": float(last["target_reward"]) if "target_reward" in last else float("nan"),
        "realism_metric": metric or "",
        "realism_base": float(first[metric]) if metric else float("nan"),
        "realism_final": float(last[metric]) if metric else float("nan"),
        "candidates": sum(len(r.samples) for r in results),
        "reward_calls": sum(len(r.samples) + len(r.preview_samples) for r in results),
        "finetune_steps": steps,
        "trainable_params": params,
        "rounds": len(results) - 1,
        "seed": config.seed,
        "seconds": round(seconds, 2),
    }
    sign = (1.0 if realism.higher_is_better else -1.0) if metric and realism else 0.0
    row["realism_loss"] = sign * (row["realism_base"] - row["realism_final"]) if metric else float("nan")
    return row


def sweep_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame(columns=["cutoff", "final_reward", "realism_loss", *BUDGET_COLUMNS])
    return pd.DataFrame(rows).sort_values("cutoff", kind="stable").reset_index(drop=True)


def recommend(table: pd.DataFrame, max_realism_loss: float | None = None) -> Recommendation | None:
    """Best final reward among the cutoffs whose realism loss is within the bound (the metric's default
    bound when `max_realism_loss` is None); when none is, the cutoff that lost least realism."""
    if table.empty:
        return None
    metric = str(table["realism_metric"].iloc[0]) or None
    bound = None
    if metric is None:
        best = table.iloc[int(table["final_reward"].to_numpy().argmax())]
        within = True
    else:
        realism = realism_of(metric)
        default = realism.bound if realism is not None else 0.0
        bound = default if max_realism_loss is None else float(max_realism_loss)
        ok = table[table["realism_loss"] <= bound]
        within = not ok.empty
        pool, column, pick = (ok, "final_reward", np.argmax) if within else (table, "realism_loss", np.argmin)
        best = pool.iloc[int(pick(pool[column].to_numpy(float)))]
    return Recommendation(
        cutoff=float(best["cutoff"]),
        final_reward=float(best["final_reward"]),
        realism_metric=metric,
        realism_loss=float(best["realism_loss"]) if metric else None,
        bound=bound,
        within_bound=within,
        budget={k: int(best[k]) for k in BUDGET_COLUMNS},
        row=best.name,
    )


def run_sweep(
    config: RunConfig, spec: SweepSpec, should_stop: Callable[[], bool] | None = None
) -> tuple[pd.DataFrame, Recommendation | None]:
    """`sweep_iter` run to the end."""
    table, rec = sweep_table([]), None
    for ev in sweep_iter(config, spec, should_stop):
        if isinstance(ev, SweepFinished):
            table, rec = ev.table, ev.recommendation
        elif isinstance(ev, SweepCancelled):
            table = ev.table
    return table, rec
