"""Cancelling a run while cancelling one of its jobs: no deadlock, one consistent end."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable

import pytest

from onceq import App, Worker, Workflow
from onceq.worker.executors import ThreadPool
from tests.worker.conftest import run_in_thread


def _race(run: Callable[[], object], job: Callable[[], object]) -> dict[str, object]:
    """Both calls released together by a barrier; their answers."""
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def go(name: str, call: Callable[[], object]) -> None:
        barrier.wait()
        outcomes[name] = call()

    threads = [threading.Thread(target=go, args=("run", run)),
               threading.Thread(target=go, args=("job", job))]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcomes


def test_job_cancel_and_run_cancel_race_without_deadlock(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task(name="item")
    def item(n: int) -> int:
        return n

    other = App(app.url)
    wf = Workflow("race", input=["items"]).step(
        "fan", "item", with_items="$input.items", args={"n": "$item"}
    )
    caplog.set_level(logging.INFO, logger="onceq.store")
    for _ in range(40):
        run_id = app.run_workflow(wf, {"items": [1, 2, 3]})
        job_id = min(j.id for j in app.store.job_list(run_id=run_id))
        outcomes = _race(
            lambda run_id=run_id: app.store.run_cancel(run_id),
            lambda job_id=job_id: other.store.job_cancel(job_id),
        )
        assert outcomes["job"] in ("pending", "cancelled")
        run = app.get_run(run_id)
        # Either the run was cancelled first, or the job's cancellation failed the run
        # (its step failed) just before the run cancel arrived.
        assert (outcomes["run"], run.status) in (("running", "cancelled"),
                                                 ("failed", "failed"))  # fmt: skip
        assert all(j.status == "cancelled" for j in app.store.job_list(run_id=run_id))
    assert "DeadlockDetected" not in caplog.text
    other.close()


def test_claimed_items_of_a_cancelled_run_are_cancelled_when_a_drain_hands_them_back(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker claims items of a run; the run is cancelled (that cancels pending jobs
    only); the worker is stopped and hands back the items it never started. They must
    end cancelled like the rest of the run, not pending for the next worker to run."""
    ran: list[int] = []

    @app.task(name="item")
    def item(n: int) -> int:
        ran.append(n)
        return n

    gate = threading.Event()

    class Unstarted(ThreadPool):
        def _serve(self) -> None:  # takes nothing until the gate opens
            gate.wait()
            super()._serve()

    monkeypatch.setattr(sys.modules[Worker.__module__], "ThreadPool", Unstarted)
    wf = (
        Workflow("drained", input=["items"])
        .step("fan", "item", with_items="$input.items", args={"n": "$item"}, next=["after"])
        .step("after", "item", args={"n": 99})
    )
    run_id = app.run_workflow(wf, {"items": [1, 2]})
    worker = app.worker(concurrency=2, grace=5)
    worker.open()
    try:
        assert worker.run_once() == 2  # both items claimed, neither started
        assert app.cancel_run(run_id) == "running"
    finally:
        worker.close()  # the drain hands both back
        gate.set()
    assert {j.status for j in app.store.job_list(run_id=run_id)} == {"cancelled"}
    monkeypatch.undo()
    run_in_thread(app.worker(concurrency=2)).join(30)  # a next worker finds nothing
    assert ran == []
    assert app.get_run(run_id).status == "cancelled"
