"""A seeded procedural generator of PubLayNet-like document pages, and the slot representation the layout
denoiser sees (shared/docs/domains.md §A.4).

A page is a list of elements, each a class among `CLASSES` (PubLayNet's text, title, list, table, figure)
and a box `(x0, y0, x1, y1)` in the unit page (x to the right, y down). Pages have margins, one or two
columns, an optional full-width title (often followed by an abstract-like text block), an optional
full-width float on two-column pages, and columns filled top-down with text, section headings (class
`title`), lists, figures and tables separated by gaps. Every block spans its column or is centred in it, so
without `jitter` each element shares an edge or centre with another one (alignment 0: a centred float only
where a full-width block of its column shares its centre) and no two overlap.

Representation (`encode` / `decode`): `SLOTS` slots of `FEATURES` values each, the class one-hot over the
five classes plus "empty" mapped to ±1, then the box as `(x_c, y_c, w, h)` mapped to `2b − 1`; elements
sorted by (top, left), empty slots at the end with box 0 (LACE's representation with an explicit empty class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

CLASSES = ("text", "title", "list", "table", "figure")
EMPTY = len(CLASSES)
"""Class index of an empty slot in the model's one-hot (labels use −1 for it)."""
SLOTS = 20
FEATURES = len(CLASSES) + 1 + 4
BLOCK_PROBS = (0.55, 0.10, 0.10, 0.13, 0.12)
"""Default probabilities of a column block's class, in `CLASSES` order."""
HEIGHTS = {
    "text": (0.04, 0.22),
    "title": (0.012, 0.025),
    "list": (0.04, 0.15),
    "table": (0.08, 0.25),
    "figure": (0.12, 0.30),
}


@dataclass(frozen=True)
class Layouts:
    """A batch of pages: `boxes (N, E, 4)` as `(x0, y0, x1, y1)` and `labels (N, E)` long, −1 = empty slot."""

    boxes: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def valid(self) -> torch.Tensor:
        return self.labels >= 0

    @property
    def counts(self) -> torch.Tensor:
        return self.valid.sum(1)

    def __getitem__(self, index: Any) -> Layouts:
        return Layouts(self.boxes[index], self.labels[index])


@dataclass(frozen=True)
class GeneratorOptions:
    """What the generator varies; validated on creation (errors name the field, the value and what is allowed)."""

    jitter: float = 0.0
    """Standard deviation of Gaussian noise added to every box coordinate (0: exactly aligned pages)."""
    block_probs: tuple[float, ...] = BLOCK_PROBS
    """Probabilities of a column block being text, title (section heading), list, table, figure."""
    title_prob: float = 0.45
    two_column_prob: float = 0.65
    max_elements: int = SLOTS

    def __post_init__(self) -> None:
        if not (np.isfinite(self.jitter) and 0 <= self.jitter <= 0.1):
            raise ValueError(f"jitter: {self.jitter!r} is invalid; allowed 0 <= jitter <= 0.1")
        probs = tuple(float(p) for p in self.block_probs)
        if len(probs) != len(CLASSES) or any(not np.isfinite(p) or p < 0 for p in probs) or sum(probs) <= 0:
            raise ValueError(
                f"block_probs: {self.block_probs!r} is invalid; give {len(CLASSES)} non-negative numbers "
                f"(for {', '.join(CLASSES)}) with a positive sum"
            )
        for name in ("title_prob", "two_column_prob"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name}: {value!r} is invalid; allowed 0..1")
        if not 1 <= self.max_elements <= SLOTS:
            raise ValueError(f"max_elements: {self.max_elements!r} is invalid; allowed 1..{SLOTS}")


def _page(rng: np.random.Generator, opt: GeneratorOptions) -> list[tuple[int, float, float, float, float]]:
    """One page as `(class, x0, y0, x1, y1)` elements (see the module docstring for the recipe)."""
    probs = np.asarray(opt.block_probs, dtype=float) / sum(opt.block_probs)
    left, right = rng.uniform(0.07, 0.12), 1 - rng.uniform(0.07, 0.12)
    top, bottom = rng.uniform(0.06, 0.10), 1 - rng.uniform(0.06, 0.10)
    out: list[tuple[int, float, float, float, float]] = []
    y = top

    def gap() -> float:
        return float(rng.uniform(0.008, 0.018))

    if rng.random() < opt.title_prob:
        h = rng.uniform(0.03, 0.07)
        out.append((1, left, y, right, y + h))
        y += h + gap()
        if rng.random() < 0.6:
            h = rng.uniform(0.05, 0.12)
            out.append((0, left, y, right, y + h))
            y += h + gap()
    two = rng.random() < opt.two_column_prob
    floats = [c for c in (3, 4) if probs[c] > 0]  # a full-width table or figure: the classes allowed
    if two and rng.random() < 0.25 and floats:
        cls = int(rng.choice([3, 4])) if len(floats) == 2 else floats[0]
        h = rng.uniform(0.15, 0.30)
        if y + h < bottom - 0.1:
            out.append((cls, left, y, right, y + h))
            y += h + gap()
    if two:
        g = rng.uniform(0.03, 0.05)
        mid = (left + right) / 2
        columns = [(left, mid - g / 2), (mid + g / 2, right)]
    else:
        columns = [(left, right)]
    for c0, c1 in columns:
        cy, previous = y, -1
        # A centred float needs a full-width block of its column to share its centre (alignment 0).
        spanned = not two and bool(out)
        while True:
            cls = 0 if previous == 1 else int(rng.choice(len(CLASSES), p=probs))
            name = CLASSES[cls]
            h = rng.uniform(*HEIGHTS[name])
            room = bottom - cy
            if name == "title" and room < 0.08:
                break
            if h > room:
                if name in ("text", "list") and room > 0.02:
                    h = room
                else:
                    break
            x0, x1 = c0, c1
            if name == "list":
                x0 = c0 + rng.uniform(0.01, 0.03)
            elif name in ("figure", "table") and rng.random() < 0.3:
                shrink = (c1 - c0) * rng.uniform(0.1, 0.25)
                if spanned:
                    x0, x1 = c0 + shrink, c1 - shrink
            spanned = spanned or (x0 == c0 and x1 == c1)
            out.append((cls, x0, cy, x1, cy + h))
            cy += h + gap()
            previous = cls
            if cy >= bottom - 0.02:
                break
    return out[: opt.max_elements]


def generate(n: int, seed: int = 0, options: GeneratorOptions | None = None) -> Layouts:
    """`n` pages from a `numpy` generator seeded with `seed`, in reading order (top, then left)."""
    opt = options or GeneratorOptions()
    rng = np.random.default_rng(seed)
    boxes = torch.zeros(n, SLOTS, 4)
    labels = torch.full((n, SLOTS), -1, dtype=torch.long)
    for i in range(n):
        page = _page(rng, opt)
        if opt.jitter > 0:
            page = [(c, *(np.asarray(b) + rng.normal(0, opt.jitter, 4)).clip(0, 1)) for c, *b in page]
        page.sort(key=lambda e: (round(e[2], 6), round(e[1], 6)))
        for j, (c, *b) in enumerate(page):
            labels[i, j] = c
            boxes[i, j] = torch.tensor(b, dtype=torch.float64).float()
    return Layouts(boxes, labels)


# --- the slot representation ---------------------------------------------------------------------------
def encode(layouts: Layouts) -> torch.Tensor:
    """`(N, SLOTS, FEATURES)` model tensors in [−1, 1] (see the module docstring)."""
    n, e = layouts.labels.shape
    if e > SLOTS:
        raise ValueError(f"encode: {e} elements per page; the model has {SLOTS} slots")
    x = torch.zeros(n, SLOTS, FEATURES)
    cls = torch.full((n, SLOTS), EMPTY, dtype=torch.long)
    cls[:, :e] = torch.where(layouts.labels >= 0, layouts.labels, EMPTY)
    x[..., : EMPTY + 1] = torch.nn.functional.one_hot(cls, EMPTY + 1).float() * 2 - 1
    b = layouts.boxes.float()
    xywh = torch.stack(
        [(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2, b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]], -1
    )
    valid = (layouts.labels >= 0)[..., None]
    x[:, :e, EMPTY + 1 :] = torch.where(valid, xywh * 2 - 1, torch.zeros_like(xywh))
    return x


def decode(x: torch.Tensor) -> Layouts:
    """Model tensors to pages: argmax class ("empty" drops the slot), box `clip((v + 1)/2, 0, 1)` as
    `(x_c, y_c, w, h)`, returned as `(x0, y0, x1, y1)` (which may leave the unit page)."""
    x = x.float()
    if x.dim() != 3 or x.shape[-1] != FEATURES:
        raise ValueError(f"decode: expected (N, slots, {FEATURES}) layout tensors, got {tuple(x.shape)}")
    cls = x[..., : EMPTY + 1].argmax(-1)
    xywh = ((x[..., EMPTY + 1 :] + 1) / 2).clamp(0, 1)
    half = xywh[..., 2:] / 2
    boxes = torch.cat([xywh[..., :2] - half, xywh[..., :2] + half], -1)
    labels = torch.where(cls == EMPTY, -1, cls)
    boxes = torch.where((labels >= 0)[..., None], boxes, torch.zeros_like(boxes))
    return Layouts(boxes, labels)
