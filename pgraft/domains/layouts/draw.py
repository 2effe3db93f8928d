"""Pages as pictures: PIL images and PNG grids for round folders and model cards, and a plotly figure with
hover text for the app.

One colour per class from Okabe and Ito's colour-blind-safe palette; boxes are filled translucent, larger
ones first so small ones stay visible, inside a thin page frame; grids carry a legend row.
"""

from __future__ import annotations

import io
from typing import Any

import torch

from pgraft.domains.layouts.generator import CLASSES, Layouts

PALETTE = {
    "text": (0, 114, 178),  # blue
    "title": (213, 94, 0),  # vermillion
    "list": (0, 158, 115),  # bluish green
    "table": (204, 121, 167),  # reddish purple
    "figure": (230, 159, 0),  # orange
}
PAGE_SIZE = (90, 120)


def _order(boxes: torch.Tensor, labels: torch.Tensor) -> list[int]:
    idx = [i for i in range(len(labels)) if int(labels[i]) >= 0]
    area = [float((boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])) for i in idx]
    return [i for _, i in sorted(zip(area, idx), key=lambda p: -p[0])]


def draw_page(
    boxes: torch.Tensor,
    labels: torch.Tensor,
    size: tuple[int, int] = PAGE_SIZE,
    frame: tuple[int, int, int] = (90, 90, 90),
) -> Any:
    """One page `(E, 4)` boxes `(x0, y0, x1, y1)`, `(E,)` labels → an RGB `PIL.Image` of `size` (w, h)."""
    from PIL import Image, ImageDraw

    w, h = size
    image = Image.new("RGBA", size, (255, 255, 255, 255))
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    pen = ImageDraw.Draw(layer)
    for i in _order(boxes, labels):
        r, g, b = PALETTE[CLASSES[int(labels[i])]]
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        xy = [x0 * (w - 1), y0 * (h - 1), max(x0, x1) * (w - 1), max(y0, y1) * (h - 1)]
        pen.rectangle(xy, fill=(r, g, b, 110), outline=(r, g, b, 255))
    image = Image.alpha_composite(image, layer).convert("RGB")
    ImageDraw.Draw(image).rectangle([0, 0, w - 1, h - 1], outline=frame)
    return image


def legend(width: int, height: int = 14) -> Any:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (255, 255, 255))
    pen = ImageDraw.Draw(image)
    x = 4
    for name in CLASSES:
        pen.rectangle([x, 3, x + 8, height - 4], fill=PALETTE[name])
        pen.text((x + 11, 1), name, fill=(0, 0, 0))
        x += 14 + 6 * len(name) + 8
    return image


def layout_grid(
    layouts: Layouts, columns: int = 8, accepted: torch.Tensor | None = None, size: tuple[int, int] = PAGE_SIZE
) -> Any:
    """A grid of pages with a legend row; with `accepted`, accepted pages get a green frame, others grey."""
    from PIL import Image

    n = len(layouts)
    columns = max(1, min(columns, n)) if n else 1
    rows = -(-n // columns)
    pad = 4
    w, h = size
    width = columns * (w + pad) + pad
    lg = legend(max(width, 330))
    grid = Image.new("RGB", (max(width, lg.width), rows * (h + pad) + pad + lg.height), (255, 255, 255))
    for i in range(n):
        frame = (90, 90, 90)
        if accepted is not None:
            frame = (0, 160, 60) if bool(accepted[i]) else (180, 180, 180)
        page = draw_page(layouts.boxes[i], layouts.labels[i], size, frame)
        grid.paste(page, (pad + (i % columns) * (w + pad), pad + (i // columns) * (h + pad)))
    grid.paste(lg, (0, rows * (h + pad) + pad))
    return grid


def grid_png(layouts: Layouts, columns: int = 8, accepted: torch.Tensor | None = None) -> bytes:
    buf = io.BytesIO()
    layout_grid(layouts, columns, accepted).save(buf, format="PNG")
    return buf.getvalue()


def pages_figure(
    before: Layouts,
    after: Layouts,
    before_rewards: torch.Tensor | None = None,
    after_rewards: torch.Tensor | None = None,
    title: str = "pages from the same seeds",
    columns: int = 6,
) -> Any:
    """Plotly figure: the same seeds before (top rows) and after (bottom rows); hover gives class, box and area."""
    import plotly.graph_objects as go

    n = min(len(before), len(after), 2 * columns)
    pages = [(before, i, before_rewards, "before") for i in range(n)] + [
        (after, i, after_rewards, "after") for i in range(n)
    ]
    rows = -(-n // columns) * 2 if n else 1
    fig = go.Figure()
    gap, w, h = 0.15, 1.0, 1.3
    shown: set[str] = set()
    for k, (pages_, i, rewards, tag) in enumerate(pages):
        col, row = (k % n) % columns, (k // n) * (-(-n // columns)) + (k % n) // columns
        ox, oy = col * (w + gap), -row * (h + gap)
        fig.add_shape(type="rect", x0=ox, y0=oy - h, x1=ox + w, y1=oy, line=dict(color="#555", width=1))
        label = f"{tag} #{i}" + (f", reward {float(rewards[i]):.3g}" if rewards is not None else "")
        fig.add_annotation(x=ox + w / 2, y=oy + 0.06, text=label, showarrow=False, font=dict(size=9))
        b, lab = pages_.boxes[i], pages_.labels[i]
        for j in _order(b, lab):
            name = CLASSES[int(lab[j])]
            x0, y0, x1, y1 = (float(v) for v in b[j])
            xs = [ox + x0 * w, ox + x1 * w, ox + x1 * w, ox + x0 * w, ox + x0 * w]
            ys = [oy - y0 * h, oy - y0 * h, oy - y1 * h, oy - y1 * h, oy - y0 * h]
            color = f"rgb{PALETTE[name]}"
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    fill="toself",
                    mode="lines",
                    line=dict(color=color, width=1),
                    opacity=0.6,
                    name=name,
                    legendgroup=name,
                    showlegend=name not in shown,
                    hovertext=(
                        f"{name}<br>box ({x0:.3f}, {y0:.3f}, {x1:.3f}, {y1:.3f})"
                        f"<br>area {(x1 - x0) * (y1 - y0):.4f}<br>{label}"
                    ),
                    hoverinfo="text",
                )
            )
            shown.add(name)
    fig.update_layout(
        title=title,
        xaxis=dict(visible=False),
        yaxis=dict(visible=False, scaleanchor="x"),
        plot_bgcolor="white",
        height=max(300, 120 * rows),
        margin=dict(l=10, r=10, t=40, b=10),
    )
    return fig
