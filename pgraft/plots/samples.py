"""Before/after pictures of image samples drawn from the same seeds, each with its reward.

Pure functions from arrays to plotly figures (no gradio, no model); images are `(N, C, H, W)` (or `(N, H, W)`)
in [-1, 1]. A domain with other samples draws its own picture (`Domain.samples_figure`).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pgraft.plots.style import ACCEPT_COLOR, style


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
    rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]],
    title: str,
    cols: int = 12,
    labels: list[list[str] | None] | None = None,
) -> go.Figure:
    """Rows of images, each `(label, images in [-1, 1], rewards, accepted or None)`; every image shows its
    reward below it (after its `labels` entry, e.g. its prompt, when given), accepted ones get a green frame."""
    fig = make_subplots(rows=len(rows), cols=1, subplot_titles=[r[0] for r in rows], vertical_spacing=0.12)
    for i, (_label, images, rewards, accepted) in enumerate(rows, start=1):
        unit = _to_unit(images[:cols])
        h, w = unit.shape[1:]
        fig.add_heatmap(
            z=_mosaic(unit, cols), colorscale="Greys", zmin=0, zmax=1, showscale=False, hoverinfo="skip", row=i, col=1
        )
        axis = "" if i == 1 else str(i)
        names = (labels or [None] * len(rows))[i - 1]
        for j, rew in enumerate(np.asarray(rewards)[:cols]):
            x0 = j * (w + 1) - 0.5
            fig.add_annotation(
                x=x0 + w / 2,
                y=h + 0.1,
                xref=f"x{axis}",
                yref=f"y{axis}",
                text=f"{names[j]}<br>{rew:.2f}" if names is not None and j < len(names) else f"{rew:.2f}",
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
    preview_labels: list[str] | None = None,
    candidate_labels: list[str] | None = None,
) -> go.Figure:
    """Preview images of round 0 and of this round from the same seeds, and this round's first candidates
    with the accepted ones framed; `*_labels` (the prompt of each image) are written above its reward."""
    rows = [
        ("before: round 0 (base), preview seeds", before, before_rewards, None),
        (f"after: round {round_index}, same seeds", after, after_rewards, None),
        (f"round {round_index} candidates (green frame = accepted)", candidates, candidate_rewards, accepted),
    ]
    labels = [preview_labels, preview_labels, candidate_labels] if preview_labels or candidate_labels else None
    title = "Samples, their prompts and rewards" if labels else "Samples and their rewards"
    return image_rows(rows, title, cols, labels)
