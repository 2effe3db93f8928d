"""Realism of the `layouts` domain, shown next to the reward every round (reward hacking shows here first:
an overlap reward that drops elements lowers `elements` and raises `frechet`).

- `elements`: mean elements per page; `class_<name>`: the class histogram (fraction of all elements);
- `alignment_x100`, `overlap_x100`: LayoutGAN++ alignment and overlap × 100 of the samples, and
  `data_alignment_x100`, `data_overlap_x100` of held-out pages as the reference (constant columns, so a plot
  shows them as lines);
- `frechet`: Fréchet distance between Gaussians fitted to `measures.layout_features` of the samples and of
  `REFERENCE_PAGES` held-out pages (counts, class counts, per-class occupancy of a 6 × 4 grid, alignment,
  overlap); `frechet_base` the same to the base model's samples (round 0);
- `inside_page`: the fraction of boxes inside the unit page; `empty_pages`: the fraction with no element.

`round_artifacts` writes `preview.png` (the preview pages, the same seeds every round) and `candidates.png`
(accepted pages framed green); `dedup_key` quantises classes and boxes.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from functools import lru_cache
from typing import Any

import torch

from pgraft.domains.layouts.generator import CLASSES, Layouts, decode, generate
from pgraft.domains.layouts.measures import alignment, class_counts, inside_fraction, layout_features, overlap
from pgraft.features import frechet_distance, gaussian_stats

REFERENCE_PAGES = 2000
REFERENCE_SEED = 10_000_019
"""The held-out pages (`training.HELD_OUT_SEED`: a generator seed training never uses)."""
PREVIEW_PAGES = 24
CANDIDATE_PAGES = 32


@lru_cache(maxsize=4)
def reference_stats(n: int = REFERENCE_PAGES) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Feature statistics, alignment and overlap of `n` held-out pages."""
    pages = generate(n, REFERENCE_SEED)
    mu, cov = gaussian_stats(layout_features(pages))
    return mu, cov, float(alignment(pages).mean()), float(overlap(pages).mean())


def frechet_layouts(pages: Layouts, reference: Layouts | None = None) -> float:
    """Fréchet distance of `pages` to `reference` (default: the held-out pages) in layout features."""
    stats = gaussian_stats(layout_features(pages))
    ref = gaussian_stats(layout_features(reference)) if reference is not None else reference_stats()[:2]
    return frechet_distance(*stats, *ref)


def realism(pages: Layouts) -> dict[str, float]:
    counts = class_counts(pages)
    freq = counts.sum(0) / counts.sum().clamp_min(1)
    return {
        "elements": float(pages.counts.double().mean()),
        **{f"class_{name}": float(f) for name, f in zip(CLASSES, freq)},
        "alignment_x100": float(alignment(pages).mean()) * 100,
        "overlap_x100": float(overlap(pages).mean()) * 100,
        "inside_page": inside_fraction(pages),
        "empty_pages": float((pages.counts == 0).double().mean()),
    }


class LayoutsEvaluator:
    """Per-round realism metrics of the layouts domain (see the module docstring)."""

    def __init__(
        self,
        model: Any = None,
        reward: Any = None,
        rule: Any = None,
        cutoff_timestep: float | None = None,
        stochastic_continuation: bool = True,
        prompts: list[str] | None = None,
    ) -> None:
        self.base_stats: tuple[torch.Tensor, torch.Tensor] | None = None

    def round_metrics(self, round_index: int, samples: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]:
        pages = decode(samples)
        stats = gaussian_stats(layout_features(pages))
        if round_index == 0:
            self.base_stats = stats
        mu, cov, data_align, data_overlap = reference_stats()
        return {
            **realism(pages),
            "data_alignment_x100": data_align * 100,
            "data_overlap_x100": data_overlap * 100,
            "frechet": frechet_distance(*stats, mu, cov),
            "frechet_base": frechet_distance(*stats, *self.base_stats) if self.base_stats else float("nan"),
        }

    def dedup_key(self, resolution: float) -> Callable[[torch.Tensor], Sequence[Hashable]]:
        def key(x: torch.Tensor) -> list[Hashable]:
            pages = decode(x)
            cells = torch.floor(pages.boxes / resolution).to(torch.int16)
            return [
                bytes(torch.cat([lab.to(torch.int16), c.flatten()]).numpy().tobytes())
                for lab, c in zip(pages.labels, cells)
            ]

        return key

    def round_artifacts(self, result: Any) -> dict[str, bytes]:
        from pgraft.domains.layouts.draw import grid_png

        k = CANDIDATE_PAGES
        return {
            "preview.png": grid_png(decode(result.preview_samples[:PREVIEW_PAGES]), columns=8),
            "candidates.png": grid_png(decode(result.samples[:k]), columns=8, accepted=result.accepted[:k]),
        }


def samples_figure(first: Any, latest: Any, evaluator: Any = None) -> Any:
    """The app's before/after picture: round 0's and the latest round's preview pages (same seeds)."""
    from pgraft.domains.layouts.draw import pages_figure

    return pages_figure(
        decode(first.preview_samples),
        decode(latest.preview_samples),
        first.preview_rewards,
        latest.preview_rewards,
        f"pages from the same seeds: round 0 (top) and round {latest.round} (bottom)",
    )
