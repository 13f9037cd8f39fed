"""Lost answers: the database committed, the answer never reached the worker.

A wire proxy between the worker and PostgreSQL forwards a chosen COMMIT, lets it happen,
drops the server's answer and cuts the connection. The worker must find out what
committed and carry on: a job whose claim's answer was lost used to expire and end
`failed: lease expired` with zero executions (retries=0), and a --burst worker exited
while that job was still `running`. Below also two faults in a row on either backend,
which used to leak the worker's only slot for good.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from onceq import App
from onceq.errors import OutcomeUnknown, StoreUnavailable
from tests.chaos.proxy import PgProxy
from tests.worker.conftest import run_in_thread

CLAIM = "lease_token + 1"  # in the text of every claim statement
COMPLETE = "status = 'succeeded'"  # in the text of the completion statement


@pytest.fixture
def proxy() -> Iterator[PgProxy]:
    with PgProxy() as p:
        yield p


def _apps(url: str, proxied: str) -> tuple[App, App, list[int]]:
    """The same task on two apps: one on the store itself, one through the proxy."""
    ran: list[int] = []
    apps = (App(url), App(proxied))
    for a in apps:
        a.task(name="work")(lambda n: ran.append(n) or n)
    return apps[0], apps[1], ran


@pytest.mark.postgres
def test_a_claim_whose_answer_was_lost_is_found_and_run_once(pg_url: str, proxy: PgProxy) -> None:
    direct, through, ran = _apps(pg_url, proxy.url(pg_url))
    job = direct.enqueue("work", {"n": 1})  # retries=0: one lost attempt would fail it
    proxy.lose_commits(1.0, when=lambda text: CLAIM in text, limit=1)
    thread = run_in_thread(through.worker(concurrency=1, lease=5), burst=True)
    thread.join(60)
    assert not thread.is_alive()
    assert proxy.stats["commits_lost"] == 1
    done = direct.get_job(job.id)  # a burst worker returns only once its jobs are done
    assert (done.status, done.attempts, done.result, ran) == ("succeeded", 1, 1, [1])
    (attempt,) = direct.store.attempt_list(job.id)
    assert (attempt.outcome, attempt.rejected) == ("succeeded", None)
    direct.close()
    through.close()


@pytest.mark.postgres
def test_a_completion_and_claim_whose_answer_was_lost_lose_nothing(
    pg_url: str, proxy: PgProxy
) -> None:
    """Both halves of one transaction: the completion is sent again and answered
    "already recorded" (not refused as stale), and the claim is found again."""
    direct, through, ran = _apps(pg_url, proxy.url(pg_url))
    jobs = [direct.enqueue("work", {"n": n}) for n in range(3)]
    proxy.lose_commits(1.0, when=lambda text: CLAIM in text and COMPLETE in text, limit=1)
    worker = through.worker(concurrency=1, lease=5)
    thread = run_in_thread(worker, burst=True)
    thread.join(60)
    assert not thread.is_alive()
    assert proxy.stats["commits_lost"] == 1
    assert sorted(ran) == [0, 1, 2]
    for j in jobs:
        done = direct.get_job(j.id)
        assert (done.status, done.attempts) == ("succeeded", 1)
        assert [(a.outcome, a.rejected) for a in direct.store.attempt_list(j.id)] == [
            ("succeeded", None)
        ]
    assert worker.counts["rejected"] == 0 and worker.counts["adopted"] == 1
    direct.close()
    through.close()


def test_two_faults_in_a_row_leave_no_slot_taken(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    """A completion batch commits but its answer is lost; then the very next call to the
    store fails once. The worker (one slot) must still finish every job and return."""

    @app.task(name="work")
    def work(n: int) -> int:
        return n

    jobs = [app.enqueue("work", {"n": n}) for n in range(4)]
    store = app.store
    real = store.job_complete_and_claim
    armed = threading.Event()
    faults: list[str] = []

    def first_answer_lost(*args: Any, **options: Any) -> Any:
        answer = real(*args, **options)  # committed...
        if not faults:
            faults.append("answer lost")
            armed.set()
            raise OutcomeUnknown("injected: the answer to COMMIT was lost")  # ...unanswered
        return answer

    for name in ("_in_tx", "_read"):
        inner = getattr(store, name)

        def once(*args: Any, _inner: Any = inner, **kwargs: Any) -> Any:
            if armed.is_set():
                armed.clear()
                faults.append("one failed call")
                raise StoreUnavailable("injected: the database went away for a moment")
            return _inner(*args, **kwargs)

        monkeypatch.setattr(store, name, once)
    monkeypatch.setattr(store, "job_complete_and_claim", first_answer_lost)
    thread = run_in_thread(app.worker(concurrency=1, lease=30), burst=True)
    thread.join(60)
    assert not thread.is_alive(), "the worker never returned: a slot stayed taken"
    assert faults == ["answer lost", "one failed call"]
    assert [app.get_job(j.id).status for j in jobs] == ["succeeded"] * 4


def test_a_job_being_handed_back_is_not_adopted_and_run_meanwhile(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim answered too late to be started is handed back, but the database is away
    for that (twice). Meanwhile another claim's answer is lost, so the worker adopts what
    runs under its name: not the job it is handing back — that one would run here and,
    once handed back, again elsewhere."""
    ran: list[int] = []

    @app.task(name="work")
    def work(n: int) -> int:
        ran.append(n)
        return n

    late, lost = app.enqueue("work", {"n": 1}), app.enqueue("work", {"n": 2})
    lease = 1.5
    store = app.store
    real_claim, real_release = store.job_claim, store.job_release_many
    calls = {"claim": 0, "release": 0}

    def claim(worker: str, queues: Any, limit: int, seconds: float, **options: Any) -> Any:
        calls["claim"] += 1
        got = real_claim(worker, queues, 1, seconds, **options)
        if calls["claim"] == 1:
            time.sleep(lease * 0.93)  # the answer comes too late: handed back, not started
        elif calls["claim"] == 2:
            raise OutcomeUnknown("injected: the answer to COMMIT was lost")
        return got

    def release(leases: Any) -> Any:
        calls["release"] += 1
        if calls["release"] <= 2:
            raise StoreUnavailable("injected: the database is away")
        return real_release(leases)

    monkeypatch.setattr(store, "job_claim", claim)
    monkeypatch.setattr(store, "job_release_many", release)
    # (No rescue after the first pass: nobody takes the handed-back job meanwhile.)
    worker = app.worker(concurrency=1, lease=lease, rescue_interval=3600)
    thread = run_in_thread(worker, burst=True)
    thread.join(60)
    assert not thread.is_alive()
    assert sorted(ran) == [1, 2]  # each once
    assert [a.outcome for a in app.store.attempt_list(late.id)] == ["released", "succeeded"]
    assert [a.outcome for a in app.store.attempt_list(lost.id)] == ["succeeded"]


def test_adopting_takes_what_the_lost_claim_took_and_nothing_else(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two live workers share a name (nothing forbids it). One loses a claim's answer: it
    must adopt the job that claim took, not the one the other worker is running under
    the same name — that one would run twice at once, under one token."""
    starts: list[tuple[int, str]] = []
    release = threading.Event()

    def make() -> App:
        a = App(store_url)

        @a.task(name="work")
        def work(n: int) -> int:
            starts.append((n, threading.current_thread().name))
            if n == 1:
                release.wait(30)
            return n

        return a

    first, second = make(), make()
    busy = first.enqueue("work", {"n": 1})
    one = run_in_thread(first.worker(concurrency=1, name="w", lease=30), burst=True)
    wait_for_running = time.monotonic() + 30
    while first.get_job(busy.id).status != "running" and time.monotonic() < wait_for_running:
        time.sleep(0.01)
    lost = first.enqueue("work", {"n": 2})
    real = second.store.job_claim

    def claim_answer_lost(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)  # it commits...
        monkeypatch.setattr(second.store, "job_claim", real)
        raise OutcomeUnknown("injected: the answer to COMMIT was lost")

    monkeypatch.setattr(second.store, "job_claim", claim_answer_lost)
    other = second.worker(concurrency=2, name="w", lease=30)
    two = run_in_thread(other, burst=True)
    deadline = time.monotonic() + 30
    while second.get_job(lost.id).status != "succeeded" and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    one.join(30)
    two.join(30)
    assert sorted(n for n, _ in starts) == [1, 2]  # each once
    assert other.counts["adopted"] == 1
    assert [a.outcome for a in first.store.attempt_list(busy.id)] == ["succeeded"]
    first.close()
    second.close()
