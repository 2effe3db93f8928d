"""Measures of a batch of pages (shared/docs/domains.md §A.3), one value per page, on `Layouts`
(`boxes (N, E, 4)` as `(x0, y0, x1, y1)`, `labels (N, E)` with −1 for an empty slot).

- `alignment`: LayoutGAN++'s `(1/n) Σ_i −log(1 − m_i)`, `m_i = min_{j≠i} min_k |k_i − k_j|` over the six
  coordinates `k ∈ {x0, x_c, x1, y0, y_c, y1}`; 0 for pages with fewer than two elements.
- `overlap`: LayoutGAN++'s `(1/n) Σ_i Σ_{j≠i} |b_i ∩ b_j| / |b_i|`; 0 for an empty page.
- `layout_features`: what the Fréchet distance of the realism metrics compares (counts, class counts,
  per-class occupancy of a 6 × 4 grid over the page, alignment and overlap).
Every function rejects NaN or infinite boxes with a `ValueError` that says where they are.
"""

from __future__ import annotations

import torch

from pgraft.domains.layouts.generator import CLASSES, Layouts

GRID = (6, 4)
"""Rows × columns of the occupancy grid of `layout_features`."""


def check_finite(layouts: Layouts, what: str = "layouts") -> None:
    bad = ~torch.isfinite(layouts.boxes).all(-1) & layouts.valid
    if bad.any():
        page = int(bad.any(1).nonzero()[0])
        raise ValueError(f"{what}: {int(bad.sum())} boxes are NaN or infinite (first on page {page})")


def coordinates(boxes: torch.Tensor) -> torch.Tensor:
    """`(…, 6)`: x0, x_c, x1, y0, y_c, y1."""
    b = boxes.double()
    return torch.stack(
        [b[..., 0], (b[..., 0] + b[..., 2]) / 2, b[..., 2], b[..., 1], (b[..., 1] + b[..., 3]) / 2, b[..., 3]], -1
    )


def alignment(layouts: Layouts) -> torch.Tensor:
    check_finite(layouts)
    valid = layouts.valid
    k = coordinates(layouts.boxes)
    diff = (k[:, :, None, :] - k[:, None, :, :]).abs().amin(-1)  # (N, E, E)
    e = valid.shape[1]
    pair = valid[:, :, None] & valid[:, None, :] & ~torch.eye(e, dtype=torch.bool)[None]
    m = torch.where(pair, diff.clamp(max=1.0), torch.ones_like(diff)).amin(-1)
    m = torch.where(m >= 1.0, torch.zeros_like(m), m)  # no partner: the sentinel 1 counts as 0
    per = torch.where(valid, -torch.log1p(-m), torch.zeros_like(m))
    n = valid.sum(1)
    return torch.where(n >= 2, per.sum(1) / n.clamp_min(1), torch.zeros(len(n), dtype=per.dtype))


def areas(boxes: torch.Tensor) -> torch.Tensor:
    b = boxes.double()
    return (b[..., 2] - b[..., 0]).clamp_min(0) * (b[..., 3] - b[..., 1]).clamp_min(0)


def intersections(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`|a_i ∩ b_j|` for boxes `(N, E, 4)` and `(N, F, 4)`, as `(N, E, F)`."""
    a, b = a.double()[:, :, None], b.double()[:, None]
    w = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp_min(0)
    h = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp_min(0)
    return w * h


def overlap(layouts: Layouts) -> torch.Tensor:
    check_finite(layouts)
    valid = layouts.valid
    inter = intersections(layouts.boxes, layouts.boxes)
    e = valid.shape[1]
    pair = valid[:, :, None] & valid[:, None, :] & ~torch.eye(e, dtype=torch.bool)[None]
    ratio = torch.where(pair, inter / areas(layouts.boxes).clamp_min(1e-12)[..., None], torch.zeros_like(inter))
    n = valid.sum(1)
    return ratio.sum((1, 2)) / n.clamp_min(1)


def class_counts(layouts: Layouts) -> torch.Tensor:
    """`(N, 5)` elements of each class per page."""
    labels = layouts.labels.clamp_min(0)
    onehot = torch.nn.functional.one_hot(labels, len(CLASSES)) * layouts.valid[..., None]
    return onehot.sum(1).double()


def inside_fraction(layouts: Layouts, tol: float = 1e-6) -> float:
    """Fraction of all elements whose box lies inside the unit page."""
    b = layouts.boxes
    inside = (b[..., :2] >= -tol).all(-1) & (b[..., 2:] <= 1 + tol).all(-1)
    n = int(layouts.valid.sum())
    return float((inside & layouts.valid).sum()) / n if n else 1.0


def occupancy(layouts: Layouts, grid: tuple[int, int] = GRID) -> torch.Tensor:
    """`(N, 5, rows·cols)`: per class, the fraction of each grid cell its boxes cover (clipped to 1)."""
    rows, cols = grid
    ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    cells = torch.stack([xs / cols, ys / rows, (xs + 1) / cols, (ys + 1) / rows], -1).reshape(1, -1, 4).double()
    n = len(layouts)
    inter = intersections(layouts.boxes, cells.expand(n, -1, -1)) * (rows * cols)  # (N, E, cells)
    onehot = torch.nn.functional.one_hot(layouts.labels.clamp_min(0), len(CLASSES)).double() * layouts.valid[..., None]
    return torch.einsum("nec,nek->nkc", inter, onehot).clamp(max=1.0)


def layout_features(layouts: Layouts) -> torch.Tensor:
    """`(N, 128)` features for the Fréchet distance (see the module docstring)."""
    check_finite(layouts)
    counts = class_counts(layouts)
    return torch.cat(
        [
            counts.sum(1, keepdim=True),
            counts,
            occupancy(layouts).flatten(1),
            alignment(layouts)[:, None] * 100,
            overlap(layouts)[:, None],
        ],
        1,
    ).float()
