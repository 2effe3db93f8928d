"""Pictures of the 2-D toy: samples over the true density with the exact target's contours, and base vs
corrected flow samples. Pure functions from arrays to plotly figures (docs/method.md §1–2)."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pgraft.domains.toy2d.exact import Grid2D
from pgraft.plots.inc import inc_style
from pgraft.plots.style import TARGET_COLOR, style

COARSEN = 4  # 240² exact grid → 60² cells on screen
DENSITY_SCALE = [[0.0, "#ffffff"], [1.0, "#a9b8cc"]]


def coarsen(grid: Grid2D, masses: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum `factor × factor` blocks of grid masses: axes and a `(ny, nx)` array ready for a heatmap."""
    nx, ny = grid.shape
    mx, my = nx // factor, ny // factor
    m = masses.reshape(nx, ny)[: mx * factor, : my * factor].reshape(mx, factor, my, factor).sum(axis=(1, 3))
    xs = grid.xs[: mx * factor].reshape(mx, factor).mean(1)
    ys = grid.ys[: my * factor].reshape(my, factor).mean(1)
    return xs, ys, m.T.astype(np.float32)  # float32 halves what travels to the browser


def mass_level(masses: np.ndarray, mass: float) -> float:
    """The density level whose super-level set holds `mass` of the total (a highest-density region)."""
    flat = np.sort(masses.ravel())[::-1]
    cum = np.cumsum(flat) / flat.sum()
    return float(flat[min(int(np.searchsorted(cum, mass)), len(flat) - 1)])


def toy_before_after(
    before: np.ndarray,
    after: np.ndarray,
    before_rewards: np.ndarray,
    after_rewards: np.ndarray,
    round_index: int,
    grid: Grid2D,
    base: np.ndarray,
    target: np.ndarray | None,
    target_label: str = "exact target",
) -> go.Figure:
    """Two panels, round 0 and round `round_index`, same seeds; contours hold 50 % and 90 % of the target."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("before: round 0 (base)", f"after: round {round_index}, same seeds"),
        horizontal_spacing=0.06,
    )
    xs, ys, dens = coarsen(grid, base, COARSEN)
    rewards = np.concatenate([before_rewards, after_rewards])
    cmin, cmax = (float(v) for v in np.quantile(rewards, [0.01, 0.99]))
    hidden = 0
    for col, (pts, rew) in enumerate(((before, before_rewards), (after, after_rewards)), start=1):
        fig.add_heatmap(
            x=xs,
            y=ys,
            z=np.sqrt(dens),
            zsmooth="best",
            colorscale=DENSITY_SCALE,
            showscale=False,
            hoverinfo="skip",
            row=1,
            col=col,
        )
        if target is not None and col == 2:
            _, _, q = coarsen(grid, target, COARSEN)
            for mass, dash in ((0.5, "solid"), (0.9, "dot")):
                fig.add_contour(
                    x=xs,
                    y=ys,
                    z=q,
                    contours=dict(type="constraint", operation=">=", value=mass_level(q, mass)),
                    line=dict(color=TARGET_COLOR, width=2, dash=dash),
                    fillcolor="rgba(0,0,0,0)",
                    showscale=False,
                    hoverinfo="skip",
                    name=f"{target_label}: {int(100 * mass)} % region",
                    showlegend=True,
                    legendgroup=f"target{mass}",
                    row=1,
                    col=col,
                )
        inside = (
            (pts[:, 0] >= grid.xs[0])
            & (pts[:, 0] <= grid.xs[-1])
            & (pts[:, 1] >= grid.ys[0])
            & (pts[:, 1] <= grid.ys[-1])
        )
        hidden += int((~inside).sum())
        fig.add_scatter(
            x=pts[:, 0],
            y=pts[:, 1],
            mode="markers",
            marker=dict(
                size=5,
                color=rew,
                colorscale="Viridis",
                cmin=cmin,
                cmax=cmax,
                showscale=col == 2,
                colorbar=dict(title="reward", thickness=12),
                line=dict(width=0),
            ),
            name="samples",
            showlegend=False,
            hovertemplate="(%{x:.2f}, %{y:.2f})<br>reward %{marker.color:.3g}<extra></extra>",
            row=1,
            col=col,
        )
    for col in (1, 2):
        fig.update_xaxes(range=[grid.xs[0], grid.xs[-1]], constrain="domain", row=1, col=col)
        fig.update_yaxes(
            range=[grid.ys[0], grid.ys[-1]],
            scaleanchor=f"x{'' if col == 1 else col}",
            constrain="domain",
            row=1,
            col=col,
        )
    title = "Samples over the data density (grey)"
    if hidden:
        title += f" — {hidden} outside the view"
    fig = style(fig, title, 440)
    fig.update_layout(legend=dict(y=-0.08))
    return fig


def toy_base_vs_corrected(base: np.ndarray, corrected: np.ndarray, title: str) -> go.Figure:
    """Two scatter panels of 2-D samples drawn from the same seeds; a seed has the same colour in both."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("base flow", "base + correction (same seeds)"))
    colors = np.arange(len(base))
    for col, pts in ((1, base), (2, corrected)):
        fig.add_scatter(
            x=pts[:, 0], y=pts[:, 1], mode="markers", showlegend=False,
            marker={"size": 4, "color": colors, "colorscale": "Viridis"}, row=1, col=col,
        )  # fmt: skip
    lim = float(np.quantile(np.abs(np.concatenate([base, corrected])), 0.995)) * 1.1
    fig.update_xaxes(range=[-lim, lim])
    fig.update_yaxes(range=[-lim, lim], scaleanchor="x", scaleratio=1)
    fig.update_yaxes(scaleanchor="x2", scaleratio=1, row=1, col=2)
    return inc_style(fig, title, height=440)


def samples_figure(first: Any, latest: Any, evaluator: Any) -> go.Figure:
    """The app's before/after picture of a toy run: the preview samples of round 0 and of the latest round
    (same seeds) over the data density, with the latest round's exact target."""
    chain = evaluator.chain
    return toy_before_after(
        first.preview_samples.numpy(),
        latest.preview_samples.numpy(),
        first.preview_rewards.numpy(),
        latest.preview_rewards.numpy(),
        latest.round,
        chain.grid,
        chain.base,
        chain.target(latest.round),
        getattr(evaluator, "reference_note", "exact target"),
    )
