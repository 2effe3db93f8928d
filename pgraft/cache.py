"""The user cache of weights trained on first use (`$PGRAFT_CACHE`, default `~/.cache/pgraft`): deliberately
under-trained models of a given step count (`toy2d-flow --train-steps`, `digits-flow --train-steps`). Files are
named `...<N>steps.safetensors`; the most recently used `CACHED_WEIGHTS` are kept, so a server that is asked for
many step counts does not collect them without bound."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

CACHED_WEIGHTS = 8
"""Trained-on-first-use weights kept in the cache (the least recently used beyond this are deleted)."""


def cache_dir() -> Path:
    return Path(os.environ.get("PGRAFT_CACHE", Path.home() / ".cache" / "pgraft"))


def prune_cache(keep: int = CACHED_WEIGHTS) -> None:
    """Keep the `keep` most recently used step-count files of the cache."""
    files = sorted(cache_dir().glob("*steps.safetensors"), key=lambda f: f.stat().st_mtime, reverse=True)
    for stale in files[keep:]:
        stale.unlink(missing_ok=True)


def ensure_weights(path: Path, make: Callable[[Path], object]) -> Path:
    """`path`, made by `make(path)` when it is missing. A file of the cache counts as used (touched) when found,
    and the cache is pruned after a new one is written; a shipped file elsewhere is returned as it is."""
    cached = path.parent == cache_dir()
    if path.exists():
        if cached:
            path.touch()  # recently used: pruned last
        return path
    make(path)
    if cached:
        prune_cache()
    return path
