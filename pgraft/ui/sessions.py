"""One session, stop and temporary-folder mechanism for every tab of the app.

Each browser session owns a folder under the app's root and, per tab, a `Job`: the tab's own subfolder
(its run folder, its downloads), a stop flag and whether it is running. Two people running at once never
see or disturb each other's work, and a tab's Stop stops only that tab's job. When the browser tab goes
away the session's folder is deleted (by the job still running, when it ends); sessions idle past their
time are swept.

Identity. Gradio's session hash is chosen by the client, so it cannot be the identity alone: a client that
learnt another's hash could stop its run or fetch its files. The app sets a cookie minted by the server
(`SessionCookie`, an unguessable token, HttpOnly, SameSite=Strict) on the first response to every client;
a session is the pair (cookie, session hash), hashed, so presenting another's hash without its cookie
reaches a different, empty session. Folder names are random and unrelated to either, and downloads are
served from Gradio's cache (names derived from the file's content), never from the sessions' root.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_ROOT = Path(tempfile.gettempdir()) / "pgraft-app"
ROUNDS = "rounds"
COOKIE = "pgraft_session"


def session_key(client: Any) -> str:
    """The key of a request (or anything with `cookies` and `session_hash`): the server's cookie and the
    session hash, hashed together."""
    cookies = getattr(client, "cookies", None) or {}
    try:
        cookie = str(cookies.get(COOKIE, "")) if hasattr(cookies, "get") else ""
    except Exception:  # an odd cookie object is treated as none
        cookie = ""
    session_hash = str(getattr(client, "session_hash", None) or "anonymous")
    return hashlib.sha256(f"{cookie}\0{session_hash}".encode()).hexdigest()


class SessionCookie:
    """ASGI middleware: every HTTP response to a client without the session cookie sets one (a fresh random
    token); the request itself is handled as if it had carried it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers", []))
        cookie_header = b"; ".join(v for k, v in headers if k == b"cookie").decode("latin-1")
        if f"{COOKIE}=" in cookie_header:
            await self.app(scope, receive, send)
            return
        token = secrets.token_urlsafe(24)
        joined = f"{cookie_header}; {COOKIE}={token}" if cookie_header else f"{COOKIE}={token}"
        scope = {**scope, "headers": [(k, v) for k, v in headers if k != b"cookie"] + [(b"cookie", joined.encode())]}
        set_cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict".encode()

        async def send_with_cookie(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", set_cookie)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


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
    runs: list[Any] = field(default_factory=list)
    """The Rounds tab's runs of this session, oldest first (`ui.runs.RunRecord`), for the run list."""
    current_run: Path | None = None
    """The folder of the latest run (None before the first)."""

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
        """The run folder of the Rounds tab's latest run."""
        return self.current_run if self.current_run is not None else self.folder / "run"

    @property
    def stop(self) -> threading.Event:
        """The Rounds tab's stop flag."""
        return self.job(ROUNDS).stop


class Busy(RuntimeError):
    """The tab's job is already running in this session."""


class SessionStore:
    """Sessions by `session_key` of a request; idle ones are swept after `ttl_s`, their folders deleted.

    Every method takes the request (or a stand-in with `cookies` and `session_hash`, None for direct calls)."""

    def __init__(self, root: Path | None = None, ttl_s: float = 6 * 3600) -> None:
        self.root = Path(root or DEFAULT_ROOT)
        self.ttl_s = ttl_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def get(self, client: Any) -> Session:
        """The session of a request (created on first use, with a random folder of its own)."""
        key = session_key(client)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                folder = self.root / secrets.token_hex(16)
                folder.mkdir(parents=True, exist_ok=True)
                session = self._sessions[key] = Session(key, folder)
            session.last_used = time.monotonic()
        return session

    def start(self, client: Any, tab: str) -> tuple[Session, Job]:
        """Mark `tab`'s job of the session as running (`Busy` if it already is), its stop flag cleared."""
        session = self.get(client)
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

    def request_stop(self, client: Any, tab: str) -> bool:
        """Ask `tab`'s running job of the session to stop; False when nothing runs there."""
        session = self.get(client)
        job = session.job(tab)
        if not job.running:
            return False
        job.stop.set()
        return True

    def close(self, client: Any) -> None:
        """Forget a session and delete its folder (the browser tab was closed); running jobs are stopped and
        the last one to end deletes the folder."""
        with self._lock:
            session = self._sessions.pop(session_key(client), None)
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
            self._close_key(key)
        return stale

    def _close_key(self, key: str) -> None:
        with self._lock:
            session = self._sessions.pop(key, None)
            if session is None:
                return
            session.closed = True
            for job in session.jobs.values():
                job.stop.set()
            if session.running:
                return
        shutil.rmtree(session.folder, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._sessions)
