"""ThreadTaskRunner: one in-process daemon thread runs submitted tasks and the periodic schedule.

The default backend: no broker, nothing to deploy. Each server process has its own runner.
Celery is not implemented here; a Celery backend can implement the same TaskRunner interface.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bastion.tasks.interface import PeriodicTask, TaskRunner

logger = logging.getLogger("bastion.tasks")


@dataclass
class _Scheduled:
    task: PeriodicTask
    due: float
    """time.monotonic() of the next run."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held while the task runs: the worker and ``run_now`` never run it twice at once."""


@dataclass
class _Batch:
    fn: Callable[[list[Any]], Any]
    items: list[Any]
    first: float
    last: float
    """time.monotonic() of the first and of the latest item."""
    quiet: float
    at_most: float

    @property
    def due(self) -> float:
        return min(self.last + self.quiet, self.first + self.at_most)


@dataclass(frozen=True)
class _Job:
    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class ThreadTaskRunner(TaskRunner):
    """Submitted tasks run in order, one at a time, before any collected batch or periodic task
    that is due.

    ``submit`` before ``start`` queues the task; it runs once the runner starts.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._periodic: dict[str, _Scheduled] = {}
        self._batches: dict[str, _Batch] = {}
        self._running = 0
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- the interface -------------------------------------------------------------------------

    def submit(self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        with self._cond:
            if self._stopping and threading.current_thread() is not self._thread:
                # (a task's own follow-up, such as the mail a collected batch sends, still runs)
                logger.warning("task %s submitted while the task runner is stopping; it may not run", name)
            self._queue.append(_Job(name, fn, args, kwargs))
            self._cond.notify_all()

    def collect(self, name: str, fn: Callable[[list[Any]], Any], item: Any, /, *, quiet: float,
                at_most: float) -> None:
        if quiet < 0 or at_most < 0:
            raise ValueError(f"batch {name!r}: quiet and at_most are seconds, zero or more, not {quiet}, {at_most}")
        now = time.monotonic()
        with self._cond:
            if self._stopping:
                logger.warning("task %s collected while the task runner is stopping; it may not run", name)
            batch = self._batches.get(name)
            if batch is None:
                self._batches[name] = _Batch(fn, [item], now, now, quiet, at_most)
            else:
                batch.items.append(item)
                batch.last = now
            self._cond.notify_all()

    def every(self, name: str, interval: timedelta, fn: Callable[[], Any]) -> None:
        if interval <= timedelta(0):
            raise ValueError(f"periodic task {name!r}: the interval must be longer than zero, not {interval}")
        with self._cond:
            if name in self._periodic:
                raise ValueError(f"a periodic task named {name!r} is registered already")
            task = PeriodicTask(name, interval, fn)
            self._periodic[name] = _Scheduled(task, time.monotonic() + interval.total_seconds())
            self._cond.notify_all()  # the worker may need to wake earlier than it planned

    def periodic_tasks(self) -> list[PeriodicTask]:
        with self._cond:
            return [entry.task for _, entry in sorted(self._periodic.items())]

    def run_now(self, name: str) -> None:
        with self._cond:
            entry = self._periodic.get(name)
        if entry is None:
            known = ", ".join(sorted(self._periodic)) or "none"
            raise ValueError(f"no periodic task named {name!r}; registered: {known}")
        with entry.lock:
            entry.task.fn()

    def start(self) -> None:
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            now = time.monotonic()
            for entry in self._periodic.values():
                entry.due = now + entry.task.interval.total_seconds()
            self._thread = threading.Thread(target=self._work, name="bastion-tasks", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        with self._cond:
            thread = self._thread
            if thread is None:
                return
            self._stopping = True
            self._cond.notify_all()
        thread.join(timeout)
        with self._cond:
            if thread.is_alive():
                logger.warning(
                    "task runner did not finish within %g s; %d queued task(s) left undone",
                    timeout, len(self._queue),
                )
            else:
                self._thread = None

    def drain(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flush_batches()
            while self._queue or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    # -- the worker ----------------------------------------------------------------------------

    def _flush_batches(self, now: float | None = None) -> None:
        """Queue the batches that are due (all of them when ``now`` is None); hold ``_cond``."""
        for name, batch in list(self._batches.items()):
            if now is None or batch.due <= now:
                del self._batches[name]
                self._queue.append(_Job(name, batch.fn, (batch.items,), {}))

    def _next(self) -> tuple[str, Callable[[], Any], _Scheduled | None] | None:
        """The next thing to run (waiting for it), or None when stopping with an empty queue."""
        with self._cond:
            while True:
                now = time.monotonic()
                self._flush_batches(None if self._stopping else now)
                if self._queue:
                    job = self._queue.popleft()
                    self._running += 1
                    return job.name, lambda: job.fn(*job.args, **job.kwargs), None
                if self._stopping:
                    return None
                entry = min(self._periodic.values(), key=lambda e: e.due, default=None)
                if entry is not None and entry.due <= now:
                    self._running += 1
                    return entry.task.name, entry.task.fn, entry
                wake = [e.due for e in (entry, *self._batches.values()) if e is not None]
                self._cond.wait(min(wake) - now if wake else None)

    def _work(self) -> None:
        while (picked := self._next()) is not None:
            name, call, entry = picked
            started = time.monotonic()
            try:
                if entry is None:
                    call()
                else:
                    with entry.lock:
                        call()
            except BaseException:  # a task never kills the worker, whatever it raises
                logger.exception("task %s failed", name)
            finally:
                with self._cond:
                    if entry is not None:
                        # One interval after this run started, but not before it finished.
                        entry.due = max(started + entry.task.interval.total_seconds(), time.monotonic())
                    self._running -= 1
                    self._cond.notify_all()
