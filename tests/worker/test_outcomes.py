"""One outcome the store cannot write must not hold up the others (nor the worker)."""

from __future__ import annotations

from typing import Any

import pytest

from onceq import App
from tests.helpers import eventually, sql_rows
from tests.worker.conftest import run_in_thread


def test_errors_and_results_a_database_would_refuse_fail_only_their_own_job(app: App) -> None:
    @app.task(name="bad_error")
    def bad_error() -> None:
        raise ValueError("a NUL \x00 and a lone surrogate \udc80 in the message")

    @app.task(name="bad_result")
    def bad_result() -> str:
        return b"\xff".decode("utf-8", "surrogateescape")

    @app.task(name="fine")
    def fine(n: int) -> int:
        return n

    error_job, result_job = app.enqueue("bad_error"), app.enqueue("bad_result")
    fine_jobs = [app.enqueue("fine", {"n": n}) for n in range(10)]
    thread = run_in_thread(app.worker(concurrency=4))
    thread.join(60)
    assert not thread.is_alive()
    assert [app.get_job(j.id).result for j in fine_jobs] == list(range(10))
    failed = app.get_job(error_job.id)
    assert failed.status == "failed"
    assert failed.last_error == (
        "ValueError: a NUL \\x00 and a lone surrogate \\udc80 in the message"
    )
    refused = app.get_job(result_job.id)
    assert refused.status == "failed"
    assert "holds a lone surrogate" in (refused.last_error or "")


def test_a_batch_the_store_refuses_is_written_one_by_one(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the store cannot take (here: a simulated refusal for one job), the batch
    falls apart into single writes; that job is failed, saying why; the rest succeed."""

    @app.task(name="fine")
    def fine(n: int) -> int:
        return n

    jobs = [app.enqueue("fine", {"n": n}) for n in range(8)]
    poisoned = jobs[3].id
    store = app.store
    real_batch, real_many = store.job_complete_and_claim, store.job_complete_many

    def refuse(items: Any, *rest: Any, **options: Any) -> Any:
        if any(lease.job_id == poisoned for lease, _ in items):
            raise ValueError("the database refused this batch")
        return real_batch(items, *rest, **options)

    def refuse_one(items: Any) -> Any:
        if any(lease.job_id == poisoned for lease, _ in items):
            raise ValueError("the database refused this result")
        return real_many(items)

    monkeypatch.setattr(store, "job_complete_and_claim", refuse)
    monkeypatch.setattr(store, "job_complete_many", refuse_one)
    worker = app.worker(concurrency=8)
    thread = run_in_thread(worker)
    thread.join(60)
    assert not thread.is_alive()
    statuses = {j.id: app.get_job(j.id) for j in jobs}
    assert all(job.status == "succeeded" for i, job in statuses.items() if i != poisoned)
    assert statuses[poisoned].status == "failed"
    assert statuses[poisoned].last_error == (
        "OutcomeError: the outcome could not be recorded: ValueError: the database refused "
        "this result"
    )


def test_a_job_with_retries_left_is_retried_however_many_attempts_it_made(app: App) -> None:
    # The backoff was backoff * 2.0 ** (attempt - 1): from attempt 1025 on, that power
    # overflows, and the failure's write failed with it: the job ended failed with an
    # OverflowError instead of being retried (a task with retries=100_000, say).
    @app.task(name="flaky", retries=100_000, retry_backoff=0.001)
    def flaky() -> None:
        raise RuntimeError("not yet")

    job = app.enqueue("flaky")
    sql_rows(app.url, f"UPDATE onceq_jobs SET attempts = 1100 WHERE id = {job.id}")
    worker = app.worker(concurrency=1)
    thread = run_in_thread(worker, burst=False)  # burst would wait for the retry
    after = eventually(lambda: (j := app.get_job(job.id)).last_error and j, timeout=60)
    worker.stop()
    thread.join(60)
    assert (after.status, after.attempts) == ("pending", 1101), after.last_error
    assert after.last_error == "RuntimeError: not yet"


@pytest.mark.parametrize("backoff", [float("nan"), float("inf"), -1.0, "1"])
def test_a_backoff_that_is_not_a_duration_is_refused_at_registration(
    app: App, backoff: Any
) -> None:
    with pytest.raises(ValueError, match="retry_backoff"):
        app.task(name="odd", retries=1, retry_backoff=backoff)(lambda: None)


def test_retries_past_what_the_store_holds_are_refused_at_registration(app: App) -> None:
    # max_attempts is a 32-bit column: with retries=2**31 every enqueue failed on
    # PostgreSQL with "integer out of range" (and SQLite stored it).
    for retries in (2**31 - 2, 2**31, -1, 1.5, True):
        with pytest.raises(ValueError, match="retries must be a whole number"):
            app.task(name=f"many{retries}", retries=retries)(lambda: None)
    most = app.task(name="most", retries=2**31 - 3)(lambda: None)
    assert app.enqueue(most.name).max_attempts == 2**31 - 2
