"""Pictures of inverse noise correction (docs/method.md §4): pure functions from arrays and tables to figures.

- `noise_norm_histogram`: the norms of the inverted noises against the chi density of `|N(0, I_d)|`;
- `noise_scatter`: 2-D inverted noises over fresh `N(0, I)` draws (the toy);
- `quality_vs_flops`: the base flow at several step counts and base + correction, quality against FLOPs;
- `images_base_vs_corrected`: image samples of both samplers from the same seeds (a domain with other samples
  draws its own, `IncSupport.samples_figure`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

BASE_COLOR = "#7f7f7f"
CORRECTED_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")
REFERENCE_COLOR = "#c9d3e0"


def inc_style(fig: go.Figure, title: str, height: int = 380) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}},
        height=height,
        margin={"l": 55, "r": 15, "t": 55, "b": 45},
        template="plotly_white",
        legend={"orientation": "h", "y": -0.18},
    )
    return fig


def noise_norm_histogram(noises: np.ndarray, title: str = "norms of the inverted noises") -> go.Figure:
    """Histogram (density) of `|z|` for `z (n, d)` and the chi density with `d` degrees of freedom."""
    from scipy import stats

    z = np.asarray(noises, dtype=np.float64).reshape(len(noises), -1)
    norms = np.linalg.norm(z, axis=1)
    d = z.shape[1]
    hi = max(float(np.quantile(norms, 0.999)), float(stats.chi.ppf(0.999, d)))
    r = np.linspace(0.0, hi, 300)
    fig = go.Figure()
    fig.add_histogram(
        x=norms, histnorm="probability density", nbinsx=60, name="inverted noise |z|", marker_color=CORRECTED_COLORS[0]
    )
    fig.add_scatter(
        x=r, y=stats.chi.pdf(r, d), mode="lines", name=f"chi law, {d} d.o.f. (N(0, I))", line={"color": "black"}
    )
    fig.update_xaxes(title="|z|")
    fig.update_yaxes(title="density")
    return inc_style(fig, title)


def noise_scatter(
    noises: np.ndarray, seed: int = 0, title: str = "inverted noises (first two coordinates)"
) -> go.Figure:
    """The inverted noises over as many fresh `N(0, I)` draws, with the circles that hold 39 % / 86 % / 99 %."""
    z = np.asarray(noises, dtype=np.float64).reshape(len(noises), -1)[:, :2]
    ref = np.random.default_rng(seed).standard_normal(z.shape)
    fig = go.Figure()
    fig.add_scatter(
        x=ref[:, 0], y=ref[:, 1], mode="markers", name="N(0, I)", marker={"size": 3, "color": REFERENCE_COLOR}
    )
    fig.add_scatter(
        x=z[:, 0], y=z[:, 1], mode="markers", name="inverted z", marker={"size": 3, "color": CORRECTED_COLORS[0]}
    )
    t = np.linspace(0, 2 * np.pi, 200)
    for radius in (1.0, 2.0, 3.0):
        fig.add_scatter(
            x=radius * np.cos(t), y=radius * np.sin(t), mode="lines", showlegend=False, hoverinfo="skip",
            line={"color": "black", "width": 0.8, "dash": "dot"},
        )  # fmt: skip
    lim = max(3.5, float(np.quantile(np.abs(z), 0.998)) * 1.05)
    fig.update_xaxes(range=[-lim, lim], title="z₁")
    fig.update_yaxes(range=[-lim, lim], title="z₂", scaleanchor="x", scaleratio=1)
    return inc_style(fig, title, height=480)


def quality_vs_flops(
    table: pd.DataFrame, metric: str, x: str = "flops_per_image", label: str | None = None
) -> go.Figure:
    """Quality against compute: the base line over K, a dotted base line per reference grid, and one corrected
    line per number of correction steps m (`label`: the metric's axis label)."""
    fig = go.Figure()
    base = table[table["method"] == "base"].sort_values(x)
    fig.add_scatter(
        x=base[x], y=base[metric], mode="lines+markers", name="base flow", line={"color": BASE_COLOR, "width": 2},
        text=[f"K={k}" for k in base["num_inference_steps"]], hovertemplate="%{text}<br>%{x:.3s}<br>%{y:.4g}",
    )  # fmt: skip
    references = table[table["method"] == "reference"] if "method" in table else table[:0]
    for grid, group in references.groupby("grid"):
        group = group.sort_values(x)
        fig.add_scatter(
            x=group[x], y=group[metric], mode="lines+markers", name=f"base flow, {grid} grid",
            line={"color": BASE_COLOR, "width": 1.5, "dash": "dot"},
            text=[f"K={k}, {grid} grid" for k in group["num_inference_steps"]],
            hovertemplate="%{text}<br>%{x:.3s}<br>%{y:.4g}",
        )  # fmt: skip
    corrected = table[table["method"] == "corrected"]
    for i, (m, group) in enumerate(corrected.groupby("correction_steps")):
        group = group.sort_values(x)
        fig.add_scatter(
            x=group[x], y=group[metric], mode="lines+markers", name=f"base + correction, m={m}",
            line={"color": CORRECTED_COLORS[i % len(CORRECTED_COLORS)]},
            text=[f"K={k}, m={m}" for k in group["num_inference_steps"]],
            hovertemplate="%{text}<br>%{x:.3s}<br>%{y:.4g}",
        )  # fmt: skip
    x_label = "FLOPs per image (counted)" if x == "flops_per_image" else "network evaluations per image"
    fig.update_xaxes(title=x_label, type="log")
    fig.update_yaxes(title=label or metric)
    return inc_style(fig, f"{metric} against compute: base flow vs base + correction")


def _mosaic(images: np.ndarray, cols: int) -> np.ndarray:
    """`(n, H, W)` images in [0, 1] tiled into one array with one-pixel gaps."""
    n, h, w = images.shape
    rows = -(-n // cols)
    out = np.ones((rows * (h + 1) - 1, cols * (w + 1) - 1))
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = img
    return out


def images_base_vs_corrected(base: np.ndarray, corrected: np.ndarray, title: str, cols: int = 8) -> go.Figure:
    """Two image grids of model-scale images `(n, C, H, W)` in [-1, 1] (channels averaged to grey), same seeds
    at the same position."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("base flow", "base + correction (same seeds)"))
    for col, imgs in ((1, base), (2, corrected)):
        x = np.asarray(imgs, dtype=np.float64)
        x = x.mean(axis=1) if x.ndim == 4 else x
        unit = np.clip((x + 1) / 2, 0, 1)
        fig.add_heatmap(
            z=_mosaic(unit, cols)[::-1], colorscale="gray_r", showscale=False, zmin=0, zmax=1, row=1, col=col
        )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x", scaleratio=1)
    fig.update_yaxes(scaleanchor="x2", scaleratio=1, row=1, col=2)
    return inc_style(fig, title, height=420)
