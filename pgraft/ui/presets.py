"""Teaching scenarios for the Rounds tab: each preset is a note and the control values it sets.

A preset names only what differs from its model's domain defaults (`controls.DOMAIN_DEFAULTS`); presets
whose model is not registered are left out of the list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pgraft.registry import MODELS


@dataclass(frozen=True)
class Preset:
    name: str
    note: str
    values: dict[str, Any] = field(default_factory=dict)


PRESETS: tuple[Preset, ...] = (
    Preset(
        "Push right: GRAFT basics",
        "Reward = the x coordinate, best of 4. Each round keeps the best of every 4 samples and fine-tunes on "
        "them: the mass moves right, round by round, and the measured reward follows the exact target's.",
        dict(model="toy2d", dataset="ring8", reward="x", reward_args="", method="graft", rule="best-of-n", n=4),
    ),
    Preset(
        "Why P-GRAFT helps: a rare mode",
        "Five modes of unequal weight; the reward favours the rarest (8 %). P-GRAFT shapes the distribution at "
        "noise level t_c and lets the base model finish: compare cutoffs 0.2 and 0.6, and GRAFT (t_c = 0), on "
        "the distance to the exact target and the log-likelihood.",
        dict(
            model="toy2d",
            dataset="asymmetric",
            reward="mode",
            reward_args="index=4",
            method="pgraft",
            cutoff=0.4,
            rule="quantile",
            quantile=0.8,
            rounds=4,
        ),
    ),
    Preset(
        "Reward hacking: a ring off the data",
        "Reward = closeness to a circle of radius 2, where the data has no mass (its modes sit at radius 4). "
        "The reward keeps rising while the log-likelihood under the data falls: the model leaves the data to "
        "please the reward.",
        dict(
            model="toy2d",
            dataset="ring8",
            reward="ring-band",
            reward_args="radius=2.0",
            method="graft",
            rule="quantile",
            quantile=0.75,
            rounds=5,
        ),
    ),
    Preset(
        "Best of 4 = KL 0.636",
        "Best of n accepts a sample at reward quantile u with probability a(u) = u^(n−1): the accepted law is "
        "n F^(n−1) times the current one, at KL log n − (n−1)/n = 0.636 for n = 4 whatever the reward (the rule "
        "plot). On the exact model the accepted samples of round 0 follow round 1's exact target (table: "
        "accepted_reward_mean of round 0 against target_reward of round 1); the fine-tuned model of round 1 "
        "falls short of it by its learning error.",
        dict(
            model="toy2d-exact",
            dataset="asymmetric",
            reward="x",
            reward_args="",
            method="graft",
            rule="best-of-n",
            n=4,
            rounds=1,
            samples=2048,
            num_inference_steps=100,
        ),
    ),
    Preset(
        "Reward hacking on digits: one digit wins",
        "Reward = the classifier's probability of a 3. The reward climbs round by round (0.11, 0.38, 0.72 with "
        "the defaults) because the samples turn into 3s: the class entropy falls and the Fréchet distance to "
        "real digits grows. Add rounds to watch diversity collapse.",
        dict(model="digits", reward="digit-prob", reward_args="digit=3", method="graft", rule="best-of-n", n=4),
    ),
    Preset(
        "Prompted digits: follow the prompt",
        "A class-conditional model with prompts 3 and 8; the reward is the classifier's probability of the "
        "prompted digit, and each prompt's samples are judged among themselves.",
        dict(
            model="digits-prompted",
            prompts=["3", "8"],
            reward="prompt-match",
            reward_args="",
            method="graft",
            rule="best-of-n",
            n=4,
        ),
    ),
)


def available_presets() -> list[Preset]:
    """Presets whose model and reward are registered now."""
    from pgraft.rewards import REWARDS, _ensure_builtin

    _ensure_builtin()
    return [p for p in PRESETS if p.values.get("model") in MODELS and p.values.get("reward") in REWARDS]


def get_preset(name: str) -> Preset:
    for p in PRESETS:
        if p.name == name:
            return p
    raise ValueError(f"preset: unknown {name!r}; choose one of {[p.name for p in available_presets()]}")
