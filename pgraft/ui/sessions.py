"""What the app keeps between events: one `Session` per browser session, and caches shared by all sessions.

Each session owns a temporary folder (its run folder and downloads), a stop flag and the view of its
current run, so two people running at once never see or disturb each other's runs. Base models are frozen
and only read, so all sessions share one copy of each (fine-tuning always works on a trainable copy).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pgraft.core.sampling import sample, sample_seeds
from pgraft.registry import DiffusionModel, load_model
from pgraft.rewards import make_reward, score

DEFAULT_ROOT = Path(tempfile.gettempdir()) / "pgraft-app"
RANGE_SAMPLES = 256
RANGE_STEPS = 50


@dataclass
class Session:
    key: str
    folder: Path
    stop: threading.Event = field(default_factory=threading.Event)
    running: bool = False
    closed: bool = False
    """The browser tab went away; a running run deletes the folder when it ends."""
    last_used: float = field(default_factory=time.monotonic)
    view: Any = None
    """The `RunView` of the latest run (see `pgraft/ui/views.py`), or None before the first."""

    @property
    def run_dir(self) -> Path:
        return self.folder / "run"


class SessionStore:
    """Sessions by key (Gradio's session hash); idle ones are swept after `ttl_s`, their folders deleted."""

    def __init__(self, root: Path | None = None, ttl_s: float = 6 * 3600) -> None:
        self.root = Path(root or DEFAULT_ROOT)
        self.ttl_s = ttl_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    @staticmethod
    def folder_name(key: str) -> str:
        if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key):
            return key
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def get(self, key: str | None) -> Session:
        key = key or "anonymous"
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                folder = self.root / self.folder_name(key)
                folder.mkdir(parents=True, exist_ok=True)
                session = self._sessions[key] = Session(key, folder)
            session.last_used = time.monotonic()
        return session

    def close(self, key: str | None) -> None:
        """Forget a session and delete its folder (the browser tab was closed); a running run is stopped
        and deletes the folder itself when it has ended."""
        with self._lock:
            session = self._sessions.pop(key or "anonymous", None)
            if session is None:
                return
            session.closed = True
            session.stop.set()
            if session.running:
                return
        shutil.rmtree(session.folder, ignore_errors=True)

    def finish(self, session: Session) -> None:
        """Mark a session's run as ended; clean up after it if its tab was closed meanwhile."""
        with self._lock:
            session.running = False
            session.stop.clear()
            closed = session.closed
        if closed:
            shutil.rmtree(session.folder, ignore_errors=True)

    def sweep(self) -> list[str]:
        """Close sessions idle for longer than the TTL; return their keys."""
        now = time.monotonic()
        with self._lock:
            stale = [k for k, s in self._sessions.items() if not s.running and now - s.last_used > self.ttl_s]
        for key in stale:
            self.close(key)
        return stale

    def __len__(self) -> int:
        return len(self._sessions)


class BaseModels:
    """Frozen base models by (name, dataset, device), and a small batch of base rewards per reward, cached.

    The reward sample sets the threshold slider's range and draws the rule's reshaping before any run.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self._models: dict[tuple[str, str], DiffusionModel] = {}
        self._rewards: dict[tuple[Any, ...], np.ndarray] = {}
        self._lock = threading.Lock()

    def get(self, name: str, dataset: str) -> DiffusionModel:
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
        context: dict[str, Any] = {"model": base}
        if base.domain == "toy2d":
            from pgraft.domains.toy2d.mixture import get_dataset

            context["mixture"] = get_dataset(dataset)
        fn = make_reward(reward, base.domain, reward_args, context)
        per = max(1, len(prompts))
        seeds = sample_seeds(0, 999_999, RANGE_SAMPLES * per)
        cond = None
        labels = None
        if base.conditional and base.encode_prompts is not None and prompts:
            labels = [p for p in prompts for _ in range(RANGE_SAMPLES)]
            cond = base.encode_prompts(labels)
        traj = sample(base, seeds, RANGE_STEPS, cond=cond)
        values = score(fn, traj.samples, labels).numpy()
        with self._lock:
            self._rewards[key] = values
        return values
