"""Per-round quality metrics of a domain, shown next to the reward so that hacking and collapse are visible.

An evaluator is built once per run from the base model, the reward and the rule, and asked for a dict of
named numbers for every round's samples. The toy's evaluator also carries the exact references: the
perfect-learning target of each round (`exact.ExactChain`), its expected reward, and the distances of the
model's samples to it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol

import torch

from pgraft.core.acceptance import AcceptanceRule
from pgraft.families.small import DiffusionModel
from pgraft.rewards import Reward


class Evaluator(Protocol):
    def round_metrics(self, round_index: int, samples: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]: ...

    def dedup_key(self, resolution: float) -> Callable[[torch.Tensor], Sequence[Hashable]]: ...


class ToyEvaluator:
    """Realism (log-likelihood under the true mixture, modes covered, off-mode mass) and the exact targets."""

    def __init__(
        self,
        model: DiffusionModel,
        reward: Reward,
        rule: AcceptanceRule,
        cutoff_timestep: float | None,
        stochastic_continuation: bool,
    ) -> None:
        from pgraft.domains.toy2d.exact import ExactChain
        from pgraft.domains.toy2d.mixture import get_dataset

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

    def dedup_key(self, resolution: float) -> Callable[[torch.Tensor], Sequence[Hashable]]:
        def key(x: torch.Tensor) -> list[Hashable]:
            cells = torch.floor(x.double() / resolution).long()
            return [tuple(c) for c in cells.tolist()]

        return key


class NoEvaluator:
    """For domains without metrics of their own: only the reward statistics are reported."""

    def round_metrics(self, round_index: int, samples: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]:
        return {}

    def dedup_key(self, resolution: float) -> Callable[[torch.Tensor], Sequence[Hashable]]:
        return lambda x: [bytes(row.numpy().tobytes()) for row in x.detach().cpu().contiguous()]


def _digits_evaluator(*args: Any, **kwargs: Any) -> Any:
    from pgraft.domains.digits.metrics import DigitsEvaluator

    return DigitsEvaluator(*args, **kwargs)


EVALUATORS: dict[str, Callable[..., Any]] = {"toy2d": ToyEvaluator, "digits": _digits_evaluator}


def make_evaluator(
    model: DiffusionModel,
    reward: Reward,
    rule: AcceptanceRule,
    cutoff_timestep: float | None,
    stochastic_continuation: bool,
    prompts: list[str] | None = None,
) -> Evaluator:
    """The domain's evaluator; a run's prompts are passed (as `prompts=`) only when there are some."""
    factory = EVALUATORS.get(model.domain)
    if factory is None:
        return NoEvaluator()
    extra = {"prompts": list(prompts)} if prompts else {}
    evaluator: Evaluator = factory(model, reward, rule, cutoff_timestep, stochastic_continuation, **extra)
    return evaluator
