"""Analytic rewards on 2-D samples `(N, 2)`: coordinates, distances, a mode, a ring band."""

from __future__ import annotations

from typing import Any

import torch

from pgraft.rewards import RewardFn, RewardSpec, SampleView


def _coordinate(index: int) -> RewardFn:
    return lambda x: x[:, index].double()


def _x(context: dict[str, Any]) -> RewardFn:
    return _coordinate(0)


def _y(context: dict[str, Any]) -> RewardFn:
    return _coordinate(1)


def _distance(context: dict[str, Any], px: float, py: float) -> RewardFn:
    point = torch.tensor([px, py], dtype=torch.float64)
    return lambda x: -(x.double() - point).norm(dim=-1)


def _mode(context: dict[str, Any], index: int) -> RewardFn:
    mixture = context.get("mixture")
    if mixture is None:
        raise ValueError("--reward: 'mode' needs a toy model whose data set is known")
    if not 0 <= index < mixture.num_modes:
        raise ValueError(
            f"--reward-arg index: {index} is not a mode; the data set has modes 0..{mixture.num_modes - 1}"
        )
    center = mixture.means[index]
    return lambda x: -(x.double() - center).norm(dim=-1)


def _ring_band(context: dict[str, Any], radius: float) -> RewardFn:
    return lambda x: -(x.double().norm(dim=-1) - radius).abs()


REWARDS: dict[str, RewardSpec] = {
    "x": RewardSpec(_x, "toy2d", "the first coordinate: push mass to the right"),
    "y": RewardSpec(_y, "toy2d", "the second coordinate: push mass up"),
    "distance": RewardSpec(_distance, "toy2d", "minus the distance to a point (px, py)", {"px": 4.0, "py": 0.0}),
    "mode": RewardSpec(_mode, "toy2d", "minus the distance to one mode's centre", {"index": 0}),
    "ring-band": RewardSpec(
        _ring_band,
        "toy2d",
        "minus the distance to a circle of the given radius (off the data: hackable)",
        {"radius": 2.0},
    ),
}
SAMPLE_VIEW = SampleView("an (N, 2) tensor of points")
