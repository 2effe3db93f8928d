"""The base models every session of the app shares (frozen, only read: fine-tuning works on a trainable copy),
and a small cached batch of base rewards per reward, which spans the threshold slider and previews a rule."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from pgraft.core.sampling import sample, sample_seeds
from pgraft.registry import load_model, make_reward, reward_context
from pgraft.rewards import score

RANGE_SAMPLES = 256
RANGE_STEPS = 50


class BaseModels:
    """Frozen base models by (name, dataset, device), and a small batch of base rewards per reward, cached.

    The reward sample sets the threshold slider's range and draws the rule's reshaping before any run.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self._models: dict[tuple[str, str], Any] = {}
        self._rewards: dict[tuple[Any, ...], np.ndarray] = {}
        self._lock = threading.Lock()

    def get(self, name: str, dataset: str) -> Any:
        key = (name, dataset)
        with self._lock:
            if key not in self._models:
                self._models[key] = load_model(name, device=self.device, dataset=dataset)
            return self._models[key]

    def base_rewards(
        self, name: str, dataset: str, reward: str, reward_args: dict[str, Any], prompts: list[str]
    ) -> np.ndarray:
        """Rewards of `RANGE_SAMPLES` base samples (per prompt), drawn once per (model, reward, arguments)."""
        key = (name, dataset, reward, tuple(sorted(reward_args.items())), tuple(prompts))
        with self._lock:
            cached = self._rewards.get(key)
        if cached is not None:
            return cached
        base = self.get(name, dataset)
        fn = make_reward(reward, base.domain, reward_args, reward_context(base))
        per = max(1, len(prompts))
        seeds = sample_seeds(0, 999_999, RANGE_SAMPLES * per)
        cond = None
        labels = None
        if base.conditional and prompts:
            labels = [p for p in prompts for _ in range(RANGE_SAMPLES)]
            cond = base.encode(labels)
        traj = sample(base, seeds, RANGE_STEPS, cond=cond)
        values = score(fn, base.decode(traj.samples), labels).numpy()
        with self._lock:
            self._rewards[key] = values
        return values
