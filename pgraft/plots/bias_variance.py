"""Figures of the bias–variance study (docs/method.md §3): the curves against the cutoff, and the sweep.

Pure functions from tables to plotly figures. Four panels share the cutoff axis:

- label noise `V(t)` (rising) and signal `B(t)` (falling), with their bootstrap bands;
- `R²(t) = B / (B + V)`, the share of the reward's variance an intermediate state still explains;
- the tilt size `D(t) = KL(p̃_t ‖ p̄_t)` (falling), bias-corrected, with the plug-in beside it;
- the end-to-end sweep: final reward and realism loss of one run per cutoff at equal budget (and, for
  the toy, the perfect-learning reward of the P-GRAFT target).

The toy's exact curves are drawn under the estimates; the selected cutoff and the recommended one are
marked on every panel.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pgraft.plots.style import placeholder, style

V_COLOR = "#d64545"
B_COLOR = "#3b6fd8"
R2_COLOR = "#7b4fd0"
D_COLOR = "#e07b1a"
SWEEP_COLOR = "#1f9d55"
REALISM_COLOR = "#9aa5b1"
EXACT_COLOR = "#1d2733"
SELECTED_COLOR = "#4a5560"
RECOMMENDED_COLOR = "#1f9d55"
EMPTY_SWEEP = (
    "Empty without the sweep: tick <i>Also run one P-GRAFT<br>run per cutoff</i> under <i>End-to-end sweep</i><br>"
    "to compare final reward and realism here."
)
PANELS = (
    "label noise V(t) and signal B(t)",
    "R²(t) = B / (B + V)",
    "tilt size D(t) = KL(p̃ₜ ‖ p̄ₜ)",
    "end to end, equal budget",
)


def _band(fig: go.Figure, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, color: str, row: int, col: int) -> None:
    fig.add_trace(
        go.Scatter(
            x=np.concatenate([x, x[::-1]]),
            y=np.concatenate([hi, lo[::-1]]),
            fill="toself",
            fillcolor=color,
            opacity=0.18,
            line=dict(width=0),
            hoverinfo="skip",
            showlegend=False,
        ),
        row=row,
        col=col,
    )


def _estimate(fig: go.Figure, curves: pd.DataFrame, name: str, label: str, color: str, row: int, col: int) -> None:
    """An estimated curve with its band (when it has more than one point) and markers."""
    x = curves["cutoff_effective"].to_numpy(float)
    if len(curves) > 1 and f"{name}_lo" in curves:
        _band(fig, x, curves[f"{name}_lo"].to_numpy(float), curves[f"{name}_hi"].to_numpy(float), color, row, col)
    err = None
    if f"{name}_lo" in curves:
        y = curves[name].to_numpy(float)
        err = dict(
            type="data",
            array=curves[f"{name}_hi"].to_numpy(float) - y,
            arrayminus=y - curves[f"{name}_lo"].to_numpy(float),
            thickness=1,
            width=3,
        )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=curves[name],
            mode="lines+markers",
            name=label,
            line=dict(color=color, width=2),
            marker=dict(size=6),
            error_y=err,
            hovertemplate=f"{label}<br>t = %{{x:.3f}}<br>%{{y:.4g}}<extra></extra>",
        ),
        row=row,
        col=col,
    )


def _exact(fig: go.Figure, exact: pd.DataFrame, name: str, label: str, row: int, col: int, legend: bool) -> None:
    fig.add_trace(
        go.Scatter(
            x=exact["cutoff"],
            y=exact[name],
            mode="lines",
            name="exact (true mixture)",
            legendgroup="exact",
            showlegend=legend,
            line=dict(color=EXACT_COLOR, width=1.2, dash="dot"),
            hovertemplate=f"exact {label}<br>t = %{{x:.3f}}<br>%{{y:.4g}}<extra></extra>",
        ),
        row=row,
        col=col,
    )


def _sweep_panel(fig: go.Figure, sweep: pd.DataFrame, exact: pd.DataFrame | None) -> None:
    fig.add_trace(
        go.Scatter(
            x=sweep["cutoff"],
            y=sweep["final_reward"],
            mode="lines+markers",
            name="final reward (one run per cutoff)",
            line=dict(color=SWEEP_COLOR, width=2),
            marker=dict(size=8, symbol=["diamond" if c == 0 else "circle" for c in sweep["cutoff"]]),
            hovertemplate="t = %{x:.3f}<br>final reward %{y:.4g}<extra></extra>",
        ),
        row=2,
        col=2,
        secondary_y=False,
    )
    if "realism_loss" in sweep and sweep["realism_loss"].notna().any():
        metric = str(sweep["realism_metric"].iloc[0])
        fig.add_trace(
            go.Scatter(
                x=sweep["cutoff"],
                y=sweep["realism_loss"],
                mode="lines+markers",
                name=f"realism loss ({metric}, right axis)",
                line=dict(color=REALISM_COLOR, width=1.5, dash="dash"),
                hovertemplate=f"t = %{{x:.3f}}<br>{metric} loss %{{y:.3g}}<extra></extra>",
            ),
            row=2,
            col=2,
            secondary_y=True,
        )
    if exact is not None:
        rounds = int(exact["rounds"].iloc[0]) if "rounds" in exact else 1
        fig.add_trace(
            go.Scatter(
                x=exact["cutoff"],
                y=exact["pgraft_reward"],
                mode="lines",
                name=f"exact target's reward after {rounds} round{'s' if rounds > 1 else ''} (perfect learning)",
                line=dict(color=SWEEP_COLOR, width=1.2, dash="dot"),
            ),
            row=2,
            col=2,
            secondary_y=False,
        )
    fig.update_yaxes(title_text="final reward", row=2, col=2, secondary_y=False)
    fig.update_yaxes(title_text="realism loss", row=2, col=2, secondary_y=True, showgrid=False)


def bias_variance_figure(
    curves: pd.DataFrame | None,
    exact: pd.DataFrame | None = None,
    sweep: pd.DataFrame | None = None,
    selected: float | None = None,
    recommended: float | None = None,
    height: int = 640,
) -> go.Figure:
    """The four-panel figure of the study; any of the tables may be missing or partial (streaming)."""
    has_curves = curves is not None and not curves.empty
    if not has_curves and exact is None and (sweep is None or sweep.empty):
        return placeholder("Run the study: the curves appear here as the cutoffs finish.", height)
    fig = make_subplots(
        rows=2,
        cols=2,
        subplot_titles=PANELS,
        specs=[[{}, {}], [{}, {"secondary_y": True}]],
        horizontal_spacing=0.1,
        vertical_spacing=0.14,
    )
    if exact is not None:
        _exact(fig, exact, "V", "V", 1, 1, legend=True)
        _exact(fig, exact, "B", "B", 1, 1, legend=False)
        _exact(fig, exact, "R2", "R²", 1, 2, legend=False)
        _exact(fig, exact, "D", "D", 2, 1, legend=False)
    if has_curves:
        assert curves is not None
        curves = curves.sort_values("cutoff_effective")
        _estimate(fig, curves, "V", "V: E[Var(r | Xₜ)]", V_COLOR, 1, 1)
        _estimate(fig, curves, "B", "B: Var(E[r | Xₜ])", B_COLOR, 1, 1)
        _estimate(fig, curves, "R2", "R²", R2_COLOR, 1, 2)
        _estimate(fig, curves, "D", "D, bias-corrected", D_COLOR, 2, 1)
        fig.add_trace(
            go.Scatter(
                x=curves["cutoff_effective"],
                y=curves["D_plugin"],
                mode="markers",
                name="D, plug-in (biased up)",
                marker=dict(color=D_COLOR, symbol="circle-open", size=7),
            ),
            row=2,
            col=1,
        )
    if sweep is not None and not sweep.empty:
        _sweep_panel(fig, sweep, exact)
    else:
        panel = fig.get_subplot(2, 2)  # paper coordinates: the page's plotly.js may not read "x4 domain"
        fig.add_annotation(
            text=EMPTY_SWEEP,
            x=sum(panel.xaxis.domain) / 2,
            y=sum(panel.yaxis.domain) / 2,
            xref="paper",
            yref="paper",
            xanchor="center",
            yanchor="middle",
            showarrow=False,
        )
    _mark(fig, selected, "selected", SELECTED_COLOR, "dash")
    _mark(fig, recommended, "recommended", RECOMMENDED_COLOR, "dot")
    fig.update_xaxes(range=[-0.02, 1.02])
    fig.update_xaxes(title_text="cutoff t", row=2)
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(range=[-0.05, 1.05], row=1, col=2)
    fig.update_yaxes(rangemode="tozero", row=2, col=1)
    title = "Bias–variance across cutoffs"
    if has_curves:
        assert curves is not None
        title += f" — M = {int(curves['states'].iloc[0])} states, R = {int(curves['continuations'].iloc[0])} "
        title += f"continuations, {100 * float(curves['level'].iloc[0]):g} % bands"
    return style(fig, title, height)


def _mark(fig: go.Figure, cutoff: float | None, label: str, color: str, dash: str) -> None:
    if cutoff is None:
        return
    for row, col in ((1, 1), (1, 2), (2, 1), (2, 2)):
        fig.add_vline(x=cutoff, line=dict(color=color, dash=dash, width=1.5), row=row, col=col)
    fig.add_annotation(
        x=cutoff,
        y=0.98 if label == "selected" else 0.88,
        xref="x",
        yref="y domain",
        text=f"{label} {cutoff:g}",
        showarrow=False,
        xanchor="left",
        font=dict(color=color, size=11),
    )
