"""Handlers that raise, hang or die, on threads, the event loop and subprocesses."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from onceq import App, current_job
from tests.helpers import eventually
from tests.worker.apps import read_ledger
from tests.worker.conftest import run_in_thread, task


def _run(app: App, concurrency: int = 2) -> None:
    thread = run_in_thread(app.worker(concurrency=concurrency, lease=5))
    thread.join(60)
    assert not thread.is_alive()


def test_a_raising_handler_is_retried_until_it_succeeds(app: App) -> None:
    @app.task(retries=3, retry_backoff=0.01)
    def flaky() -> int:
        if current_job().attempt < 3:
            raise ConnectionError("try again")
        return current_job().attempt

    job = flaky.enqueue()
    _run(app)
    done = app.get_job(job.id)
    assert (done.status, done.result, done.attempts) == ("succeeded", 3, 3)
    outcomes = [(a.outcome, a.error) for a in app.store.attempt_list(job.id)]
    assert outcomes == [("retried", "ConnectionError: try again")] * 2 + [("succeeded", None)]


def test_an_error_outside_retry_on_fails_at_once_with_its_traceback(app: App) -> None:
    @app.task(retries=5, retry_on=(ConnectionError,))
    def strict() -> None:
        raise ValueError("bad input, retrying will not help")

    job = strict.enqueue()
    _run(app)
    failed = app.get_job(job.id)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.last_error == "ValueError: bad input, retrying will not help"
    assert failed.last_traceback is not None and "in strict" in failed.last_traceback


def test_retries_run_out_and_the_last_error_is_kept(app: App) -> None:
    @app.task(retries=2, retry_backoff=0)
    def always() -> None:
        raise RuntimeError(f"attempt {current_job().attempt}")

    job = always.enqueue()
    _run(app)
    failed = app.get_job(job.id)
    assert (failed.status, failed.attempts, failed.last_error) == (
        "failed",
        3,
        "RuntimeError: attempt 3",
    )


def test_a_thread_handler_past_its_timeout_is_abandoned_and_its_late_result_refused(
    app: App,
) -> None:
    release = threading.Event()
    finished = threading.Event()

    @app.task(timeout=0.2, retries=1, retry_backoff=0)
    def hangs_once() -> str:
        if current_job().attempt == 1:
            release.wait(30)  # past the timeout: the worker gives up on this thread
            finished.set()
            return "late"
        return "second attempt"

    job = hangs_once.enqueue()
    worker = app.worker(concurrency=1, lease=5)
    thread = run_in_thread(worker, burst=False)
    try:
        eventually(lambda: app.get_job(job.id).status == "succeeded")
        # The one slot was freed despite the hung thread: attempt 2 ran on a new thread.
        release.set()
        finished.wait(10)
        first = eventually(
            lambda: [a for a in app.store.attempt_list(job.id) if a.attempt == 1 and a.rejected]
        )
        assert first[0].outcome == "retried" and first[0].rejected == "complete"
        assert (first[0].error or "").startswith("JobTimeout: timed out after 0.2s")
    finally:
        worker.stop()
        thread.join(30)
    assert app.get_job(job.id).result == "second attempt"
    assert worker.counts["rejected"] == 1


def test_an_async_handler_past_its_timeout_is_cancelled(app: App) -> None:
    cancelled = threading.Event()

    @app.task(timeout=0.2)
    async def sleeps() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job = sleeps.enqueue()
    start = time.monotonic()
    _run(app)
    failed = app.get_job(job.id)
    assert failed.status == "failed"
    assert failed.last_error == "JobTimeout: timed out after 0.2s: the coroutine was cancelled"
    assert cancelled.is_set() and time.monotonic() - start < 20


def test_async_handlers_run_concurrently_on_one_loop(app: App) -> None:
    both = asyncio.Barrier(2) if hasattr(asyncio, "Barrier") else None

    @app.task(timeout=10)
    async def meet(n: int) -> int:
        if both is not None:
            await both.wait()  # deadlocks unless both run at once
        return n

    jobs = [meet.enqueue(n=n) for n in range(2)]
    _run(app, concurrency=2)
    assert [app.get_job(j.id).result for j in jobs] == [0, 1]


def test_a_subprocess_handler_past_its_timeout_is_killed(app: App, ledger: Path) -> None:
    job = task(app, "hang_in_subprocess").enqueue()
    _run(app)
    failed = app.get_job(job.id)
    assert (failed.status, failed.attempts) == ("failed", 2)
    assert failed.last_error == "JobTimeout: timed out after 0.3s: the subprocess was killed"
    starts = read_ledger(ledger)
    assert [(r[1], r[3]) for r in starts] == [(1, "start"), (2, "start")]
    assert starts[0][2] != starts[1][2]  # each attempt in its own (killed) process


def test_a_subprocess_handler_returns_its_result(app: App) -> None:
    job = task(app, "double_in_subprocess").enqueue(n=21)
    _run(app)
    assert app.get_job(job.id).result == 42


def test_a_subprocess_handler_that_raises_keeps_the_childs_traceback(app: App) -> None:
    job = task(app, "raise_in_subprocess").enqueue(message="no such file")
    _run(app)
    failed = app.get_job(job.id)
    assert (failed.status, failed.attempts) == ("failed", 2)
    assert failed.last_error == "SubprocessError: ValueError: no such file"
    assert "In the subprocess" in (failed.last_traceback or "")
    assert "raise ValueError(message)" in (failed.last_traceback or "")


def test_a_subprocess_that_exits_fails_its_job_and_the_worker_goes_on(app: App) -> None:
    dead = task(app, "exit_in_subprocess").enqueue()
    fine = task(app, "record").enqueue(n=5)
    _run(app)
    failed = app.get_job(dead.id)
    assert failed.status == "failed"
    assert failed.last_error == "SubprocessDied: the subprocess died with exit code 7"
    assert app.get_job(fine.id).result == 5


def test_a_result_that_is_not_json_fails_the_job_with_a_clear_error(app: App) -> None:
    class Opaque:
        pass

    @app.task
    def returns_an_opaque_object() -> object:
        return Opaque()

    job = returns_an_opaque_object.enqueue()
    _run(app)
    failed = app.get_job(job.id)
    assert failed.status == "failed"
    assert (failed.last_error or "").startswith(
        "PayloadError: result of tests.worker.test_handlers."
    )
    assert "cannot be stored as JSON" in (failed.last_error or "")
    assert "Opaque" in (failed.last_error or "")
