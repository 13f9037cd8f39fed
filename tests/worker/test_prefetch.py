"""Prefetch: jobs claimed ahead of free slots wait leased in the worker, start the moment
a slot frees, never run once their lease is gone, and go back on a drain."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from onceq import App, Worker
from tests.helpers import eventually
from tests.worker.apps import read_ledger
from tests.worker.conftest import run_in_thread, task


def _statuses(app: App, *ids: int) -> list[str]:
    return [app.store.job_get(i).status for i in ids]


def _two_jobs(app: App, tmp_path: Path, name: str = "gated") -> tuple[Path, int, int]:
    gate = tmp_path / "gate"
    first = task(app, name).enqueue(gate=str(gate))
    second = task(app, name).enqueue(gate=str(gate))
    return gate, first.id, second.id


def _worker(app: App, prefetch: int, **options: object) -> tuple[Worker, threading.Thread]:
    worker = app.worker(concurrency=1, prefetch=prefetch, handle_signals=False, **options)  # type: ignore[arg-type]
    return worker, run_in_thread(worker, burst=False)


@pytest.mark.parametrize("name", ["gated", "async_gated"])
@pytest.mark.parametrize("prefetch", [0, 1])
def test_a_prefetched_job_waits_leased_and_starts_when_the_slot_frees(
    app: App, ledger: Path, tmp_path: Path, prefetch: int, name: str
) -> None:
    gate, first, second = _two_jobs(app, tmp_path, name)
    worker, thread = _worker(app, prefetch)
    try:
        eventually(lambda: read_ledger(ledger))  # the first handler runs (and waits)
        want = ["running", "running" if prefetch else "pending"]
        eventually(lambda: _statuses(app, first, second) == want)
        # One slot: the second job (claimed ahead, or not) has not started.
        assert [(job, event) for job, _, _, event in read_ledger(ledger)] == [(first, "start")]
        if prefetch:
            assert app.store.job_get(second).worker == worker.name
        gate.touch()
        eventually(lambda: _statuses(app, first, second) == ["succeeded", "succeeded"])
        runs = [(job, event) for job, _, _, event in read_ledger(ledger)]
        assert runs == [(first, "start"), (first, "end"), (second, "start"), (second, "end")]
    finally:
        gate.touch()
        worker.stop()
        thread.join(10)


def test_a_drain_hands_the_prefetched_job_back_unrun(
    app: App, ledger: Path, tmp_path: Path
) -> None:
    gate, first, second = _two_jobs(app, tmp_path)
    worker, thread = _worker(app, 1)
    eventually(lambda: _statuses(app, first, second) == ["running", "running"])
    worker.stop()  # drain: the running one finishes, the waiting one goes back
    eventually(lambda: _statuses(app, second) == ["pending"])
    assert app.store.job_get(second).attempts == 0  # its attempt given back
    gate.touch()
    thread.join(10)
    assert not thread.is_alive()
    assert _statuses(app, first, second) == ["succeeded", "pending"]
    assert [job for job, _, _, event in read_ledger(ledger) if event == "start"] == [first]


def test_a_prefetched_job_cancelled_while_it_waits_never_runs(
    app: App, ledger: Path, tmp_path: Path
) -> None:
    """Its lease dies with the cancel; the next heartbeat tells the worker, and the slot
    that frees later does not run it."""
    gate, first, second = _two_jobs(app, tmp_path)
    worker, thread = _worker(app, 1, lease=0.9)  # a heartbeat every 0.3 s
    try:
        eventually(lambda: _statuses(app, first, second) == ["running", "running"])
        assert app.store.job_cancel(second) == "running"
        held = next(h for h in worker.leases.snapshot() if h.lease.job_id == second)
        eventually(lambda: held.ctx.should_stop())
        gate.touch()
        eventually(lambda: _statuses(app, first) == ["succeeded"])
        eventually(lambda: not len(worker.leases))  # its outcome is settled too
        assert _statuses(app, second) == ["cancelled"]
        assert [job for job, _, _, event in read_ledger(ledger) if event == "start"] == [first]
    finally:
        gate.touch()
        worker.stop()
        thread.join(10)


def test_prefetch_is_bounded() -> None:
    with pytest.raises(ValueError, match="prefetch must be between 0 and"):
        App().worker(prefetch=-1)
