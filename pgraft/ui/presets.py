"""Teaching scenarios of the Rounds tab: each domain declares its presets (`Domain.presets`); a preset names
only what differs from its model's domain defaults, and presets whose model or reward is not registered
are left out of the list."""

from __future__ import annotations

from pgraft.domains.base import Preset
from pgraft.registry import MODELS, REWARDS, presets

PRESETS: tuple[Preset, ...] = tuple(presets())


def available_presets() -> list[Preset]:
    """Presets whose model and reward are registered now."""
    return [p for p in presets() if p.values.get("model") in MODELS and p.values.get("reward") in REWARDS]


def get_preset(name: str) -> Preset:
    for p in presets():
        if p.name == name:
            return p
    raise ValueError(f"preset: unknown {name!r}; choose one of {[p.name for p in available_presets()]}")
