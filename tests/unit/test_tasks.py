"""The in-process task runner: submitted tasks, failures, periodic tasks, drain and stop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from bastion.tasks import ThreadTaskRunner

WAIT = 10.0  # generous: only ever reached when something is broken


@pytest.fixture
def runner() -> Iterator[ThreadTaskRunner]:
    instance = ThreadTaskRunner()
    yield instance
    instance.stop(timeout=WAIT)


def test_submitted_tasks_run_in_order_with_their_arguments(runner: ThreadTaskRunner) -> None:
    seen: list[tuple[int, str]] = []
    runner.start()
    for number in range(5):
        runner.submit("record", lambda n, *, label: seen.append((n, label)), number, label=f"#{number}")
    assert runner.drain(WAIT)
    assert seen == [(n, f"#{n}") for n in range(5)]
    assert threading.current_thread().name != "bastion-tasks"


def test_tasks_run_in_the_background_thread(runner: ThreadTaskRunner) -> None:
    where: list[str] = []
    runner.start()
    runner.submit("where", lambda: where.append(threading.current_thread().name))
    assert runner.drain(WAIT)
    assert where == ["bastion-tasks"]


def test_submit_before_start_queues_until_start(runner: ThreadTaskRunner) -> None:
    seen: list[str] = []
    runner.submit("early", seen.append, "queued")
    assert not runner.drain(0.1)  # nothing runs before start()
    assert seen == []
    runner.start()
    runner.start()  # idempotent
    assert runner.drain(WAIT)
    assert seen == ["queued"]


def test_a_failing_task_is_logged_and_the_worker_goes_on(
    runner: ThreadTaskRunner, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def explode() -> None:
        raise RuntimeError("boom in the task")

    def leave() -> None:
        raise SystemExit(3)  # would end a bare thread silently

    runner.start()
    with caplog.at_level(logging.ERROR, logger="bastion.tasks"):
        runner.submit("scan-upload", explode)
        runner.submit("exit", leave)
        runner.submit("after", seen.append, "still running")
        assert runner.drain(WAIT)
    assert seen == ["still running"]
    failures = [r for r in caplog.records if r.name == "bastion.tasks"]
    assert [r.getMessage() for r in failures] == ["task scan-upload failed", "task exit failed"]
    assert failures[0].exc_text and "RuntimeError: boom in the task" in failures[0].exc_text
    assert "Traceback" in failures[0].exc_text


def test_periodic_task_runs_repeatedly_and_not_before_one_interval(runner: ThreadTaskRunner) -> None:
    times: list[float] = []
    interval = 0.05
    runner.every("tick", timedelta(seconds=interval), lambda: times.append(time.monotonic()))
    started = time.monotonic()
    runner.start()
    deadline = started + WAIT
    while len(times) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(times) >= 3
    assert times[0] - started >= interval * 0.9
    assert all(later - earlier >= interval * 0.9 for earlier, later in zip(times, times[1:], strict=False))


def test_periodic_task_registered_after_start_and_failing_keeps_its_schedule(
    runner: ThreadTaskRunner, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        raise ValueError("flaky")

    runner.start()
    with caplog.at_level(logging.ERROR, logger="bastion.tasks"):
        runner.every("flaky", timedelta(seconds=0.03), flaky)
        deadline = time.monotonic() + WAIT
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(calls) >= 2
    assert "task flaky failed" in caplog.text


def test_submitted_work_goes_before_due_periodic_work(runner: ThreadTaskRunner) -> None:
    order: list[str] = []
    gate = threading.Event()
    runner.every("periodic", timedelta(seconds=0.01), lambda: order.append("periodic"))
    runner.submit("first", gate.wait, WAIT)
    runner.submit("second", order.append, "second")
    runner.start()
    time.sleep(0.05)  # the periodic task is due by now, behind the blocked first task
    gate.set()
    deadline = time.monotonic() + WAIT
    while "periodic" not in order and time.monotonic() < deadline:
        time.sleep(0.01)
    assert order[0] == "second"


def test_run_now_runs_synchronously_and_raises(runner: ThreadTaskRunner) -> None:
    seen: list[str] = []
    runner.every("resign", timedelta(hours=1), lambda: seen.append(threading.current_thread().name))
    runner.every("broken", timedelta(hours=1), lambda: 1 / 0)
    runner.run_now("resign")  # works without start()
    assert seen == [threading.current_thread().name]
    with pytest.raises(ZeroDivisionError):
        runner.run_now("broken")
    with pytest.raises(ValueError, match="no periodic task named 'nope'; registered: broken, resign"):
        runner.run_now("nope")
    assert [task.name for task in runner.periodic_tasks()] == ["broken", "resign"]
    assert runner.periodic_tasks()[1].interval == timedelta(hours=1)


def test_every_refuses_duplicates_and_empty_intervals(runner: ThreadTaskRunner) -> None:
    runner.every("daily", timedelta(days=1), lambda: None)
    with pytest.raises(ValueError, match="registered already"):
        runner.every("daily", timedelta(days=1), lambda: None)
    with pytest.raises(ValueError, match="longer than zero"):
        runner.every("never", timedelta(0), lambda: None)


def test_run_now_and_the_worker_never_run_a_periodic_task_twice_at_once(runner: ThreadTaskRunner) -> None:
    active = 0
    most = 0
    lock = threading.Lock()

    def slow() -> None:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        time.sleep(0.03)
        with lock:
            active -= 1

    runner.every("slow", timedelta(seconds=0.01), slow)
    runner.start()
    for _ in range(5):
        runner.run_now("slow")
    assert most == 1


def test_drain_waits_for_the_running_task(runner: ThreadTaskRunner) -> None:
    gate = threading.Event()
    done: list[str] = []
    runner.start()
    def blocked() -> None:
        gate.wait(WAIT)
        done.append("blocked")

    runner.submit("blocked", blocked)
    assert not runner.drain(0.1)  # running, not finished
    gate.set()
    assert runner.drain(WAIT)
    assert done == ["blocked"]
    assert runner.drain(0)  # idle: true at once


def test_stop_finishes_queued_work_then_stops(caplog: pytest.LogCaptureFixture) -> None:
    runner = ThreadTaskRunner()
    seen: list[int] = []
    runner.every("never-before-stop", timedelta(hours=1), lambda: seen.append(-1))
    runner.start()
    def slow(number: int) -> None:
        time.sleep(0.01)
        seen.append(number)

    for number in range(5):
        runner.submit("slow", slow, number)
    runner.stop(timeout=WAIT)
    assert seen == [0, 1, 2, 3, 4]
    with caplog.at_level(logging.WARNING, logger="bastion.tasks"):
        runner.stop(timeout=WAIT)  # stopping twice is harmless
    assert not caplog.records
    runner.submit("late", seen.append, 5)  # queued: runs once started again
    runner.start()
    assert runner.drain(WAIT)
    runner.stop(timeout=WAIT)
    assert seen == [0, 1, 2, 3, 4, 5]


def test_stop_before_start_and_a_timeout_are_harmless(caplog: pytest.LogCaptureFixture) -> None:
    ThreadTaskRunner().stop(timeout=0.1)
    runner = ThreadTaskRunner()
    gate = threading.Event()
    runner.start()
    runner.submit("blocked", gate.wait, WAIT)
    runner.submit("queued", lambda: None)
    with caplog.at_level(logging.WARNING, logger="bastion.tasks"):
        runner.stop(timeout=0.1)
    assert "did not finish within 0.1 s; 1 queued task(s) left undone" in caplog.text
    gate.set()
    runner.stop(timeout=WAIT)
    assert runner.drain(0)


def test_collected_items_run_once_as_a_batch_after_a_quiet_spell(runner: ThreadTaskRunner) -> None:
    batches: list[list[int]] = []
    ran = threading.Event()

    def record(items: list[int]) -> None:
        batches.append(items)
        ran.set()

    runner.start()
    started = time.monotonic()
    for number in range(4):
        runner.collect("notices", record, number, quiet=0.3, at_most=WAIT)
        time.sleep(0.05)
    assert ran.wait(WAIT)
    assert time.monotonic() - started >= 0.3 + 3 * 0.05  # waited for the quiet spell after the last item
    assert batches == [[0, 1, 2, 3]]
    runner.collect("notices", record, 9, quiet=0.05, at_most=WAIT)  # a new batch after one ran
    assert runner.drain(WAIT)
    assert batches == [[0, 1, 2, 3], [9]]


def test_a_batch_never_waits_longer_than_at_most(runner: ThreadTaskRunner) -> None:
    batches: list[list[int]] = []
    runner.start()
    started = time.monotonic()
    number = 0
    while not batches and time.monotonic() - started < WAIT:  # items keep coming: never quiet
        runner.collect("notices", batches.append, number, quiet=0.5, at_most=0.4)
        number += 1
        time.sleep(0.02)
    assert batches and 0.4 <= time.monotonic() - started < 0.4 + 1.0
    assert batches[0] == list(range(len(batches[0])))


def test_drain_and_stop_run_a_collected_batch_at_once() -> None:
    runner = ThreadTaskRunner()
    seen: list[list[str]] = []
    runner.start()
    runner.collect("notices", seen.append, "a", quiet=WAIT * 10, at_most=WAIT * 10)
    runner.collect("notices", seen.append, "b", quiet=WAIT * 10, at_most=WAIT * 10)
    assert runner.drain(WAIT)
    assert seen == [["a", "b"]]
    runner.collect("notices", seen.append, "c", quiet=WAIT * 10, at_most=WAIT * 10)
    started = time.monotonic()
    runner.stop(WAIT)
    assert seen == [["a", "b"], ["c"]] and time.monotonic() - started < WAIT
    with pytest.raises(ValueError, match="quiet and at_most are seconds"):
        runner.collect("notices", seen.append, "d", quiet=-1, at_most=1)


def test_work_a_task_submits_while_stopping_still_runs_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    runner = ThreadTaskRunner()
    seen: list[str] = []

    def batch(items: list[str]) -> None:  # as the upload notices do: a batch that queues its mail
        runner.submit("send", seen.append, "mail for " + ",".join(items))

    runner.start()
    runner.collect("notices", batch, "a", quiet=WAIT * 10, at_most=WAIT * 10)
    with caplog.at_level(logging.WARNING, logger="bastion.tasks"):
        runner.stop(WAIT)
    assert seen == ["mail for a"]
    assert "stopping" not in caplog.text
