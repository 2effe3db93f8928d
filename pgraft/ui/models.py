"""The base models every session of the app shares (frozen, only read: fine-tuning works on a trainable copy),
and a small cached batch of base rewards per reward, which spans the threshold slider and previews a rule."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from pgraft.core.sampling import sample, sample_seeds
from pgraft.registry import get_model_spec, load_model, make_reward, reward_context
from pgraft.rewards import score

RANGE_SAMPLES = 256
RANGE_STEPS = 50


class BaseModels:
    """Frozen base models by (name, dataset, device), and a small batch of base rewards per reward, cached.

    The reward sample sets the threshold slider's range and draws the rule's reshaping before any run.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self._models: dict[tuple[str, str, str | None], Any] = {}
        self._rewards: dict[tuple[Any, ...], np.ndarray] = {}
        self._lock = threading.Lock()

    def get(self, name: str, dataset: str, dtype: str = "auto") -> Any:
        """The loaded base model (one copy per name, data set and, for pipelines, dtype)."""
        takes_dtype = "dtype" in get_model_spec(name).options
        key = (name, dataset, dtype if takes_dtype else None)
        with self._lock:
            if key not in self._models:
                options = {"dataset": dataset, "dtype": dtype} if takes_dtype else {"dataset": dataset}
                self._models[key] = load_model(name, device=self.device, **options)
            return self._models[key]

    def get_for(self, config: Any) -> Any:
        """The base model of a run: the cached one, with the run's pipeline options (guidance, size, LoRA)
        applied over the same loaded weights when the model takes them."""
        spec = get_model_spec(config.model)
        base = self.get(config.model, config.dataset, config.dtype)
        configure = getattr(base, "configured", None)
        if callable(configure):
            return configure(**{k: getattr(config, k) for k in spec.options if hasattr(config, k)})
        return base

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
        count, steps = getattr(base, "range_samples", RANGE_SAMPLES), getattr(base, "range_steps", RANGE_STEPS)
        per = max(1, len(prompts))
        seeds = sample_seeds(0, 999_999, count * per)
        cond = None
        labels = None
        if base.conditional and prompts:
            labels = [p for p in prompts for _ in range(count)]
            cond = base.encode(labels)
        traj = sample(base, seeds, steps, cond=cond)
        values = score(fn, base.decode(traj.samples), labels).numpy()
        with self._lock:
            self._rewards[key] = values
        return values
