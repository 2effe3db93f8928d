"""Real data and sample quality for inverse noise correction, per domain (docs/method.md §4.5).

A quality judge gives the real data to invert (model scale) and scores generated samples against data held
out from it:

- toy: exact mean log-likelihood under the true mixture (`loglik`, higher is better) and the unbiased MMD²
  to fresh mixture samples (`mmd`, lower is better; a sum of Gaussian kernels at 1/16 … 1 times the
  reference's median distance, fixed once so every row of a table is scored with the same kernel);
- digits: the Fréchet distance in the digits classifier's feature space to the held-out split (`fd`, lower
  is better); the train split is what gets inverted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from pgraft.families.small import DiffusionModel
from pgraft.inc.diagnostics import median_bandwidth, mmd2_unbiased

DATA_STREAM, REFERENCE_STREAM = 1, 2
MMD_POINTS = 2000
MMD_SCALES = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)


class Quality(Protocol):
    metrics: tuple[str, ...]
    primary: str
    higher_is_better: bool

    def real_data(self, n: int) -> torch.Tensor:
        """Up to `n` real samples at the model's scale, disjoint from the data that `score` compares with."""
        ...

    def score(self, samples: torch.Tensor) -> dict[str, float]: ...


class ToyQuality:
    """Exact log-likelihood and MMD to the true mixture of a toy model."""

    metrics: tuple[str, ...] = ("loglik", "mmd")
    primary: str = "loglik"
    higher_is_better: bool = True

    def __init__(self, model: DiffusionModel, seed: int = 0) -> None:
        from pgraft.domains.toy2d.mixture import get_dataset

        self.mixture = get_dataset(str(model.info.get("dataset", "ring8")))
        self.seed = seed
        gen = torch.Generator().manual_seed(seed * 1000 + REFERENCE_STREAM)
        self.reference = self.mixture.sample(MMD_POINTS, gen)
        # Several scales: the median distance of a ring of modes is the ring's size, blind to each mode's shape.
        median = median_bandwidth(self.reference)
        self.bandwidths = tuple(median * f for f in MMD_SCALES)

    def real_data(self, n: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1000 + DATA_STREAM)
        return self.mixture.sample(n, gen).float()

    def score(self, samples: torch.Tensor) -> dict[str, float]:
        x = samples.double()
        return {
            "loglik": float(self.mixture.log_prob(x).mean()),
            "mmd": mmd2_unbiased(x[:MMD_POINTS], self.reference, self.bandwidths),
        }


class DigitsQuality:
    """Fréchet distance of samples to the held-out digits in the classifier's features; inverts the train split."""

    metrics: tuple[str, ...] = ("fd",)
    primary: str = "fd"
    higher_is_better: bool = False

    def __init__(self, model: DiffusionModel, seed: int = 0) -> None:
        from pgraft.domains.digits.models import digits_split

        self.split = digits_split()
        self.seed = seed

    def real_data(self, n: int) -> torch.Tensor:
        from pgraft.domains.digits.models import to_model

        gen = torch.Generator().manual_seed(self.seed * 1000 + DATA_STREAM)
        order = torch.randperm(len(self.split.train_x), generator=gen)[:n]
        return to_model(self.split.train_x[order])

    def score(self, samples: torch.Tensor) -> dict[str, float]:
        from pgraft.domains.digits.metrics import frechet_to_held_out
        from pgraft.domains.digits.models import to_unit

        return {"fd": float(frechet_to_held_out(to_unit(samples)))}


QUALITIES: dict[str, Callable[[DiffusionModel, int], Quality]] = {"toy2d": ToyQuality, "digits": DigitsQuality}


def make_quality(model: DiffusionModel, seed: int = 0) -> Quality:
    if model.domain not in QUALITIES:
        raise ValueError(
            f"--model: inverse noise correction has no quality measure for domain {model.domain!r}; "
            f"supported: {sorted(QUALITIES)}"
        )
    return QUALITIES[model.domain](model, seed)
