"""One session, stop and temporary-folder mechanism for every tab of the app.

Each browser session owns a folder under the app's root and, per tab, a `Job`: the tab's own subfolder
(its run folder, its downloads), a stop flag and whether it is running. Two people running at once never
see or disturb each other's work, and a tab's Stop stops only that tab's job. When the browser tab goes
away the session's folder is deleted (by the job still running, when it ends); sessions idle past their
time are swept.
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

DEFAULT_ROOT = Path(tempfile.gettempdir()) / "pgraft-app"
ROUNDS = "rounds"


@dataclass
class Job:
    """One tab's work in a session."""

    folder: Path
    stop: threading.Event = field(default_factory=threading.Event)
    running: bool = False


@dataclass
class Session:
    key: str
    folder: Path
    closed: bool = False
    """The browser tab went away; a running job deletes the folder when it ends."""
    last_used: float = field(default_factory=time.monotonic)
    view: Any = None
    """The Rounds tab's `RunView` of the latest run (see `pgraft/ui/views.py`), or None before the first."""
    jobs: dict[str, Job] = field(default_factory=dict)

    def job(self, tab: str) -> Job:
        """The job of `tab`; its folder is `<session>/<tab>` (the Rounds tab's run folder is `run_dir`)."""
        if tab not in self.jobs:
            self.jobs[tab] = Job(self.folder / tab)
        return self.jobs[tab]

    @property
    def running(self) -> bool:
        return any(j.running for j in self.jobs.values())

    @property
    def run_dir(self) -> Path:
        """The run folder of the Rounds tab."""
        return self.folder / "run"

    @property
    def stop(self) -> threading.Event:
        """The Rounds tab's stop flag."""
        return self.job(ROUNDS).stop


class Busy(RuntimeError):
    """The tab's job is already running in this session."""


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

    def start(self, key: str | None, tab: str) -> tuple[Session, Job]:
        """Mark `tab`'s job of the session as running (`Busy` if it already is), its stop flag cleared."""
        session = self.get(key)
        with self._lock:
            job = session.job(tab)
            if job.running:
                raise Busy(tab)
            job.running = True
            job.stop.clear()
        return session, job

    def finish(self, session: Session, tab: str = ROUNDS) -> None:
        """Mark `tab`'s job as ended; clean up after the session if its browser tab was closed meanwhile."""
        with self._lock:
            job = session.job(tab)
            job.running = False
            job.stop.clear()
            gone = session.closed and not session.running
        if gone:
            shutil.rmtree(session.folder, ignore_errors=True)

    def request_stop(self, key: str | None, tab: str) -> bool:
        """Ask `tab`'s running job of the session to stop; False when nothing runs there."""
        session = self.get(key)
        job = session.job(tab)
        if not job.running:
            return False
        job.stop.set()
        return True

    def close(self, key: str | None) -> None:
        """Forget a session and delete its folder (the browser tab was closed); running jobs are stopped and
        the last one to end deletes the folder."""
        with self._lock:
            session = self._sessions.pop(key or "anonymous", None)
            if session is None:
                return
            session.closed = True
            for job in session.jobs.values():
                job.stop.set()
            if session.running:
                return
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
