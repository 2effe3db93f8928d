"""Figures of a GRAFT / P-GRAFT run: reward histograms, the rule's implied reshaping, per-round curves.

Pure functions from numbers to plotly figures (docs/method.md §1): the app, notebooks and scripts draw
the same pictures. Nothing here imports gradio or touches a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pgraft.core.acceptance import AcceptanceRule, Quantile, Threshold, implied_kl, reshaped_reward
from pgraft.plots.style import ACCEPT_COLOR, BASE_COLOR, ROUND_COLOR, TARGET_COLOR, style, subtitle, wrap_title


def robust_range(values: np.ndarray, tail: float = 0.005) -> tuple[float, float]:
    """A view range that ignores the outer `tail` of each side, so a few wild samples do not flatten the rest."""
    v = np.asarray(values, dtype=float)
    lo, hi = (float(x) for x in np.quantile(v, [tail, 1 - tail]))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.04 * (hi - lo)
    return lo - pad, hi + pad


def acceptance_cut(rule: AcceptanceRule, rewards: np.ndarray, accepted: np.ndarray) -> float | None:
    """The reward above which everything is accepted, for rules that have one (threshold, quantile)."""
    if isinstance(rule, Threshold):
        return rule.threshold
    if isinstance(rule, Quantile) and accepted.any():
        return float(np.min(np.asarray(rewards)[np.asarray(accepted, dtype=bool)]))
    return None


def reward_histogram(
    base_rewards: np.ndarray,
    rewards: np.ndarray,
    accepted: np.ndarray,
    round_index: int,
    cut: float | None = None,
    rule_text: str = "",
    bins: int = 40,
) -> go.Figure:
    """Rewards of round 0 (the base) and of this round, each as a fraction of its batch, and the accepted part.

    Values beyond the view (the outer 0.5 % on each side) are counted in the edge bins, so no mass is hidden.
    """
    base = np.asarray(base_rewards, dtype=float)
    cur = np.asarray(rewards, dtype=float)
    acc = np.asarray(accepted, dtype=bool)
    lo, hi = robust_range(np.concatenate([base, cur]))
    edges = np.linspace(lo, hi, bins + 1)
    centres, width = (edges[1:] + edges[:-1]) / 2, edges[1] - edges[0]

    def fraction(v: np.ndarray, total: int) -> np.ndarray:
        return np.histogram(np.clip(v, lo, hi), edges)[0] / max(total, 1)

    fig = go.Figure()
    if round_index > 0:
        fig.add_bar(x=centres, y=fraction(base, len(base)), width=width, name="base (round 0)", marker_color=BASE_COLOR)
    fig.add_bar(
        x=centres, y=fraction(cur, len(cur)), width=width, name=f"round {round_index}", marker_color=ROUND_COLOR
    )
    share = acc.mean() if len(acc) else 0.0
    fig.add_bar(
        x=centres,
        y=fraction(cur[acc], len(cur)),
        width=width,
        name=f"accepted: {100 * share:.3g} % ({int(acc.sum())})",
        marker_color=ACCEPT_COLOR,
    )
    fig.update_traces(opacity=0.6, marker_line_width=0)
    if cut is not None and lo <= cut <= hi:
        fig.add_vline(x=cut, line_dash="dash", line_color="#333", annotation_text=f"cut {cut:.3g}")
    fig.update_layout(barmode="overlay", bargap=0)
    fig.update_xaxes(title_text="reward")
    fig.update_yaxes(title_text="fraction of the batch")
    title = f"Rewards, round {round_index}" + (subtitle(rule_text) if rule_text else "")
    return style(fig, title, 360)


def rule_reshaping(rule: AcceptanceRule, rewards: np.ndarray | None, source: str = "", points: int = 400) -> go.Figure:
    """`a(u)` and the reshaped reward `log a(u)` against the reward quantile `u`, with the rule's KL.

    Accepted samples follow `p a / E[a]`: GRAFT maximises `E[log a] − KL` (docs/method.md §1). The rewards set
    the quantile function `r(u)` that value-based rules (threshold, soft) need; rank rules ignore it.
    """
    u = (np.arange(points) + 0.5) / points
    r = np.quantile(np.asarray(rewards, dtype=float), u) if rewards is not None and len(rewards) else u
    a = rule.acceptance(u, r)
    log_a = reshaped_reward(rule, u, r)
    finite = np.isfinite(log_a)
    kl = implied_kl(rule, u, r)
    exact = rule.kl_exact()
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.22)
    fig.add_scatter(x=u, y=a, mode="lines", fill="tozeroy", line_color=ACCEPT_COLOR, name="a(u)", row=1, col=1)
    fig.add_scatter(x=u[finite], y=log_a[finite], mode="lines", line_color=ROUND_COLOR, name="log a(u)", row=1, col=2)
    if not finite.all() and finite.any():
        never = float(u[~finite].max())
        fig.add_vrect(x0=0, x1=never, fillcolor="#ccc", opacity=0.3, line_width=0, row=1, col=2)
        fig.add_annotation(
            x=never / 2, y=0.5, xref="x2", yref="y2 domain", text="never accepted<br>(log a = −∞)", showarrow=False
        )
    fig.update_xaxes(title_text="reward quantile u", range=[0, 1])
    fig.update_yaxes(title_text="a(u): chance of acceptance", range=[0, 1.05], row=1, col=1)
    fig.update_yaxes(title_text="log a(u): reshaped reward", row=1, col=2)
    kl_text = "n/a (nothing accepted)" if math.isnan(kl) else f"{kl:.3f}"
    if exact is not None:
        kl_text += f" (closed form {exact:.3f})"
    fig.update_layout(showlegend=False)
    mean_a = float(np.mean(a))
    where = f" · u of {source}" if source else ""
    title = f"{rule.describe()}: keeps {100 * mean_a:.3g} %" + subtitle(f"KL(accepted ‖ current) = {kl_text}{where}")
    return style(fig, title, 360)


def _numeric(table: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)


def _panels(table: pd.DataFrame, panels: Sequence[Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    found = []
    for panel in panels:
        present = [(c, label) for c, label in panel.metrics if c in table.columns]
        if present:
            found.append((panel.title, present))
    return found


def round_curves(table: pd.DataFrame, domain: str | Sequence[Any]) -> go.Figure:
    """Per round: mean reward with a ±1 std band (and the exact target's reward when known), the
    acceptance rate, and the domain's quality panels (`Domain.curve_panels`, or the domain's name), so that
    reward hacking and collapse are visible."""
    if isinstance(domain, str):
        from pgraft.registry import get_domain

        domain = get_domain(domain).curve_panels
    panels = _panels(table, domain)
    titles = [wrap_title(t) for t in ("mean reward (band: ±1 std)", "acceptance rate", *[t for t, _ in panels])]
    cols = 2
    rows = math.ceil(len(titles) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, vertical_spacing=0.2, horizontal_spacing=0.1)
    x = _numeric(table, "round")
    mean, std = _numeric(table, "reward_mean"), _numeric(table, "reward_std")
    band_x = np.concatenate([x, x[::-1]])
    band_y = np.concatenate([mean + std, (mean - std)[::-1]])
    fig.add_scatter(
        x=band_x,
        y=band_y,
        fill="toself",
        fillcolor="rgba(59,111,216,0.15)",
        line_width=0,
        showlegend=False,
        hoverinfo="skip",
    )
    fig.add_scatter(x=x, y=mean, mode="lines+markers", line_color=ROUND_COLOR, name="reward (measured)")
    if "target_reward" in table.columns:
        fig.add_scatter(
            x=x,
            y=_numeric(table, "target_reward"),
            mode="lines+markers",
            line=dict(color=TARGET_COLOR, dash="dash"),
            name="reward of the exact target",
        )
    fig.add_scatter(
        x=x,
        y=_numeric(table, "accept_rate"),
        mode="lines+markers",
        line_color=ACCEPT_COLOR,
        name="accepted",
        row=1,
        col=2,
    )
    palette = iter(["#7c3aed", "#db2777", "#0891b2", "#65a30d", "#b45309", "#475569"] * 4)
    for i, (_title, metrics) in enumerate(panels):
        row, col = 2 + i // cols, 1 + i % cols
        for column, label in metrics:
            fig.add_scatter(
                x=x,
                y=_numeric(table, column),
                mode="lines+markers",
                line_color=next(palette),
                name=label,
                row=row,
                col=col,
            )
    fig.update_xaxes(dtick=1)
    fig.update_xaxes(title_text="round (0 = base)", row=rows)  # only under the last row: an axis title above
    # another row's subplot title overlaps it on a narrow screen
    fig.update_yaxes(range=[0, 1.05], row=1, col=2)
    return style(fig, "Round by round", 260 * rows + 60)


def metrics_table(rows: Sequence[dict[str, object]]) -> pd.DataFrame:
    """The per-round metrics as a table: reward and acceptance first, timings last, numbers rounded."""
    table = pd.DataFrame(list(rows))
    if table.empty:
        return table
    first = [c for c in ("round", "reward_mean", "reward_std", "accept_rate", "n_accepted") if c in table.columns]
    timings = [c for c in table.columns if c.startswith("time_")]
    rest = [c for c in table.columns if c not in first and c not in timings]
    table = table[first + rest + timings]
    return table.round(4)
