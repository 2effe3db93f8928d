"""How good a toy flow's samples are, for inverse noise correction (docs/method.md §4.5): the exact mean
log-likelihood under the true mixture (`loglik`, higher is better, with its standard error `loglik_se`) and the
unbiased MMD² to fresh mixture samples (`mmd`, lower is better; a sum of Gaussian kernels at 1/16 … 1 times the
reference's median distance, fixed once so every row of a table is scored with the same kernel)."""

from __future__ import annotations

from typing import Any

import torch

from pgraft.domains.toy2d.mixture import get_dataset
from pgraft.inc.diagnostics import median_bandwidth, mmd2_unbiased

DATA_STREAM, REFERENCE_STREAM = 1, 2
MMD_POINTS = 2000
MMD_SCALES = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)


class ToyQuality:
    """Exact log-likelihood and MMD to the true mixture of a toy model."""

    metrics: tuple[str, ...] = ("loglik", "mmd")
    primary: str = "loglik"
    higher_is_better: bool = True
    labels: dict[str, str] = {"loglik": "log-likelihood (higher is better)", "mmd": "MMD² to data (lower is better)"}  # noqa: RUF012

    def __init__(self, model: Any, seed: int = 0) -> None:
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
        """`loglik` with `loglik_se`, the standard error of the mean over the samples (the tables' gains are
        judged against it), and `mmd`."""
        x = samples.double()
        logp = self.mixture.log_prob(x)
        return {
            "loglik": float(logp.mean()),
            "loglik_se": float(logp.std() / len(logp) ** 0.5) if len(logp) > 1 else float("nan"),
            "mmd": mmd2_unbiased(x[:MMD_POINTS], self.reference, self.bandwidths),
        }
