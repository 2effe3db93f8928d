"""The judge of inverse noise correction (docs/method.md §4.5): real data to invert and a score of samples.

Each domain that supports correction gives its own (`Domain.inc.quality`); the real data that is inverted
is disjoint from the data the samples are scored against.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class Quality(Protocol):
    metrics: tuple[str, ...]
    primary: str
    higher_is_better: bool
    labels: dict[str, str]
    """Axis label of each metric."""

    def real_data(self, n: int) -> torch.Tensor:
        """Up to `n` real samples at the model's scale, disjoint from the data that `score` compares with."""
        ...

    def score(self, samples: torch.Tensor) -> dict[str, float]: ...


def make_quality(model: Any, seed: int = 0) -> Quality:
    """The quality judge of the model's domain (`ValueError` naming `--model` when it has none)."""
    from pgraft.registry import DOMAINS

    support = DOMAINS[model.domain].inc if model.domain in DOMAINS else None
    if support is None:
        supported = sorted(n for n, d in DOMAINS.items() if d.inc is not None)
        raise ValueError(
            f"--model: inverse noise correction has no quality measure for domain {model.domain!r}; "
            f"supported: {supported}"
        )
    quality: Quality = support.quality(model, seed)
    return quality
