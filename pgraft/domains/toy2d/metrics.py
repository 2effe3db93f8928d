"""Per-round metrics of the 2-D toy: realism under the true mixture, and the exact references of each round.

The evaluator carries the perfect-learning target of every round (`exact.ExactChain`, rounds compound), its
expected reward, and the distances of the model's samples to it; for P-GRAFT the target is that of a
stochastic continuation (docs/method.md §2), and `reference_note` says when the run continues otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch

from pgraft.domains.toy2d.exact import ExactChain
from pgraft.domains.toy2d.mixture import get_dataset


class ToyEvaluator:
    """Realism (log-likelihood under the true mixture, modes covered, off-mode mass) and the exact targets."""

    def __init__(
        self,
        model: Any,
        reward: Any,
        rule: Any,
        cutoff_timestep: float | None,
        stochastic_continuation: bool,
        prompts: list[str] | None = None,
    ) -> None:
        self.mixture = get_dataset(str(model.info.get("dataset", "ring8")))
        s = 0.0 if not cutoff_timestep else model.process.noise_to_signal(cutoff_timestep)
        self.chain = ExactChain(self.mixture, reward, rule, noise_to_signal=s)
        self.reference_note = (
            "exact GRAFT target"
            if s == 0
            else "exact P-GRAFT target (stochastic continuation)"
            if stochastic_continuation
            else "exact P-GRAFT target for a stochastic continuation; this run continues deterministically "
            "(DDIM eta < 1)"
        )

    def round_metrics(self, round_index: int, samples: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]:
        x = samples.double()
        counts = self.mixture.within_modes(x).sum(0)
        return {
            "loglik": float(self.mixture.log_prob(x).mean()),
            "modes_covered": int((counts >= max(1, 0.01 * len(x))).sum()),
            "off_mode": float((~self.mixture.within_modes(x).any(1)).double().mean()),
            "target_reward": self.chain.expected_reward(round_index),
            "ks_to_target": self.chain.reward_cdf_distance(round_index, rewards),
            "tv_to_target": self.chain.total_variation(round_index, x),
        }

    def round_artifacts(self, result: Any) -> dict[str, bytes]:
        """Scatter PNGs (what a tracker shows per round): the preview points, and the candidates with the
        accepted ones in colour, on the same square window every round."""
        m = self.mixture
        extent = float((m.means.abs() + 4 * m.stds).max())  # the data's window, the same every round
        return {
            "preview.png": scatter_png(result.preview_samples, None, extent=extent),
            "candidates.png": scatter_png(result.samples, result.accepted, extent=extent),
        }

    def dedup_key(self, resolution: float) -> Callable[[torch.Tensor], Sequence[Hashable]]:
        def key(x: torch.Tensor) -> list[Hashable]:
            cells = torch.floor(x.double() / resolution).long()
            return [tuple(c) for c in cells.tolist()]

        return key


def scatter_png(points: torch.Tensor, accepted: torch.Tensor | None, size: int = 256, extent: float = 4.0) -> bytes:
    """Points in [-extent, extent]^2 as a PNG: grey, or grey rejected and orange accepted."""
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    xy = ((points.double().clamp(-extent, extent) + extent) / (2 * extent) * (size - 1)).tolist()
    keep = accepted.tolist() if accepted is not None else [False] * len(xy)
    for layer in (False, True):  # the accepted on top
        colour = (230, 120, 20) if layer else (150, 150, 150)
        for (x, y), k in zip(xy, keep, strict=True):
            if k == layer:
                draw.ellipse((x - 1.5, size - 1 - y - 1.5, x + 1.5, size - 1 - y + 1.5), fill=colour)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
