"""The events every long job of pgraft yields, and the helpers that run or forward a generator of them.

Rounds, sampling, fine-tuning, bias–variance studies, sweeps and inverse noise correction are generators
of events, so the command line (a progress bar), the app (streamed plots) and a tuner (pruning) consume
them the same way:

- `Progress(stage, done, total)` after a step, with the round and loss when there is one, and a `scope`
  that says where in a larger job it happened (a sweep's cutoff, a correction's K);
- `Notice(message)`: something the user should know that does not stop the job;
- `Cancelled` / `Finished`: the end, the first when `should_stop()` turned true. Producers yield
  subclasses that carry what they completed (a run's rounds, a curve's table).

Cancellation is one mechanism: a producer passes `should_stop` to `relay`, which forwards a sub-generator's
events and raises `Stopped` after the first event at which `should_stop()` is true; the producer catches it
and yields its `Cancelled`, keeping what was complete. A long loop that yields no events (training a model
on first use, an exact reference on many points) calls `checkpoint()`, which raises `Stopped` when the
flag of the enclosing `stoppable(should_stop)` block is set.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, TypeVar

R = TypeVar("R")


@dataclass(frozen=True)
class Progress:
    """One step of a stage is done (`done` of `total`)."""

    stage: str
    done: int
    total: int
    round: int | None = None
    loss: float | None = None
    scope: tuple[tuple[str, Any], ...] = ()
    """Where in a larger job: `(("cutoff", 0.3),)`, `(("K", 8),)`; outermost first."""

    def within(self, **scope: Any) -> Progress:
        """This event placed inside a larger job (`scope` goes before the event's own)."""
        return replace(self, scope=(*scope.items(), *self.scope))

    def get(self, key: str, default: Any = None) -> Any:
        """The value of one scope key (None when absent)."""
        return dict(self.scope).get(key, default)

    def describe(self) -> str:
        """`"cutoff=0.3, round 1: fine-tuning"`: a label for a progress bar."""
        where = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.scope]
        if self.round is not None:
            where.append(f"round {self.round}")
        return (", ".join(where) + ": " if where else "") + self.stage


@dataclass(frozen=True)
class Notice:
    """Something the user should know that does not stop the job."""

    message: str
    round: int | None = None


@dataclass(frozen=True)
class Cancelled:
    """The job stopped because `should_stop()` turned true; what it completed is kept."""


@dataclass(frozen=True)
class Finished:
    """The job ran to its end."""


class Stopped(Exception):
    """Raised by `relay` when `should_stop()` turns true; the producer turns it into its `Cancelled`."""


def never() -> bool:
    return False


_STOP: ContextVar[Callable[[], bool] | None] = ContextVar("pgraft_should_stop", default=None)


@contextmanager
def stoppable(should_stop: Callable[[], bool] | None) -> Iterator[None]:
    """Within the block, `checkpoint()` raises `Stopped` once `should_stop()` is true (no yield inside: a
    generator must not hold the block open across a `yield`)."""
    token = _STOP.set(should_stop)
    try:
        yield
    finally:
        _STOP.reset(token)


def checkpoint() -> None:
    """Raise `Stopped` when the enclosing `stoppable` block's flag is set (a no-op outside one)."""
    stop = _STOP.get()
    if stop is not None and stop():
        raise Stopped


def relay(
    events: Generator[Any, Any, R],
    should_stop: Callable[[], bool] | None = None,
    *,
    stage: str | None = None,
    round: int | None = None,
    **scope: Any,
) -> Generator[Any, None, R]:
    """`yield from events`, each `Progress` placed in the larger job (its `stage` renamed, its `round` set,
    `scope` added); raises `Stopped` after the first event at which `should_stop()` is true (the
    sub-generator is closed first). Returns the sub-generator's value."""
    stop = should_stop or never
    while True:
        try:
            event = next(events)
        except StopIteration as end:
            return end.value  # type: ignore[no-any-return]
        if isinstance(event, Progress):
            if stage is not None or round is not None:
                event = replace(event, stage=stage or event.stage, round=event.round if round is None else round)
            event = event.within(**scope) if scope else event
        yield event
        if stop():
            events.close()
            raise Stopped


def drain(events: Iterator[Any] | Generator[Any, Any, R], on_event: Callable[[Any], None] | None = None) -> R | None:
    """Run a generator of events to its end, handing each event to `on_event`; return its return value."""
    while True:
        try:
            event = next(events)
        except StopIteration as end:
            return end.value  # type: ignore[no-any-return]
        if on_event is not None:
            on_event(event)
