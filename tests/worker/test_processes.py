"""Real worker processes: killed, drained, restarted, poisoned."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onceq import App
from onceq.worker.supervisor import Supervisor
from tests.helpers import eventually
from tests.worker.apps import read_ledger
from tests.worker.conftest import kill, start_worker_process, task

ROOT = Path(__file__).resolve().parents[2]


_STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _reap_cli_workers() -> Iterator[None]:
    """Whatever a test leaves running (it failed half-way) is killed and waited for."""
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def cli_worker(url: str, ledger: Path, *args: str) -> subprocess.Popen[bytes]:
    """`onceq worker --app tests.worker.apps:app …` as a user would start it; its log
    goes to LEDGER.log. It leads a process group of its own, killed with it at the end."""
    env = {**os.environ, "ONCEQ_URL": url, "ONCEQ_TEST_LEDGER": str(ledger)}
    with open(f"{ledger}.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "onceq", "worker", "--app", "tests.worker.apps:app", *args],
            cwd=ROOT, env=env, stderr=log, start_new_session=True,
        )  # fmt: skip
    _STARTED.append(process)
    return process


def logged(ledger: Path, text: str) -> bool:
    path = Path(f"{ledger}.log")
    return path.exists() and text in path.read_text()


def starts(ledger: Path, job_id: int) -> list[tuple[int, int]]:
    return [
        (attempt, pid) for j, attempt, pid, e in read_ledger(ledger) if j == job_id and e == "start"
    ]


def test_a_killed_worker_s_job_is_rescued_after_its_lease_and_runs_once_more(
    app: App, ledger: Path
) -> None:
    victim = task(app, "slow_first_attempt").enqueue(seconds=60)
    first = start_worker_process(app.url, ledger, concurrency=1, lease=1.0)
    eventually(lambda: starts(ledger, victim.id), timeout=30)
    others = [task(app, "record").enqueue(n=n) for n in range(5)]
    kill(first)  # SIGKILL in the middle of the job: no drain, no release
    assert app.get_job(victim.id).status == "running"  # nothing else knows yet

    second = start_worker_process(app.url, ledger, concurrency=2, lease=1.0)
    try:
        eventually(lambda: app.get_job(victim.id).status == "succeeded", timeout=60)
        eventually(lambda: all(app.get_job(j.id).status == "succeeded" for j in others))
    finally:
        kill(second)
    done = app.get_job(victim.id)
    assert done.attempts == 2
    (attempt1, pid1), (attempt2, pid2) = starts(ledger, victim.id)
    assert (attempt1, attempt2) == (1, 2) and pid1 == first.pid and pid2 == second.pid
    assert [a.outcome for a in app.store.attempt_list(victim.id)] == ["lease_expired", "succeeded"]
    runs = Counter(j for j, _, _, e in read_ledger(ledger) if e == "run")
    assert runs == Counter({j.id: 1 for j in others})  # nothing else ran twice


def test_the_supervisor_rescues_a_dead_child_s_jobs_at_once_and_restarts_it(
    app: App, ledger: Path
) -> None:
    victim = task(app, "slow_first_attempt").enqueue(seconds=60)
    supervisor = cli_worker(app.url, ledger, "--processes", "2", "--lease", "600")
    try:
        eventually(lambda: starts(ledger, victim.id), timeout=30)
        [(_, child_pid)] = starts(ledger, victim.id)
        os.kill(child_pid, signal.SIGKILL)
        # A 600 s lease: only the supervisor's rescue can bring it back this soon.
        eventually(lambda: app.get_job(victim.id).status == "succeeded", timeout=60)
        first, second = app.store.attempt_list(victim.id)
        assert first.outcome == "worker_died" and "signal SIGKILL" in (first.error or "")
        assert second.outcome == "succeeded"
        task(app, "record").enqueue(n=1)  # the restarted slots keep working
        eventually(lambda: app.store.job_counts() == [("default", "succeeded", 2)], timeout=30)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(60) == 0


def test_sigterm_drains_running_jobs_and_loses_nothing(app: App, ledger: Path) -> None:
    jobs = [task(app, "sleepy").enqueue(seconds=1.0) for _ in range(6)]
    supervisor = cli_worker(app.url, ledger, "--concurrency", "2", "--grace", "30")
    eventually(lambda: len(read_ledger(ledger)) >= 2, timeout=30)
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(60) == 0
    statuses = Counter(app.get_job(j.id).status for j in jobs)
    assert statuses["succeeded"] >= 2 and statuses["failed"] == statuses["running"] == 0
    assert statuses["succeeded"] + statuses["pending"] == 6
    events = Counter(e for _, _, _, e in read_ledger(ledger))
    assert events["start"] == events["end"] == statuses["succeeded"]  # every start finished
    for j in jobs:
        job = app.get_job(j.id)
        if job.status == "pending":
            assert job.attempts == 0  # never started, or handed back unstarted


def test_a_second_sigterm_stops_at_once_and_leaves_nothing_running(app: App, ledger: Path) -> None:
    jobs = [task(app, "sleepy").enqueue(seconds=60) for _ in range(2)]
    supervisor = cli_worker(app.url, ledger, "--concurrency", "2", "--grace", "120")
    eventually(lambda: len(read_ledger(ledger)) == 2, timeout=30)
    supervisor.send_signal(signal.SIGTERM)
    eventually(lambda: logged(ledger, "supervisor.draining"))
    supervisor.send_signal(signal.SIGTERM)  # a second signal: stop now
    assert supervisor.wait(30) == 1
    for j in jobs:  # put back by the supervisor, not left to a 30 s lease
        job = app.get_job(j.id)
        assert (job.status, job.attempts) == ("pending", 0)  # a shutdown costs no attempt
        [attempt] = app.store.attempt_list(j.id)
        assert attempt.outcome == "stopped" and "during a shutdown" in (attempt.error or "")


def test_a_signal_landing_while_children_are_spawned_reaches_every_child(
    app: App, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM that arrives between two spawns once left the second child running,
    unsignalled, and the supervisor hung at exit joining it (the demo's CI hang)."""
    monkeypatch.setenv("ONCEQ_TEST_LEDGER", str(ledger))

    class SignalMidSpawn(Supervisor):
        def _spawn(self, slot: Any) -> None:
            super()._spawn(slot)
            if slot.index == 0:
                os.kill(os.getpid(), signal.SIGTERM)  # handled before slot 1 is spawned

    supervisor = SignalMidSpawn("tests.worker.apps:app", url=app.url, processes=3)
    try:
        assert supervisor.run() == 0
        left = [c for c in multiprocessing.active_children() if c.name.startswith("onceq-")]
        assert left == []  # every child it started has exited
    finally:
        for child in multiprocessing.active_children():
            child.kill()
            child.join()


def test_a_poison_job_fails_after_its_attempts_and_the_others_flow(app: App, ledger: Path) -> None:
    poison = task(app, "poison").enqueue()
    others = [task(app, "record").enqueue(n=n) for n in range(4)]
    supervisor = cli_worker(app.url, ledger, "--concurrency", "1", "--burst", "--lease", "600")
    assert supervisor.wait(120) == 0
    dead = app.get_job(poison.id)
    assert (dead.status, dead.attempts) == ("failed", 3)
    assert "died: exit code 3" in (dead.last_error or "")
    assert all(app.get_job(j.id).status == "succeeded" for j in others)
    assert len(starts(ledger, poison.id)) == 3


def test_a_starting_child_waits_for_an_unreachable_store_instead_of_dying() -> None:
    """A PostgreSQL restart while a child starts once killed it with a traceback (the
    supervisor then restarted it): it now waits, one line per try, within its patience."""
    from onceq.errors import ConfigError, StoreUnavailable
    from onceq.worker.supervisor import open_when_reachable

    class App:
        tries = 0

        @property
        def store(self) -> object:
            self.tries += 1
            if self.tries == 1:
                raise ConfigError("cannot reach PostgreSQL at 127.0.0.1:5432/test: shutting down")
            if self.tries < 4:
                raise StoreUnavailable("PostgreSQL at 127.0.0.1:5432/test: connection refused")
            return object()

    app = App()
    open_when_reachable(app, patience=30)
    assert app.tries == 4
    hopeless = App()
    hopeless.tries = -1_000_000
    with pytest.raises(StoreUnavailable):
        open_when_reachable(hopeless, patience=0.5)  # past its patience: the error stands


def test_a_dead_worker_whose_jobs_cannot_be_put_back_yet_holds_up_no_other(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor queues the workers it saw die; rescuing the first one's jobs fails
    (the database refuses, for now). The second one's jobs must be put back all the
    same, in the same turn, and the first retried at the next. (With the database
    unreachable, a turn stops at the first: each would only wait for it.)"""
    from onceq.errors import StoreUnavailable
    from onceq.models import NewJob

    first, second = (app.store.job_insert(NewJob(task="t", max_attempts=2)) for _ in range(2))
    app.store.job_claim("dead-1", None, 1, 30)
    app.store.job_claim("dead-2", None, 1, 30)
    supervisor = Supervisor("tests.worker.apps:app", url=app.url, processes=1)
    supervisor.slots = []  # no processes of its own: one turn is only the rescues
    supervisor.store = app.store
    real = app.store.job_rescue_worker

    def refuses_the_first(name: str, reason: str) -> Any:
        if name == "dead-1":
            raise ValueError("injected: this one cannot be put back now")
        return real(name, reason)

    monkeypatch.setattr(app.store, "job_rescue_worker", refuses_the_first)
    supervisor._unrescued = [
        ("dead-1", "signal SIGKILL", False),
        ("dead-2", "signal SIGKILL", False),
    ]
    supervisor.run_once(0.0)
    assert (app.get_job(first.id).status, app.get_job(second.id).status) == ("running", "pending")
    monkeypatch.undo()
    supervisor.run_once(0.0)
    assert app.get_job(first.id).status == "pending" and supervisor.rescued == 2
    calls: list[str] = []

    def unreachable(name: str, reason: str) -> Any:
        calls.append(name)
        raise StoreUnavailable("injected: the database is away")

    monkeypatch.setattr(app.store, "job_rescue_worker", unreachable)
    dead = [("dead-3", "signal SIGKILL", False), ("dead-4", "signal SIGKILL", False)]
    supervisor._unrescued = list(dead)
    supervisor.run_once(0.0)
    assert calls == ["dead-3"]  # not one wait per dead worker
    assert supervisor._unrescued == dead
