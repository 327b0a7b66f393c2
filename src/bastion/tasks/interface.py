"""The TaskRunner interface: background work queued after commit, and periodic tasks without cron.

Every task is a plain function. A Celery backend can implement the same interface.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any


@dataclass(frozen=True)
class PeriodicTask:
    """A task the runner calls again and again."""

    name: str
    """Unique name, used in logs and by ``run_now`` (e.g. ``tuf.resign``)."""

    interval: timedelta
    """Time between runs; the first run comes one interval after the runner starts."""

    fn: Callable[[], Any]
    """The function called, with no arguments."""


class TaskRunner(abc.ABC):
    """Runs work in the background. An exception in a task is logged and never stops the runner."""

    @abc.abstractmethod
    def submit(self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        """Run ``fn(*args, **kwargs)`` soon, in the background. Call it after the transaction whose
        effects the task needs has committed: the task may start at once and must see them."""

    @abc.abstractmethod
    def collect(self, name: str, fn: Callable[[list[Any]], Any], item: Any, /, *, quiet: float,
                at_most: float) -> None:
        """Add ``item`` to the batch ``name``; the runner calls ``fn(items)`` once, in the
        background, when no item joined the batch for ``quiet`` seconds or ``at_most`` seconds after
        its first item, whichever comes first (``drain`` and ``stop`` run it at once). Items arrive
        in the order given; the ``fn`` of the batch's first item is the one called. For work that
        is cheaper and friendlier done once for many events (one notice for a release's files).
        Call it after commit, as ``submit``."""

    @abc.abstractmethod
    def every(self, name: str, interval: timedelta, fn: Callable[[], Any]) -> None:
        """Register a periodic task; its first run comes one interval after ``start``."""

    @abc.abstractmethod
    def periodic_tasks(self) -> list[PeriodicTask]:
        """The registered periodic tasks, by name."""

    @abc.abstractmethod
    def run_now(self, name: str) -> None:
        """Run the periodic task ``name`` now, in the calling thread (for the CLI and tests); its
        exception reaches the caller. ValueError names the registered tasks when ``name`` is unknown."""

    @abc.abstractmethod
    def start(self) -> None:
        """Start running queued and periodic work (idempotent)."""

    @abc.abstractmethod
    def stop(self, timeout: float = 30.0) -> None:
        """Finish the queued work (waiting at most ``timeout`` seconds), then stop."""

    @abc.abstractmethod
    def drain(self, timeout: float = 30.0) -> bool:
        """Run every collected batch now, then block until the queue is empty and nothing runs;
        False if ``timeout`` passed first (tests, and the CLI before it exits)."""
