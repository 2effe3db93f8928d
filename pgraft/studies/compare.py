"""GRAFT, P-GRAFT, DDPO and best-of-n sampling at matched budgets: the paper's comparison, on problems whose
answer is known.

Every run is the round runner on one base config with only `method` and `seed` changed; the rounds come
from the budget of reward calls (`--budget-reward-calls`: candidates and preview, over all rounds, round 0
included), so every method of a budget spends the same reward calls by construction, and the table shows
what each spent (`reward_calls_total`, network evaluations `nfe_total`, seconds) rather than assuming it.

Per round it records the reward of what the method delivers (its samples; for best-of-n sampling the best of
each n), the domain's realism figure (`loglik` under the true mixture on the toy, the Fréchet distance
`fid_real` on digits), and on the toy the total-variation distance to the exact target of the round
(`tv_to_target`: GRAFT's best-of-n chain for GRAFT, DDPO and best-of-n sampling, the P-GRAFT target for
P-GRAFT). `summary` averages the final rounds over seeds, with standard errors.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pgraft.core.events import Cancelled, Finished, Progress
from pgraft.graft.config import METHODS, RunConfig
from pgraft.graft.runner import RoundResult, RoundRunner
from pgraft.registry import domain_of

COLUMNS = ("reward", "realism", "tv_to_target", "reward_calls_total", "nfe_total", "seconds")


@dataclass(frozen=True)
class CompareSpec:
    methods: tuple[str, ...]
    budgets: tuple[int, ...]
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"--methods: {bad or self.methods!r} is invalid; choose from {', '.join(METHODS)}")
        if not self.budgets or any(not isinstance(b, int) or b < 1 for b in self.budgets):
            raise ValueError(f"--budget-reward-calls: {self.budgets!r} is invalid; give whole numbers >= 1")
        if not self.seeds:
            raise ValueError("--seeds: give at least one seed")


def rounds_for(config: RunConfig, budget: int) -> int:
    """The rounds after the base that a budget of reward calls pays for (each round scores its candidates
    and its preview, for every prompt)."""
    per_round = (config.samples + config.preview) * max(1, len(config.prompts))
    rounds = budget // per_round - 1
    if rounds < 1:
        raise ValueError(
            f"--budget-reward-calls: {budget} pays for {budget // per_round} round(s) of {per_round} reward calls; "
            f"give at least {2 * per_round} (the base round and one more), or fewer --samples"
        )
    return rounds


@dataclass(frozen=True)
class CompareRow:
    row: dict[str, Any]


@dataclass(frozen=True)
class CompareFinished(Finished):
    table: pd.DataFrame
    summary: pd.DataFrame


CompareEvent = Progress | CompareRow | CompareFinished | Cancelled


def _row(
    method: str, budget: int, seed: int, result: RoundResult, metric: str | None, seconds: float
) -> dict[str, Any]:
    m = result.metrics
    delivered = m["accepted_reward_mean"] if method == "bon-sampling" else m["reward_mean"]
    return {
        "method": method,
        "budget": budget,
        "seed": seed,
        "round": result.round,
        "reward": float(delivered),
        "realism_metric": metric or "",
        "realism": float(m[metric]) if metric and metric in m else math.nan,
        "tv_to_target": float(m.get("tv_to_target", math.nan)),
        "reward_calls_total": int(m["reward_calls_total"]),
        "nfe_total": int(m["nfe_total"]),
        "seconds": round(seconds, 3),
    }


def compare_iter(
    base: RunConfig, spec: CompareSpec, should_stop: Callable[[], bool] | None = None, allow_import: bool = False
) -> Generator[CompareEvent, None, None]:
    stop = should_stop or (lambda: False)
    realism = domain_of(base.model).realism
    metric = realism.metric if realism is not None else None
    rows: list[dict[str, Any]] = []
    for budget in spec.budgets:
        rounds = rounds_for(base, budget)
        for method in spec.methods:
            for seed in spec.seeds:
                changes: dict[str, Any] = {"method": method, "seed": seed, "rounds": rounds}
                if method != "pgraft":
                    changes.update(cutoff=RunConfig.cutoff, anchoring=RunConfig.anchoring)
                config = base.replace(**changes)
                start = time.perf_counter()
                runner = RoundRunner(config, should_stop=stop, allow_import=allow_import)
                for ev in runner.run():
                    if isinstance(ev, Progress):
                        yield ev.within(method=method, seed=seed, budget=budget)
                    elif isinstance(ev, RoundResult):
                        row = _row(method, budget, seed, ev, metric, time.perf_counter() - start)
                        rows.append(row)
                        yield CompareRow(row)
                    elif isinstance(ev, Cancelled):
                        yield ev
                        return
    table = pd.DataFrame(rows)
    yield CompareFinished(table, summarise(table))


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """The final round of every run, averaged over seeds: mean and standard error of each figure."""
    if table.empty:
        return pd.DataFrame()
    last = table.loc[table.groupby(["method", "budget", "seed"])["round"].idxmax()]
    out = []
    for (budget, method), g in last.groupby(["budget", "method"], sort=False):
        row: dict[str, Any] = {"budget": budget, "method": method, "seeds": len(g), "rounds": int(g["round"].max())}
        for c in COLUMNS:
            values = g[c].astype(float)
            row[c] = float(values.mean())
            if c in ("reward", "realism", "tv_to_target"):
                row[f"{c}_se"] = float(values.std(ddof=1) / math.sqrt(len(g))) if len(g) > 1 else math.nan
        out.append(row)
    order = {m: i for i, m in enumerate(METHODS)}
    return pd.DataFrame(out).sort_values(["budget", "method"], key=lambda s: s.map(order) if s.name == "method" else s)


def compare_figure(table: pd.DataFrame) -> Any:
    """Reward against realism per round (means over seeds), one line per method and budget; and reward
    against reward calls."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("reward vs realism, per round", "reward vs reward calls"))
    metric = str(table["realism_metric"].iloc[0]) if len(table) else ""
    means = table.groupby(["method", "budget", "round"], sort=False).agg(
        reward=("reward", "mean"), realism=("realism", "mean"), calls=("reward_calls_total", "mean"),
        reward_se=("reward", "sem"),
    ).reset_index()  # fmt: skip
    for (method, budget), g in means.groupby(["method", "budget"], sort=False):
        name = f"{method} (budget {budget:,})"
        fig.add_scatter(x=g["realism"], y=g["reward"], mode="lines+markers", name=name, legendgroup=name,
                        text=[f"round {r}" for r in g["round"]], row=1, col=1)  # fmt: skip
        fig.add_scatter(x=g["calls"], y=g["reward"], mode="lines+markers", name=name, legendgroup=name,
                        showlegend=False, error_y={"type": "data", "array": g["reward_se"].fillna(0)},
                        row=1, col=2)  # fmt: skip
    fig.update_xaxes(title_text=metric or "realism", row=1, col=1)
    fig.update_xaxes(title_text="reward calls so far", row=1, col=2)
    fig.update_yaxes(title_text="mean reward delivered", row=1, col=1)
    fig.update_layout(title="GRAFT, P-GRAFT, DDPO and best-of-n sampling at matched reward calls")
    return fig


def write_compare(table: pd.DataFrame, summary: pd.DataFrame, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"rounds": out / "compare.csv", "summary": out / "summary.csv", "plot": out / "compare.html"}
    table.to_csv(files["rounds"], index=False)
    summary.to_csv(files["summary"], index=False)
    compare_figure(table).write_html(files["plot"], include_plotlyjs=True, full_html=True)
    return files


def format_summary(summary: pd.DataFrame, columns: Sequence[str] = ("reward", "realism", "tv_to_target")) -> str:
    """A Markdown table of the summary (mean ± standard error)."""
    head = ["budget", "method", "rounds", *columns, "nfe_total", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary.to_dict("records"):
        cells = [f"{r['budget']:,}", r["method"], str(r["rounds"])]
        for c in columns:
            se = r.get(f"{c}_se", math.nan)
            if math.isnan(r[c]):
                cells.append("—")
            else:
                cells.append(f"{r[c]:.3f}" + (f" ± {se:.3f}" if not math.isnan(se) else ""))
        cells += [f"{r['nfe_total']:,.0f}", f"{r['seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
