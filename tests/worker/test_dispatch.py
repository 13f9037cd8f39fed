"""The dispatcher: claim before handing over (bug 3), only for free slots, one heartbeat."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from onceq import App
from onceq.worker import dispatcher, executors
from onceq.worker.executors import ThreadPool
from tests.helpers import eventually, sql_rows
from tests.worker.apps import read_ledger
from tests.worker.conftest import run_in_thread, task


def _gated_pool(gate: threading.Event) -> type[ThreadPool]:
    class GatedPool(ThreadPool):
        """An executor that is slow to start anything: it takes items only after `gate`."""

        def _serve(self) -> None:
            gate.wait()
            super()._serve()

    return GatedPool


def test_the_interleaving_reproduces_bug_3_when_dispatch_comes_before_claim(
    app: App, ledger: object
) -> None:
    """Control: a poll loop that hands pending jobs to a (blocked) executor and marks them
    later runs the job twice once the executor starts. The same interleaving is then
    used against the real worker below."""
    job = task(app, "record").enqueue(n=1)
    gate = threading.Event()
    pool = _gated_pool(gate)(2, "naive")
    record = task(app, "record")

    def naive_poll() -> None:
        for pending in app.store.job_list(status="pending"):
            lease_holder = pending

            def run(_: executors.PoolItem, job=lease_holder) -> None:  # type: ignore[no-untyped-def]
                leases = app.store.job_claim("naive", None, 1, 30)  # "mark running" too late
                from onceq.context import JobContext, _current

                _current.set(JobContext(job.id, job.task, 1, 1, "naive", 0))
                record.fn(**job.args)
                for lease in leases:
                    app.store.job_complete(lease, None)

            pool.submit(run)

    naive_poll()
    naive_poll()  # the second poll still sees the job pending
    gate.set()
    eventually(lambda: len(read_ledger(ledger)) >= 2)  # type: ignore[arg-type]
    assert [row[0] for row in read_ledger(ledger)] == [job.id, job.id]  # type: ignore[arg-type]
    pool.shutdown()


def test_a_second_poll_before_the_executor_starts_cannot_run_the_job_again(
    app: App, ledger: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    monkeypatch.setattr(dispatcher, "ThreadPool", _gated_pool(gate))
    job = task(app, "record").enqueue(n=1)
    worker = app.worker(concurrency=4)
    worker.open()
    try:
        assert worker.run_once() == 1  # claimed, handed to an executor that has not started
        assert app.get_job(job.id).status == "running"
        for _ in range(5):
            assert worker.run_once() == 0  # later polls find nothing to claim
        gate.set()
        eventually(lambda: worker.run_once() == 0 and app.get_job(job.id).status == "succeeded")
    finally:
        worker.close()
    assert read_ledger(ledger) == [(job.id, 1, os.getpid(), "run")]  # type: ignore[arg-type]
    assert len(app.store.attempt_list(job.id)) == 1


def test_it_claims_only_as_many_jobs_as_it_has_free_slots(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    monkeypatch.setattr(dispatcher, "ThreadPool", _gated_pool(gate))
    for n in range(10):
        task(app, "record").enqueue(n=n)
    worker = app.worker(concurrency=3)
    worker.open()
    try:
        assert worker.run_once() == 3
        assert worker.run_once() == 0
        assert len(app.store.job_list(status="running")) == 3
        gate.set()
        done = [("default", "succeeded", 10)]
        eventually(lambda: worker.run_once() >= 0 and app.store.job_counts() == done)
    finally:
        worker.close()


def test_heartbeat_extends_every_lease_in_one_statement(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    monkeypatch.setattr(dispatcher, "ThreadPool", _gated_pool(gate))
    for n in range(5):
        task(app, "record").enqueue(n=n)
    worker = app.worker(concurrency=5, lease=60)
    worker.open()
    calls: list[int] = []
    real = app.store.job_heartbeat

    def counting(leases, lease):  # type: ignore[no-untyped-def]
        calls.append(len(leases))
        return real(leases, lease)

    monkeypatch.setattr(app.store, "job_heartbeat", counting)
    try:
        assert worker.run_once() == 5
        before = sql_rows(app.url, "SELECT max(lease_expires_at) FROM onceq_jobs")[0][0]
        assert len(worker.heartbeat_once()) == 5
        after = sql_rows(
            app.url, "SELECT min(lease_expires_at) FROM onceq_jobs WHERE status = 'running'"
        )[0][0]
        assert after > before  # type: ignore[operator]
        assert calls == [5]
    finally:
        gate.set()
        worker.close()


def test_an_unknown_task_fails_clearly_and_the_worker_goes_on(app: App, ledger: object) -> None:
    from onceq.models import NewJob

    stray = app.store.job_insert(NewJob(task="nobody.knows.me", max_attempts=3))
    good = task(app, "record").enqueue(n=7)
    run_in_thread(app.worker(concurrency=2)).join(30)
    failed = app.get_job(stray.id)
    assert failed.status == "failed" and failed.attempts == 1
    assert failed.last_error == (
        "UnknownTask: unknown task 'nobody.knows.me': this worker's app has no such task"
    )
    assert app.get_job(good.id).result == 7


def test_a_payload_the_handler_cannot_take_fails_once_without_retry(app: App) -> None:
    from onceq.models import NewJob

    bad = app.store.job_insert(
        NewJob(task="tests.worker.apps.record", args={"n": "seven"}, max_attempts=3)
    )
    run_in_thread(app.worker(concurrency=1)).join(30)
    failed = app.get_job(bad.id)
    assert failed.status == "failed" and failed.attempts == 1
    assert failed.last_error is not None
    assert failed.last_error.startswith("PayloadError: tests.worker.apps.record: argument 'n'")


def test_closing_hands_back_claimed_jobs_that_never_started(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    monkeypatch.setattr(dispatcher, "ThreadPool", _gated_pool(gate))
    jobs = [task(app, "record").enqueue(n=n) for n in range(3)]
    worker = app.worker(concurrency=3, grace=5)
    worker.open()
    assert worker.run_once() == 3
    worker.close()  # the drain: nothing has started, so everything goes back
    gate.set()
    assert worker.counts["released"] == 3
    for j in jobs:
        job = app.get_job(j.id)
        assert (job.status, job.attempts, job.worker) == ("pending", 0, None)
        assert [a.outcome for a in app.store.attempt_list(j.id)] == ["released"]


def test_a_signal_landing_inside_an_event_s_lock_does_not_deadlock_the_worker(app: App) -> None:
    """SIGTERM is handled on the main thread between two bytecodes, possibly inside
    Event.wait() while that event's lock is held: a handler that set the event itself
    deadlocked there (seen once among 16 workers told to drain). An alarm turns the
    deadlock into an error instead of a hang."""
    worker = app.worker(concurrency=1)
    restore = worker._install_signals()

    def deadlocked(*_: object) -> None:
        raise TimeoutError("the SIGTERM handler blocked on the wake-up event's lock")

    previous = signal.signal(signal.SIGALRM, deadlocked)
    try:
        with worker._wake._cond:  # type: ignore[attr-defined] - as inside Event.wait()
            signal.setitimer(signal.ITIMER_REAL, 5)
            os.kill(os.getpid(), signal.SIGTERM)  # its handler runs right here
            signal.setitimer(signal.ITIMER_REAL, 0)
        eventually(worker._stop.is_set)  # and the drain was still asked for
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        restore()


def test_a_claim_that_returns_after_the_stop_signal_is_handed_back_unstarted(
    app: App, ledger: object
) -> None:
    """The signal arrives while a claim is out (sent before, committed after): the
    worker must not start what it brings back, it hands it back to `pending`."""
    job = task(app, "record").enqueue(n=1)
    worker = app.worker(concurrency=1)
    worker.open()
    store = worker.store
    claim = store.job_claim

    def claim_then_signal(*args: object, **kwargs: object) -> object:
        leases = claim(*args, **kwargs)  # type: ignore[arg-type]
        worker.stop()  # as SIGTERM's relay thread would, before the answer is read
        return leases

    store.job_claim = claim_then_signal  # type: ignore[method-assign]
    try:
        assert worker.run_once() == 0
        after = app.get_job(job.id)  # handed back by the pass itself, not by close()
        assert (after.status, after.attempts, len(worker.leases)) == ("pending", 0, 0)
    finally:
        store.job_claim = claim  # type: ignore[method-assign]
        worker.close()
    assert read_ledger(ledger) == []  # type: ignore[arg-type]
    (attempt,) = app.store.attempt_list(job.id)
    assert attempt.outcome == "released"


def test_ready_comes_once_the_worker_is_registered_and_new_work_would_wake_it(
    app: App,
) -> None:
    """What a harness that starts workers and then measures waits for (tools.fleet, so
    `onceq bench`): not the process, the worker about to claim. It used to be told before
    the worker had opened anything, and the first jobs of every efficiency scenario paid
    for the workers' own start (a connection, LISTEN, the registration)."""
    worker = app.worker(concurrency=1, handle_signals=False)
    seen: dict[str, object] = {}

    def ready() -> None:
        seen["listed"] = [w.name for w in app.store.worker_list()]
        assert worker._waker is not None
        seen["woken at once"] = worker._waker.ready(0)  # no wait left: ready already
        seen["claims"] = worker.counts["claimed"]
        worker.stop()

    job = task(app, "record").enqueue(n=1)
    worker.run(ready=ready)
    assert seen == {"listed": [worker.name], "woken at once": True, "claims": 0}
    assert app.store.job_get(job.id).status == "pending"  # ready before the first claim
