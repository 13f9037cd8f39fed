"""Scenario 2, zombie worker: a worker process stopped (SIGSTOP) longer than its lease
while it holds jobs; another worker rescues and finishes them; when the zombie resumes
(SIGCONT), each of its late writes is refused and its handlers learn that they lost the
lease at its first heartbeat."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from onceq import App
from tests.chaos.harness import Chaos, proc_state, read_ledger, soak, wait_for

pytestmark = pytest.mark.chaos

LEASE = 1.0  # heartbeats every LEASE / 3


def test_a_stopped_worker_is_rescued_and_fenced_out_when_it_resumes(chaos: Chaos, app: App) -> None:
    zombies = [app.enqueue("chaos.zombie").id for _ in range(3)]
    zombies.append(app.enqueue("chaos.zombie_async").id)
    zombie, name = chaos.worker(name="zombie", concurrency=len(zombies), lease=LEASE)

    def first_starts() -> list[int]:
        return [e.job for e in read_ledger(chaos.ledger) if e.event == "start" and e.attempt == 1]

    wait_for(lambda: sorted(first_starts()) == sorted(zombies), timeout=60)
    tries = chaos.pause(zombie, zombies)  # stopped outside any transaction
    paused = time.monotonic()

    normal = [app.enqueue("chaos.short", {"n": n}).id for n in range(soak(100, 1000))]
    rescuer, _ = chaos.worker(name="rescuer", concurrency=4, lease=5, rescue_interval=0.25)

    def rescued() -> bool:
        jobs = [app.get_job(i) for i in zombies + normal]
        return all(j.status == "succeeded" for j in jobs)

    wait_for(rescued, timeout=120)
    assert [app.get_job(i).result for i in zombies] == ["rescued"] * len(zombies)
    assert proc_state(zombie.pid) == "T"  # still stopped: it had no part in the rescue
    stopped_for = time.monotonic() - paused
    os.kill(zombie.pid, signal.SIGCONT)
    resumed = time.monotonic()

    def late_writes_refused() -> bool:
        firsts = [app.store.attempt_list(i)[0] for i in zombies]
        return all(a.rejected and a.rejected.split(",")[-1] in ("complete", "fail") for a in firsts)

    wait_for(late_writes_refused, timeout=60)
    told = {e.job: e for e in read_ledger(chaos.ledger) if e.event == "told"}
    for job_id in zombies:
        first, second = app.store.attempt_list(job_id)
        assert (first.worker, first.outcome) == (name, "lease_expired")
        assert (second.worker, second.outcome) == ("rescuer", "succeeded")
        # At most one heartbeat refused: on resuming, the worker sees that no heartbeat
        # got through for a whole lease and tells the handler itself, or its first
        # heartbeat is refused and tells it (a handler not told would be heartbeated, and
        # refused, again).
        expected = ("complete", "heartbeat,complete")
        if app.get_job(job_id).task == "chaos.zombie_async":  # cancelled, or saw it first
            expected = ("fail", "heartbeat,fail", "complete", "heartbeat,complete")
        assert first.rejected in expected, (job_id, first.rejected)
        assert told[job_id].extra["told"] is True and told[job_id].pid == zombie.pid
        assert told[job_id].token == first.token
    log = chaos.log(name).read_text()
    assert log.count("job.lease_lost") == len(zombies)
    assert log.count("job.result_rejected") == len(zombies)

    assert chaos.terminate(zombie) == 0
    assert chaos.terminate(rescuer) == 0
    figures = chaos.check()
    chaos.report(
        figures,
        pauses=1,
        stop_tries=tries,
        stopped_s=round(stopped_for, 2),
        told_after_resume_s=round(max(told[i].mono for i in zombies) - resumed, 3),
        heartbeat_s=round(LEASE / 3, 3),
    )
    chaos.finished_ok(figures)
    assert figures.reruns == figures.reruns_lease_loss == len(zombies)
    # Each zombie lease: its late completion refused, and at most one heartbeat before it.
    assert len(zombies) <= figures.rejected <= 2 * len(zombies)
    assert figures.rejected_self_race == 0


def test_a_heartbeat_racing_its_own_completion_is_not_recorded_as_a_stale_write(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = App(store_url)
    started, release = threading.Event(), threading.Event()

    @app.task(name="race.done")
    def done() -> str:
        started.set()
        release.wait(30)
        return "ok"

    job = done.enqueue()
    worker = app.worker(concurrency=1, lease=60)  # its own heartbeats: every 20 s
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert started.wait(30)
        real = app.store.job_heartbeat

        def heartbeat_after_completion(leases, lease):  # type: ignore[no-untyped-def]
            release.set()  # the snapshot is taken: now the job completes first
            wait_for(lambda: app.get_job(job.id).status == "succeeded", timeout=30)
            return real(leases, lease)

        monkeypatch.setattr(app.store, "job_heartbeat", heartbeat_after_completion)
        worker.heartbeat_once()
    finally:
        release.set()
        worker.stop()
        thread.join(30)
    (attempt,) = app.store.attempt_list(job.id)
    app.close()
    assert attempt.outcome == "succeeded"
    assert attempt.rejected is None
