"""Time round 1 of a run by part (shared by the round benchmarks): the median over repeats of each part the
runner records, and the whole round (the run's time less round 0's parts: model loading and the exact
reference are set-up, not round time)."""

from __future__ import annotations

import statistics
import time

from pgraft.graft.config import RunConfig
from pgraft.graft.runner import RoundRunner, run_to_end

PARTS = ("time_finetune", "time_sampling", "time_scoring", "time_acceptance", "time_metrics")


def round_parts(cfg: RunConfig, repeats: int) -> dict[str, float]:
    runner = RoundRunner(cfg)
    rows: dict[str, list[float]] = {p: [] for p in (*PARTS, "round_total")}
    for _ in range(repeats):
        t0 = time.perf_counter()
        results = run_to_end(runner)
        total = time.perf_counter() - t0
        m0, m1 = results[0].metrics, results[1].metrics
        for p in PARTS:
            rows[p].append(m1.get(p, 0.0))
        rows["round_total"].append(total - sum(m0.get(p, 0.0) for p in PARTS))
    return {p.removeprefix("time_"): statistics.median(values) for p, values in rows.items()}


def print_parts(parts: dict[str, float], decimals: int = 2) -> None:
    print(f"{'part':<18}{'seconds':>10}")
    for part, seconds in parts.items():
        print(f"{part:<18}{seconds:>10.{decimals}f}")
