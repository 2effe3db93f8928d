"""Figures that put several runs side by side: their per-round curves overlaid, their final reward
histograms overlaid, and their final samples from the same seeds next to each other (pure plotly)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pgraft.plots.style import placeholder, style, wrap_title

PALETTE = ("#3b6fd8", "#e07b1a", "#1f9d55", "#d64545", "#8e5bd8", "#17a2b8", "#b8860b", "#6c757d")
EMPTY = "Tick two or more runs in the run list to overlay their curves, histograms and samples."


@dataclass(frozen=True)
class RunSummary:
    """What a comparison needs of one run: its label, its per-round table, its last round's rewards and its
    last round's preview samples (drawn from the same seeds in every run of a session)."""

    label: str
    table: pd.DataFrame
    final_rewards: np.ndarray
    preview: np.ndarray
    preview_rewards: np.ndarray


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def compare_curves(runs: Sequence[RunSummary], realism: str | None, realism_label: str = "") -> go.Figure:
    """Mean reward and the realism metric per round, one line per run."""
    if not runs:
        return placeholder(EMPTY, 300)
    titles = ["mean reward", realism_label or (realism or "realism")]
    shown = [t for t, ok in zip(titles, (True, realism is not None)) if ok]
    fig = make_subplots(rows=1, cols=len(shown), subplot_titles=[wrap_title(t) for t in shown], horizontal_spacing=0.12)
    for i, run in enumerate(runs):
        x = pd.to_numeric(run.table["round"], errors="coerce")
        y = pd.to_numeric(run.table["reward_mean"], errors="coerce")
        fig.add_scatter(
            x=x, y=y, mode="lines+markers", line_color=color(i), name=run.label, legendgroup=run.label, row=1, col=1
        )
        if realism is not None and realism in run.table.columns:
            r = pd.to_numeric(run.table[realism], errors="coerce")
            fig.add_scatter(
                x=x,
                y=r,
                mode="lines+markers",
                line=dict(color=color(i), dash="dot"),
                name=run.label,
                legendgroup=run.label,
                showlegend=False,
                row=1,
                col=2,
            )
    fig.update_xaxes(title_text="round (0 = base)", dtick=1)
    return style(fig, "Runs compared: per-round curves", 360)


def compare_histograms(runs: Sequence[RunSummary]) -> go.Figure:
    """The last round's reward distribution of each run, overlaid on shared bins (fractions of the samples)."""
    if not runs:
        return placeholder(EMPTY, 300)
    values = np.concatenate([r.final_rewards for r in runs])
    lo, hi = float(np.min(values)), float(np.max(values))
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, 41)
    centers = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure()
    for i, run in enumerate(runs):
        counts, _ = np.histogram(run.final_rewards, bins=edges)
        fig.add_scatter(
            x=centers,
            y=counts / max(1, len(run.final_rewards)),
            mode="lines",
            line=dict(color=color(i), shape="hvh", width=2),
            name=f"{run.label} (mean {np.mean(run.final_rewards):.3g})",
        )
    fig.update_xaxes(title_text="reward")
    fig.update_yaxes(title_text="fraction of samples")
    return style(fig, "Runs compared: rewards of the last round", 340)


def compare_samples(runs: Sequence[RunSummary], count: int = 6) -> go.Figure:
    """The last round's preview samples of each run, one column per run, from the same seeds: points for
    2-D samples, the first `count` images for image samples."""
    if not runs:
        return placeholder(EMPTY, 300)
    if any(len(r.preview) == 0 for r in runs):
        return placeholder("A ticked run has no preview samples (its 'preview samples' was 0).", 300)
    labels = [r.label for r in runs]
    if runs[0].preview.ndim == 2:
        fig = make_subplots(rows=1, cols=len(runs), subplot_titles=_short(labels), horizontal_spacing=0.04)
        lim = float(np.quantile(np.abs(np.concatenate([r.preview for r in runs])), 0.995)) * 1.1
        for i, run in enumerate(runs):
            fig.add_scattergl(
                x=run.preview[:, 0],
                y=run.preview[:, 1],
                mode="markers",
                marker=dict(size=3, color=color(i), opacity=0.6),
                name=run.label,
                showlegend=False,
                row=1,
                col=i + 1,
            )
        fig.update_xaxes(range=[-lim, lim], showticklabels=False)
        fig.update_yaxes(range=[-lim, lim], showticklabels=False)
        _square_pixels(fig)
        return style(fig, "Runs compared: last-round samples from the same seeds", 380)
    n = min(count, min(len(r.preview) for r in runs))
    fig = make_subplots(rows=n, cols=len(runs), column_titles=_short(labels), vertical_spacing=0.01)
    for c, run in enumerate(runs):
        for r in range(n):
            image = np.asarray(run.preview[r], dtype=float)
            image = image[0] if image.ndim == 3 and image.shape[0] == 1 else image
            if image.ndim == 3:  # channels first, in [-1, 1]
                rgb = np.clip((np.moveaxis(image, 0, -1) + 1) * 127.5, 0, 255)
                fig.add_image(z=rgb, row=r + 1, col=c + 1, hovertemplate=f"reward {run.preview_rewards[r]:.3g}")
            else:
                fig.add_heatmap(
                    z=image[::-1], colorscale="gray_r", showscale=False, row=r + 1, col=c + 1, hoverinfo="skip"
                )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    _square_pixels(fig)
    return style(fig, "Runs compared: last-round samples from the same seeds", 90 * n + 80)


def _square_pixels(fig: go.Figure) -> None:
    """Every subplot's y axis scaled to its *own* x axis (a single `scaleanchor="x"` ties them all to the first
    subplot's, which stretched every other image to its cell's width)."""
    for axis in fig.layout:
        if axis.startswith("yaxis"):
            fig.layout[axis].scaleanchor = "x" + axis.removeprefix("yaxis")


def _short(labels: Sequence[str], width: int = 28) -> list[str]:
    return [label if len(label) <= width else label[: width - 1] + "…" for label in labels]
