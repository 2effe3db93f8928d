"""How good a digits flow's samples are, for inverse noise correction (docs/method.md §4.5): the Fréchet
distance in the digits classifier's feature space to the held-out split (`fd`, lower is better); the train
split is what gets inverted."""

from __future__ import annotations

from typing import Any

import torch

from pgraft.domains.digits.metrics import frechet_to_held_out
from pgraft.domains.digits.models import digits_split, to_model, to_unit

DATA_STREAM = 1


class DigitsQuality:
    """Fréchet distance of samples to the held-out digits in the classifier's features; inverts the train split."""

    metrics: tuple[str, ...] = ("fd",)
    primary: str = "fd"
    higher_is_better: bool = False
    labels: dict[str, str] = {"fd": "Fréchet distance to held-out digits (lower is better)"}  # noqa: RUF012

    def __init__(self, model: Any, seed: int = 0) -> None:
        self.split = digits_split()
        self.seed = seed

    def real_data(self, n: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1000 + DATA_STREAM)
        order = torch.randperm(len(self.split.train_x), generator=gen)[:n]
        return to_model(self.split.train_x[order])

    def score(self, samples: torch.Tensor) -> dict[str, float]:
        return {"fd": float(frechet_to_held_out(to_unit(samples)))}
