"""Quality metrics of the digits domain, shown next to the reward every round (docs/method.md §5).

Reward hacking and collapse show up here before they show in the reward:

- `fid_real`: Fréchet distance between the round's samples and real held-out digits, in the 64-dimensional
  penultimate features of the reward classifier (the FID recipe with the digits classifier standing in for
  Inception). For a prompted run the reference is the held-out digits of the prompted classes, one block per
  prompt, like the samples. The reference is small (about 36 images per class), so the distance carries a
  sample-size bias: compare rounds with one another, not with FIDs of other data sets.
- `fid_base`: the same distance to the base model's samples (round 0, which the runner evaluates first);
  it is 0 at round 0 and NaN on a resumed run, whose round 0 this evaluator did not see.
- `class_0` … `class_9`: the classifier's class histogram; `class_entropy` (nats, log 10 = 2.30 for all
  classes equally often) and `diversity` (mean pairwise feature distance) measure diversity;
  `confident`: the fraction of samples classified with confidence > 0.9 (real digits: about 97 %).

The evaluator also renders each round's sample grids (`round_artifacts`), and its `dedup_key` quantises
pixels, so `dedup-top-k` treats images equal on a `dedup_resolution` grid in [0, 1] as duplicates.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from functools import lru_cache
from typing import Any

import torch

from pgraft.features import frechet_distance, gaussian_stats, mean_pairwise_distance

CONFIDENT = 0.9


def classifier_features(x_unit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(features (N, 64), probabilities (N, 10))` of pixels in [0, 1] by the shipped classifier (CPU)."""
    from pgraft.domains.digits.classifier import load_classifier

    net = load_classifier("cpu")
    feats, probs = [], []
    with torch.inference_mode():
        for batch in x_unit.float().cpu().split(2048):
            f = net.features(batch)
            feats.append(f)
            probs.append(net.head(f).softmax(-1))
    return torch.cat(feats), torch.cat(probs)


def classify(x_unit: torch.Tensor) -> torch.Tensor:
    """Class probabilities `(N, 10)` of pixels in [0, 1] by the shipped classifier."""
    return classifier_features(x_unit)[1]


@lru_cache(maxsize=16)
def held_out_stats(classes: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature statistics of the held-out digits: all of them, or one block per listed class."""
    from pgraft.domains.digits.models import digits_split

    split = digits_split()
    x = split.held_x if classes is None else torch.cat([split.held_x[split.held_y == c] for c in classes])
    return gaussian_stats(classifier_features(x)[0])


def frechet_to_held_out(x_unit: torch.Tensor, classes: tuple[int, ...] | None = None) -> float:
    """Fréchet distance of pixels in [0, 1] to the held-out digits (of `classes`, when given)."""
    mu, cov = gaussian_stats(classifier_features(x_unit)[0])
    return frechet_distance(mu, cov, *held_out_stats(classes))


def class_histogram(probs: torch.Tensor) -> torch.Tensor:
    """Fraction of samples whose most probable class is each digit, `(10,)`."""
    return torch.bincount(probs.argmax(-1), minlength=10).double() / max(1, len(probs))


class DigitsEvaluator:
    """Per-round image metrics of the digits domain (see the module docstring)."""

    def __init__(
        self,
        model: Any,
        reward: Any,
        rule: Any,
        cutoff_timestep: float | None,
        stochastic_continuation: bool,
        prompts: list[str] | None = None,
    ) -> None:
        from pgraft.domains.digits.models import encode_digit_prompts

        self.labels = encode_digit_prompts(prompts) if prompts else None
        self.classes = tuple(int(c) for c in self.labels) if self.labels is not None else None
        self.base_stats: tuple[torch.Tensor, torch.Tensor] | None = None

    def round_metrics(self, round_index: int, samples: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]:
        from pgraft.domains.digits.models import to_unit

        feats, probs = classifier_features(to_unit(samples))
        stats = gaussian_stats(feats)
        if round_index == 0:
            self.base_stats = stats
        hist = class_histogram(probs)
        metrics = {
            "fid_real": frechet_distance(*stats, *held_out_stats(self.classes)),
            "fid_base": frechet_distance(*stats, *self.base_stats) if self.base_stats else float("nan"),
            "confident": float((probs.max(-1).values > CONFIDENT).double().mean()),
            "class_entropy": float(-(hist * hist.clamp_min(1e-12).log()).sum()),
            "diversity": mean_pairwise_distance(feats),
        }
        if self.labels is not None and len(samples) % len(self.labels) == 0:
            # The runner lays candidates out as one block of equal size per prompt.
            labels = self.labels.repeat_interleave(len(samples) // len(self.labels))
            metrics["prompt_class_match"] = float((probs.argmax(-1) == labels).double().mean())
        metrics.update({f"class_{c}": float(h) for c, h in enumerate(hist)})
        return metrics

    def dedup_key(self, resolution: float) -> Callable[[torch.Tensor], Sequence[Hashable]]:
        from pgraft.domains.digits.models import to_unit

        def key(x: torch.Tensor) -> list[Hashable]:
            cells = torch.floor(to_unit(x) / resolution).to(torch.int16).flatten(1)
            return [bytes(row.numpy().tobytes()) for row in cells]

        return key

    def round_artifacts(self, result: Any) -> dict[str, bytes]:
        """PNG grids: the preview (same seeds every round) and the candidates with the accepted ones framed."""
        from pgraft.images import candidates_png, preview_png

        return {
            "preview.png": preview_png(result.preview_samples, result.preview_groups),
            "candidates.png": candidates_png(result.samples, result.groups, result.accepted),
        }
