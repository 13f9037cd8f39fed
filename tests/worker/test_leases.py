"""A worker that loses its lease can record nothing, and is told so."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from onceq import App, StoreUnavailable, Worker, current_job
from tests.helpers import eventually, sql_rows
from tests.worker.conftest import run_in_thread


def _pair(store_url: str) -> tuple[App, App]:
    return App(store_url), App(store_url)


def _wait_for_expiry(app: App, job_id: int) -> None:
    eventually(lambda: app.store.attempt_list(job_id))  # A has claimed it

    def expired() -> bool:
        # Or already rescued, by either worker's rescue pass; or rescued and run again
        # already: A, fencing itself, may give the lease up, rescue and re-claim it, all
        # between two looks.
        job = app.get_job(job_id)
        held = job.lease_expires_at
        if job.status in ("pending", "succeeded"):
            return True
        return held is not None and held < datetime.now(UTC)

    eventually(expired)


def _pause_heartbeats(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the worker's process were stopped: no heartbeat leaves it."""
    monkeypatch.setattr(worker.heartbeat, "run_once", lambda now=None: set())


def test_a_worker_whose_lease_was_stolen_cannot_record_its_result(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_a, app_b = _pair(store_url)
    release = threading.Event()
    told: list[bool] = []

    def handler() -> str:
        if current_job().attempt == 1:
            release.wait(30)
            told.append(current_job().should_stop())
        return f"attempt {current_job().attempt} by {current_job().worker}"

    app_a.task(name="slow", retries=1)(handler)
    app_b.task(name="slow", retries=1)(handler)
    job = app_a.enqueue("slow")
    worker_a = app_a.worker(name="A", concurrency=1, lease=0.5)
    _pause_heartbeats(worker_a, monkeypatch)
    thread_a = run_in_thread(worker_a, burst=False)
    _wait_for_expiry(app_a, job.id)

    worker_b = app_b.worker(name="B", concurrency=1, lease=30, rescue_interval=0.1)
    thread_b = run_in_thread(worker_b, burst=True)  # rescues A's expired lease, runs it
    thread_b.join(30)
    assert app_b.get_job(job.id).result == "attempt 2 by B"

    monkeypatch.undo()  # A's heartbeats resume: its lease is gone
    assert worker_a.heartbeat_once() == set()
    release.set()
    eventually(lambda: worker_a.counts["rejected"] == 1)
    worker_a.stop()
    thread_a.join(30)

    assert told == [True]
    done = app_a.get_job(job.id)
    assert (done.status, done.result, done.attempts) == ("succeeded", "attempt 2 by B", 2)
    first, second = app_a.store.attempt_list(job.id)
    assert (first.worker, first.outcome) == ("A", "lease_expired")
    # A learned by itself (a lease without a heartbeat) or from a heartbeat, whichever
    # came first; either way its late completion was refused.
    assert first.rejected in ("complete", "heartbeat,complete")
    assert (second.worker, second.outcome) == ("B", "succeeded")
    app_a.close()
    app_b.close()


def test_an_async_handler_is_cancelled_when_its_lease_is_lost(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_a, app_b = _pair(store_url)
    cancelled = threading.Event()

    async def handler() -> str:
        if current_job().attempt == 1:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return "second"

    app_a.task(name="sleeper", retries=1)(handler)
    app_b.task(name="sleeper", retries=1)(handler)
    job = app_a.enqueue("sleeper")
    worker_a = app_a.worker(name="A", concurrency=1, lease=0.5)
    _pause_heartbeats(worker_a, monkeypatch)
    thread_a = run_in_thread(worker_a, burst=False)
    _wait_for_expiry(app_a, job.id)
    run_in_thread(app_b.worker(name="B", lease=30, rescue_interval=0.1)).join(30)
    monkeypatch.undo()
    worker_a.heartbeat_once()
    assert cancelled.wait(10)
    # A's LeaseLost outcome is refused if a rescue got there first, or accepted as a
    # retry if A gave the lease up before anyone rescued it: the store decides.
    eventually(lambda: worker_a.counts["rejected"] + worker_a.counts["failed"] == 1)
    worker_a.stop()
    thread_a.join(30)
    done = app_a.get_job(job.id)
    assert (done.result, done.attempts) == ("second", 2)
    app_a.close()
    app_b.close()


def test_cancelling_a_running_job_tells_its_handler_and_refuses_its_result(app: App) -> None:
    started, release = threading.Event(), threading.Event()
    told: list[bool] = []

    @app.task
    def long() -> str:
        started.set()
        release.wait(30)
        told.append(current_job().should_stop())
        return "finished anyway"

    job = long.enqueue()
    worker = app.worker(concurrency=1, lease=30)
    thread = run_in_thread(worker, burst=True)
    assert started.wait(10)
    assert app.store.job_cancel(job.id) == "running"
    worker.heartbeat_once()
    release.set()
    thread.join(30)
    assert told == [True]
    cancelled = app.get_job(job.id)
    assert (cancelled.status, cancelled.result) == ("cancelled", None)
    (attempt,) = app.store.attempt_list(job.id)
    assert (attempt.outcome, attempt.rejected) == ("cancelled", "heartbeat,complete")


def test_a_job_re_claimed_by_its_own_worker_keeps_the_two_attempts_apart(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Heartbeats cannot get through; the worker's own rescue takes the job back and it
    claims it again. Both attempts hold a slot, the first is told to stop, and only the
    second one's result counts."""
    release = threading.Event()
    seen: list[tuple[int, bool]] = []

    @app.task(name="slow", retries=2)
    def slow() -> int:
        job = current_job()
        if job.attempt == 1:
            release.wait(30)
        seen.append((job.attempt, job.should_stop()))
        return job.attempt

    def unreachable(*_: object) -> set[tuple[int, int]]:
        raise StoreUnavailable("heartbeats cannot get through")

    job = app.enqueue("slow")
    worker = app.worker(concurrency=2, lease=0.5, rescue_interval=0.1)
    monkeypatch.setattr(app.store, "job_heartbeat", unreachable)
    thread = run_in_thread(worker, burst=False)
    eventually(lambda: app.get_job(job.id).status == "succeeded")
    release.set()
    eventually(lambda: worker.counts["rejected"] == 1)
    worker.stop()
    thread.join(30)
    assert seen == [(2, False), (1, True)]
    done = app.get_job(job.id)
    assert (done.result, done.attempts) == (2, 2)
    first, second = app.store.attempt_list(job.id)
    assert (first.outcome, first.rejected, second.outcome) == (
        "lease_expired",
        "complete",
        "succeeded",
    )


def test_a_worker_whose_every_database_call_hangs_still_tells_its_handler_in_time(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A silent network (no RST, no FIN) or a hung driver: every store call blocks, the
    heartbeat thread's and the dispatcher's alike. The handler must still be told before
    the lease can expire on the database's clock (so before anyone could re-claim the
    job) — by the lease keeper, which never touches the database."""
    started, told = threading.Event(), threading.Event()
    told_at: list[float] = []

    @app.task(name="long")
    def long() -> str:
        started.set()
        while not current_job().should_stop():
            time.sleep(0.01)
        told_at.append(time.time())
        told.set()
        return "too late"

    app.enqueue("long")
    lease = 3.0
    worker = app.worker(concurrency=1, lease=lease)
    thread = run_in_thread(worker, burst=False)
    assert started.wait(30)
    unhang = threading.Event()
    store = app.store
    for name in ("_in_tx", "_read"):
        real = getattr(store, name)

        def hang(*args: object, _real: Any = real, **kwargs: object) -> Any:
            unhang.wait(120)
            return _real(*args, **kwargs)

        monkeypatch.setattr(store, name, hang)
    hung_at = time.time()
    try:
        assert told.wait(lease * 3), "the handler was never told"
        # The last heartbeat that got through set this (read around the store).
        ((expires,),) = sql_rows(app.url, "SELECT lease_expires_at FROM onceq_jobs")
    finally:
        unhang.set()
        worker.stop()
        thread.join(30)
    expires_at = expires.timestamp() if hasattr(expires, "timestamp") else float(expires)
    assert told_at[0] < expires_at, (told_at[0], expires_at)
    # And not for nothing: no sooner than a lease less a heartbeat after the cut.
    assert told_at[0] >= hung_at + lease - 2 * worker.heartbeat_interval


def test_a_lease_counts_from_before_its_claim_was_sent(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database starts a lease when the claim runs, not when its answer arrives. A
    claim whose answer took most of the lease to come back leaves too little of it to
    start a handler on (the next heartbeat could come after it expired, and another
    worker could run the job meanwhile): the worker hands such a job back instead."""
    ran: list[int] = []

    @app.task(name="once")
    def once() -> None:
        ran.append(current_job().attempt)

    job = app.enqueue("once")
    lease = 1.5
    real = app.store.job_claim
    slow: list[bool] = []

    def slow_answer(*args: Any, **options: Any) -> Any:
        leases = real(*args, **options)
        if leases and not slow:
            slow.append(True)
            time.sleep(lease * 0.9)  # the answer is late: the lease is almost over
        return leases

    monkeypatch.setattr(app.store, "job_claim", slow_answer)
    run_in_thread(app.worker(concurrency=1, lease=lease), burst=True).join(30)
    assert ran == [1]  # run once, under the second lease
    outcomes = [a.outcome for a in app.store.attempt_list(job.id)]
    assert outcomes == ["released", "succeeded"]


@pytest.mark.parametrize("kind", ["thread", "async"])
def test_what_a_handler_returns_after_its_worker_gave_the_lease_up_does_not_count(
    app: App, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """One heartbeat stalls for most of the lease, then gets through: the lease keeper
    has given the lease up meanwhile and told the handler, which stops early (a thread
    handler returns what it has; a coroutine is cancelled). The store still held the
    lease, but that early result must not be recorded as the job's: the lease goes back
    as lost, and the job runs again, whole."""
    finished: list[int] = []

    def whole() -> str:
        finished.append(current_job().attempt)
        return "whole"

    if kind == "thread":

        @app.task(name="long", retries=1)
        def long() -> str:
            if current_job().attempt == 1:
                while not current_job().should_stop():
                    time.sleep(0.01)
                return "partial"
            return whole()
    else:

        @app.task(name="long", retries=1)
        async def long_async() -> str:
            if current_job().attempt == 1:
                await asyncio.sleep(60)  # cancelled when the lease is given up
            return whole()

    job = app.enqueue("long")
    real = app.store.job_heartbeat
    stall = threading.Event()

    def one_slow_heartbeat(*args: Any, **kwargs: Any) -> Any:
        if stall.is_set():
            stall.clear()
            time.sleep(2.2)  # most of the 3 s lease: then it gets through
        return real(*args, **kwargs)

    monkeypatch.setattr(app.store, "job_heartbeat", one_slow_heartbeat)
    worker = app.worker(concurrency=1, lease=3.0)
    thread = run_in_thread(worker, burst=True)
    eventually(lambda: app.get_job(job.id).status == "running")
    stall.set()
    thread.join(60)
    assert not thread.is_alive()
    done = app.get_job(job.id)
    assert (done.status, done.result, finished) == ("succeeded", "whole", [2])
    first, second = app.store.attempt_list(job.id)
    assert first.outcome == "lease_expired" and "given up" in (first.error or "")
    assert first.rejected == ("complete" if kind == "thread" else "fail")  # sent, refused
    assert second.outcome == "succeeded"
