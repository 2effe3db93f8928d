"""Rewards of the digits domain (docs/method.md §5): the classifier stand-in for VQAScore, and pixel rewards.

Scale: the engine calls a reward with the model's samples `(N, 1, 8, 8)` in [-1, 1]. Each reward here
converts them once, with `to_unit` ((x + 1) / 2, clamped to [0, 1]), and then works on pixels in [0, 1];
the pixel functions (`ink`, `thickness`, ...) take `(N, C, H, W)` floats in [0, 1] and can be used on any
image. A user reward `module:function` of the digits domain receives the same pixels in [0, 1] (and the
prompts, when it takes a second argument).

| reward | value |
|---|---|
| `prompt-match` | classifier probability of the prompted digit (prompted models only) |
| `digit-prob` | classifier probability of a chosen digit |
| `ink` | mean brightness, in [0, 1] |
| `thickness` | stroke width in pixels: 2 · ink / total variation (a w × L bar scores wL / (w + L) ≈ w) |
| `symmetry` | 1 − mean \\|p − mirror(p)\\| (left–right), 1 for a mirror-symmetric image |
| `jpeg-compressibility` / `jpeg-incompressibility` | − / + the JPEG size in bytes (PIL, quality 95) |
"""

from __future__ import annotations

from typing import Any

import torch

from pgraft.images import JPEG_QUALITY, jpeg_size  # noqa: F401  (shared with the other image domains)
from pgraft.rewards import RewardFn, RewardSpec, SampleView


# --- pixel functions on (N, C, H, W) floats in [0, 1] -------------------------------------------------
def ink(p: torch.Tensor) -> torch.Tensor:
    return p.double().flatten(1).mean(1)


def total_variation(p: torch.Tensor) -> torch.Tensor:
    """Sum of absolute differences between 4-neighbours, the image padded with zeros (a soft perimeter)."""
    q = torch.nn.functional.pad(p.double(), (1, 1, 1, 1))
    return q.diff(dim=-1).abs().flatten(1).sum(1) + q.diff(dim=-2).abs().flatten(1).sum(1)


def thickness(p: torch.Tensor) -> torch.Tensor:
    """Stroke width: area over half the perimeter, `2 Σp / TV(p)` (0 for a blank image).

    A filled w × L rectangle has area wL and perimeter 2(w + L), so it scores wL / (w + L): about w for a
    long stroke, and higher for a wider one of the same length.
    """
    area = p.double().flatten(1).sum(1)
    return 2 * area / total_variation(p).clamp_min(1e-6)


def symmetry(p: torch.Tensor) -> torch.Tensor:
    return 1 - (p.double() - p.double().flip(-1)).abs().flatten(1).mean(1)


# --- reward factories ----------------------------------------------------------------------------------
def _unit(x: torch.Tensor) -> torch.Tensor:
    from pgraft.domains.digits.models import to_unit

    return to_unit(x)


def _pixels(fn: Any) -> Any:
    def factory(context: dict[str, Any]) -> RewardFn:
        return lambda x: fn(_unit(x))

    return factory


def _probabilities(x: torch.Tensor) -> torch.Tensor:
    from pgraft.domains.digits.metrics import classifier_features

    return classifier_features(_unit(x))[1].double()


def _prompt_match(context: dict[str, Any]) -> RewardFn:
    from pgraft.domains.digits.models import parse_digit

    model = context.get("model")
    if model is not None and not model.conditional:
        raise ValueError(
            f"--reward: 'prompt-match' scores the prompted digit; {model.name!r} takes no prompts "
            "(use digits-prompted, or digit-prob with --reward-arg digit=N)"
        )

    def fn(x: torch.Tensor, prompts: list[str] | None) -> torch.Tensor:
        if prompts is None or len(prompts) != len(x):
            raise ValueError("prompt-match needs one prompt per sample")
        labels = torch.tensor([parse_digit(p) for p in prompts])
        return _probabilities(x).gather(1, labels[:, None]).squeeze(1)

    return fn


def _digit_prob(context: dict[str, Any], digit: int) -> RewardFn:
    if not 0 <= digit <= 9:
        raise ValueError(f"--reward-arg digit: {digit} is not a digit; allowed 0..9")
    return lambda x: _probabilities(x)[:, digit]


def _jpeg(sign: float) -> Any:
    def factory(context: dict[str, Any]) -> RewardFn:
        return lambda x: sign * jpeg_size(_unit(x))

    return factory


REWARDS: dict[str, RewardSpec] = {
    "prompt-match": RewardSpec(
        _prompt_match, "digits", "classifier probability of the prompted digit (VQAScore stand-in)", takes_prompts=True
    ),
    "digit-prob": RewardSpec(_digit_prob, "digits", "classifier probability of one digit", {"digit": 3}),
    "ink": RewardSpec(_pixels(ink), "digits", "mean brightness in [0, 1]"),
    "thickness": RewardSpec(_pixels(thickness), "digits", "stroke width in pixels (2 ink / total variation)"),
    "symmetry": RewardSpec(_pixels(symmetry), "digits", "left-right symmetry, 1 - mean |p - mirror(p)|"),
    "jpeg-compressibility": RewardSpec(
        _jpeg(-1.0), "digits", "minus the JPEG size in bytes (smaller files score higher)"
    ),
    "jpeg-incompressibility": RewardSpec(_jpeg(1.0), "digits", "the JPEG size in bytes (larger files score higher)"),
}
SAMPLE_VIEW = SampleView("an (N, 1, 8, 8) tensor of pixels in [0, 1]", _unit)
