"""Rewards of the `layouts` domain (higher is better; one float per page; shared/docs/domains.md §A.3).

The engine calls a reward with the model's samples `(N, 20, 10)`; each reward decodes them once
(`generator.decode`) and works on `Layouts`: `boxes (N, E, 4)` as `(x0, y0, x1, y1)` in the unit page and
`labels (N, E)` long, −1 for an empty slot. A user reward `module:function` receives exactly those two
tensors, `fn(boxes, labels) -> (N,)`. Every reward is defined on an empty page (value in the table), and a
NaN or infinite box raises an error naming the reward.

| reward | value | empty page |
|---|---|---|
| `alignment` | −Alignment (LayoutGAN++), ≤ 0 | 0 |
| `overlap` | −Overlap (LayoutGAN++), ≤ 0; fewer elements overlap less: see `aesthetic` | 0 |
| `aesthetic` | −(w_a·Alignment + w_o·Overlap) − λ·\\|n − n_target\\| | −λ·n_target |
| `title-at-top` | 1 if the topmost element (smallest y0) is a title, else 0 | 0 |
| `title-at-top-soft` | −(y0 of the highest title − min_j y0_j), −1 without a title | −1 |
| `inside-margins` | −Σ_i area of b_i outside [m, 1 − m]² | 0 |
| `count` | 1 if the page has exactly `k` elements of class `cls`, else 0 | 1 iff k = 0 |
| `relation` | 1 − the fraction of (A, B) pairs violating "A `rel` B" (figure below title) | 1 (none to violate) |
"""

from __future__ import annotations

from typing import Any

import torch

from pgraft.domains.layouts.generator import CLASSES, Layouts, decode
from pgraft.domains.layouts.measures import alignment, areas, check_finite, class_counts, intersections, overlap
from pgraft.rewards import RewardFn, RewardSpec, SampleView

DOMAIN = "layouts"
RELATIONS = ("below", "above", "left-of", "right-of")
DATA_MEAN_ELEMENTS = 9.6
"""Mean elements per synthetic page (domains.md §A.4): `aesthetic`'s default count target."""


def class_index(name: str, field: str = "--reward-arg cls") -> int:
    if name not in CLASSES:
        raise ValueError(f"{field}: {name!r} is not a layout class; choose one of {list(CLASSES)}")
    return CLASSES.index(name)


# --- the reward functions on Layouts -------------------------------------------------------------------
def title_at_top(layouts: Layouts) -> torch.Tensor:
    check_finite(layouts)
    y0 = torch.where(
        layouts.valid, layouts.boxes[..., 1].double(), torch.full_like(layouts.boxes[..., 1].double(), torch.inf)
    )
    top = y0.argmin(1)
    label = layouts.labels.gather(1, top[:, None]).squeeze(1)
    return ((label == CLASSES.index("title")) & (layouts.counts > 0)).double()


def title_at_top_soft(layouts: Layouts) -> torch.Tensor:
    check_finite(layouts)
    y0 = layouts.boxes[..., 1].double()
    inf = torch.full_like(y0, torch.inf)
    top = torch.where(layouts.valid, y0, inf).amin(1)
    title = torch.where(layouts.labels == CLASSES.index("title"), y0, inf).amin(1)
    return torch.where(torch.isfinite(title), -(title - top), torch.full_like(title, -1.0))


def inside_margins(layouts: Layouts, margin: float) -> torch.Tensor:
    check_finite(layouts)
    frame = torch.tensor([margin, margin, 1 - margin, 1 - margin], dtype=torch.float64).expand(len(layouts), 1, 4)
    inside = intersections(layouts.boxes, frame).squeeze(-1)
    outside = torch.where(layouts.valid, areas(layouts.boxes) - inside, torch.zeros_like(inside))
    return -outside.clamp_min(0).sum(1)


def count_is(layouts: Layouts, cls: int, k: int) -> torch.Tensor:
    return (class_counts(layouts)[:, cls] == k).double()


def relation(layouts: Layouts, a: int, rel: str, b: int, tol: float = 1e-6) -> torch.Tensor:
    """`1 − violated / checked` over the pairs (element of class a, element of class b), 1 with no pair."""
    check_finite(layouts)
    bx = layouts.boxes.double()
    ia, ib = bx[:, :, None], bx[:, None]
    if rel == "below":  # a's top at or under b's bottom
        ok = ia[..., 1] >= ib[..., 3] - tol
    elif rel == "above":
        ok = ia[..., 3] <= ib[..., 1] + tol
    elif rel == "left-of":
        ok = ia[..., 2] <= ib[..., 0] + tol
    else:
        ok = ia[..., 0] >= ib[..., 2] - tol
    e = layouts.labels.shape[1]
    pairs = (layouts.labels == a)[:, :, None] & (layouts.labels == b)[:, None] & ~torch.eye(e, dtype=torch.bool)[None]
    checked = pairs.sum((1, 2)).double()
    failed = (pairs & ~ok).sum((1, 2)).double()
    return torch.where(checked > 0, 1 - failed / checked.clamp_min(1), torch.ones_like(checked))


def aesthetic(
    layouts: Layouts, w_align: float, w_overlap: float, count_penalty: float, n_target: float
) -> torch.Tensor:
    n = layouts.counts.double()
    return -(w_align * alignment(layouts) + w_overlap * overlap(layouts)) - count_penalty * (n - n_target).abs()


# --- factories -----------------------------------------------------------------------------------------
def _on_pages(fn: Any) -> Any:
    def factory(context: dict[str, Any], **params: Any) -> RewardFn:
        return lambda x: fn(decode(x), **params)

    return factory


def _nonneg(name: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"--reward-arg {name}: {value!r} is invalid; allowed >= 0")


def _aesthetic(
    context: dict[str, Any], w_align: float, w_overlap: float, count_penalty: float, n_target: float
) -> RewardFn:
    for name, value in (("w_align", w_align), ("w_overlap", w_overlap), ("count_penalty", count_penalty)):
        _nonneg(name, value)
    if not 0 <= n_target <= 20:
        raise ValueError(f"--reward-arg n_target: {n_target!r} is invalid; allowed 0..20 elements")
    return lambda x: aesthetic(decode(x), w_align, w_overlap, count_penalty, n_target)


def _inside(context: dict[str, Any], margin: float) -> RewardFn:
    if not 0 <= margin < 0.5:
        raise ValueError(f"--reward-arg margin: {margin!r} is invalid; allowed 0 <= margin < 0.5")
    return lambda x: inside_margins(decode(x), margin)


def _count(context: dict[str, Any], cls: str, k: int) -> RewardFn:
    c = class_index(cls)
    if not 0 <= k <= 20:
        raise ValueError(f"--reward-arg k: {k!r} is invalid; allowed 0..20")
    return lambda x: count_is(decode(x), c, k)


def _relation(context: dict[str, Any], a: str, rel: str, b: str) -> RewardFn:
    ia, ib = class_index(a, "--reward-arg a"), class_index(b, "--reward-arg b")
    if rel not in RELATIONS:
        raise ValueError(f"--reward-arg rel: {rel!r} is not a relation; choose one of {list(RELATIONS)}")
    return lambda x: relation(decode(x), ia, rel, ib)


REWARDS: dict[str, RewardSpec] = {
    "alignment": RewardSpec(
        _on_pages(lambda p: -alignment(p)), DOMAIN, "minus the LayoutGAN++ alignment (0 = aligned)"
    ),
    "overlap": RewardSpec(
        _on_pages(lambda p: -overlap(p)),
        DOMAIN,
        "minus the LayoutGAN++ overlap (dropping elements pays: reward hacking)",
    ),
    "aesthetic": RewardSpec(
        _aesthetic,
        DOMAIN,
        "minus weighted alignment and overlap, minus a penalty per element away from n_target (count-preserving)",
        {"w_align": 100.0, "w_overlap": 1.0, "count_penalty": 0.1, "n_target": DATA_MEAN_ELEMENTS},
    ),
    "title-at-top": RewardSpec(_on_pages(title_at_top), DOMAIN, "1 if the topmost element is a title, else 0 (hard)"),
    "title-at-top-soft": RewardSpec(
        _on_pages(title_at_top_soft),
        DOMAIN,
        "minus the distance from the highest title to the page's top element (-1 without a title)",
    ),
    "inside-margins": RewardSpec(_inside, DOMAIN, "minus the box area outside the margins", {"margin": 0.05}),
    "count": RewardSpec(_count, DOMAIN, "1 if the page has exactly k elements of class cls", {"cls": "figure", "k": 1}),
    "relation": RewardSpec(
        _relation,
        DOMAIN,
        "1 - fraction of (a, b) pairs violating 'a rel b' (rel: below, above, left-of, right-of)",
        {"a": "figure", "rel": "below", "b": "title"},
    ),
}


def _view(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pages = decode(x)
    return pages.boxes, pages.labels


SAMPLE_VIEW = SampleView(
    "boxes (N, E, 4) as (x0, y0, x1, y1) in [0, 1] and labels (N, E) long (-1 = empty slot), as two arguments",
    _view,  # type: ignore[arg-type]  # a two-tensor view, spread over two arguments (`arguments=2`)
    arguments=2,
)
