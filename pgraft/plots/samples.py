"""Before/after pictures of samples drawn from the same seeds: 2-D scatters over the true density, image grids.

Pure functions from arrays to plotly figures (no gradio, no model). The toy picture draws the data density
as a background, the exact perfect-learning target of the round as contours (docs/method.md §1–2, the
`ExactChain` of `pgraft/exact.py`), and the samples coloured by their reward.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pgraft.domains.toy2d.exact import Grid2D
from pgraft.plots.rounds import ACCEPT_COLOR, TARGET_COLOR, style

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


def _mosaic(images: np.ndarray, cols: int) -> np.ndarray:
    """`(N, H, W)` images in [0, 1] tiled row-major with a one-pixel NaN gap, `(rows·(H+1)−1, cols·(W+1)−1)`."""
    n, h, w = images.shape
    rows = max(1, -(-n // cols))
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = img
    return out


def _to_unit(images: np.ndarray) -> np.ndarray:
    """`(N, C, H, W)` or `(N, H, W)` in [-1, 1] to grey `(N, H, W)` in [0, 1]."""
    x = np.asarray(images, dtype=float)
    if x.ndim == 4:
        x = x.mean(axis=1)
    return np.clip((x + 1) / 2, 0, 1)


def image_rows(
    rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]], title: str, cols: int = 12
) -> go.Figure:
    """Rows of images, each `(label, images in [-1, 1], rewards, accepted or None)`; every image shows its
    reward below it, accepted ones get a green frame."""
    fig = make_subplots(rows=len(rows), cols=1, subplot_titles=[r[0] for r in rows], vertical_spacing=0.12)
    for i, (_label, images, rewards, accepted) in enumerate(rows, start=1):
        unit = _to_unit(images[:cols])
        h, w = unit.shape[1:]
        fig.add_heatmap(
            z=_mosaic(unit, cols), colorscale="Greys", zmin=0, zmax=1, showscale=False, hoverinfo="skip", row=i, col=1
        )
        axis = "" if i == 1 else str(i)
        for j, rew in enumerate(np.asarray(rewards)[:cols]):
            x0 = j * (w + 1) - 0.5
            fig.add_annotation(
                x=x0 + w / 2,
                y=h + 0.1,
                xref=f"x{axis}",
                yref=f"y{axis}",
                text=f"{rew:.2f}",
                showarrow=False,
                yanchor="top",
                font=dict(size=10),
            )
            if accepted is not None and bool(accepted[j]):
                fig.add_shape(
                    type="rect",
                    x0=x0,
                    x1=x0 + w,
                    y0=-0.5,
                    y1=h - 0.5,
                    line=dict(color=ACCEPT_COLOR, width=3),
                    xref=f"x{axis}",
                    yref=f"y{axis}",
                )
        fig.update_yaxes(autorange=False, range=[h + 1.6, -0.7], scaleanchor=f"x{axis}", row=i, col=1)
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, constrain="domain")
    return style(fig, title, 150 * len(rows) + 80)


def images_before_after(
    before: np.ndarray,
    after: np.ndarray,
    before_rewards: np.ndarray,
    after_rewards: np.ndarray,
    candidates: np.ndarray,
    candidate_rewards: np.ndarray,
    accepted: np.ndarray,
    round_index: int,
    cols: int = 12,
) -> go.Figure:
    """Preview images of round 0 and of this round from the same seeds, and this round's first candidates
    with the accepted ones framed."""
    rows = [
        ("before: round 0 (base), preview seeds", before, before_rewards, None),
        (f"after: round {round_index}, same seeds", after, after_rewards, None),
        (f"round {round_index} candidates (green frame = accepted)", candidates, candidate_rewards, accepted),
    ]
    return image_rows(rows, "Samples and their rewards", cols)
