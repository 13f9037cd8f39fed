"""Scenario 1, kill chaos: bare worker processes SIGKILLed at random while short jobs
flow; every job completes, and a job runs again only when its worker died."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from onceq import App
from tests.chaos.harness import Chaos, Feeder, all_finished, holders, soak, sql, wait_for

pytestmark = pytest.mark.chaos

WORKERS = 3
LEASE = 4.0  # a killed worker's jobs come back after this; heartbeats every LEASE / 3


def test_workers_killed_at_random_lose_nothing_and_rerun_only_their_own_jobs(
    chaos: Chaos, app: App
) -> None:
    kills = soak(8, 60)
    rng = random.Random()
    workers = {}
    for _ in range(WORKERS):
        proc, name = chaos.worker(concurrency=4, lease=LEASE)
        workers[name] = proc
    killed: list[str] = []
    # A steady backlog, so that every kill lands on work in flight.
    payload = lambda n: {"n": n, "sleep": rng.choice([0, 0.005, 0.02, 0.05])}  # noqa: E731
    with Feeder(chaos.url, "chaos.short", payload, backlog=400) as feeder:
        for _ in range(kills):
            time.sleep(rng.uniform(1.0, 2.0))  # the fault schedule, not a wait for a state
            # The victim: one of ours that holds jobs right now.
            busy = wait_for(lambda: sorted(set(holders(chaos.url)) & set(workers)), timeout=60)
            name = rng.choice(busy)
            os.kill(workers.pop(name).pid, signal.SIGKILL)
            killed.append(name)
            proc, new = chaos.worker(concurrency=4, lease=LEASE)
            workers[new] = proc
    wait_for(lambda: all_finished(chaos.url, len(feeder.ids)), timeout=180)
    for proc in workers.values():
        assert chaos.terminate(proc) == 0

    figures = chaos.check(expected_ids=feeder.ids)
    chaos.report(figures, kills=len(killed), workers=WORKERS + len(killed))
    assert feeder.errors == []
    chaos.finished_ok(figures)
    # Every re-run follows a lease lost by a worker this test killed, and only those.
    assert figures.reruns == figures.reruns_lease_loss
    ended = sql(
        chaos.url,
        "SELECT job_id, token, worker, outcome FROM onceq_attempts WHERE outcome <> 'succeeded'",
    )
    strays = [row for row in ended if row[3] != "lease_expired" or row[2] not in killed]
    assert strays == [], f"leases lost by workers that were not killed: {strays[:10]}"
    # Killed workers write nothing, and a heartbeat that merely crossed its own holder's
    # completion is not a stale write: nothing at all was refused.
    assert figures.rejected == 0
