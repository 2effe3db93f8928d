"""How good a digits flow's samples are, for inverse noise correction (docs/method.md §4.5): the Fréchet
distance in the digits classifier's feature space to the held-out split (`fd`, lower is better); the train
split is what gets inverted."""

from __future__ import annotations

from typing import Any

import torch

from pgraft.domains.digits.models import digits_split, to_model, to_unit

DATA_STREAM = 1
BOOTSTRAP_STREAM = 2


class DigitsQuality:
    """Fréchet distance of samples to the held-out digits in the classifier's features; inverts the train split."""

    metrics: tuple[str, ...] = ("fd",)
    primary: str = "fd"
    higher_is_better: bool = False
    labels: dict[str, str] = {"fd": "Fréchet distance to held-out digits (lower is better)"}  # noqa: RUF012
    bootstrap: int = 200
    """Resamples of the scored samples behind `fd_se` (and the band `fd_lo`, `fd_hi` = `fd ∓ 1.96 fd_se`)."""

    def __init__(self, model: Any, seed: int = 0) -> None:
        self.split = digits_split()
        self.seed = seed

    def real_data(self, n: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1000 + DATA_STREAM)
        order = torch.randperm(len(self.split.train_x), generator=gen)[:n]
        return to_model(self.split.train_x[order])

    def score(self, samples: torch.Tensor) -> dict[str, float]:
        """`fd`, its bootstrap standard error `fd_se` (the spread of the distance over `bootstrap` resamples of
        the samples, seeded) and the band `fd_lo`, `fd_hi` = `fd ∓ 1.96 fd_se`. The spread, not the resamples'
        quantiles: a resample repeats samples, which biases its Fréchet distance upwards (measured on 1,000
        digits-flow samples: fd 8.6, resample quantiles 7.6-12.3), so the percentile band would not contain the
        estimate's centre."""
        from pgraft.domains.digits.metrics import classifier_features, held_out_stats
        from pgraft.features import frechet_distance, gaussian_stats

        features = classifier_features(to_unit(samples))[0]
        reference = held_out_stats(None)
        fd = float(frechet_distance(*gaussian_stats(features), *reference))
        gen = torch.Generator().manual_seed(self.seed * 1000 + BOOTSTRAP_STREAM)
        draws = []
        for _ in range(self.bootstrap):
            pick = torch.randint(0, len(features), (len(features),), generator=gen)
            draws.append(float(frechet_distance(*gaussian_stats(features[pick]), *reference)))
        se = float(torch.tensor(draws, dtype=torch.float64).std())
        return {"fd": fd, "fd_se": se, "fd_lo": fd - 1.96 * se, "fd_hi": fd + 1.96 * se}
