"""Scenario 12, a silent partition: the proxy between worker A and PostgreSQL stops
forwarding in both directions — no RST, no FIN, every call A makes just hangs — for three
lease lengths, then lets everything through again. A's handlers (a thread, a coroutine,
a subprocess) must be told within one heartbeat of the lease's deadline on the
database's clock, before anyone could re-claim their jobs; worker B, on a connection of
its own, re-runs them; once the network is back, A's late writes are refused."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from onceq import App
from tests.chaos.harness import Chaos, all_finished, read_ledger, sql, wait_for
from tests.chaos.proxy import PgProxy

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

LEASE = 2.0
TASKS = ("chaos.zombie", "chaos.zombie_async", "chaos.zombie_subprocess")


@pytest.fixture
def proxy() -> Iterator[PgProxy]:
    with PgProxy() as p:
        yield p


def test_a_worker_cut_off_silently_tells_its_handlers_before_its_leases_can_expire(
    pg_url: str, new_chaos: object, proxy: PgProxy
) -> None:
    chaos: Chaos = new_chaos(pg_url)  # type: ignore[operator]
    app = App(pg_url)
    for name in TASKS:
        app.task(name=name, retries=1)(lambda: None)
    jobs = {app.enqueue(name).id: name for name in TASKS}
    a, _ = chaos.worker("A", env={"ONCEQ_URL": proxy.url(pg_url)}, concurrency=4, lease=LEASE)

    def started_in_a() -> bool:
        return {e.job for e in read_ledger(chaos.ledger) if e.worker == "A"} == set(jobs)

    wait_for(started_in_a, timeout=60)
    b, _ = chaos.worker("B", concurrency=4, lease=LEASE, rescue_interval=0.1)
    time.sleep(LEASE / 2)  # a heartbeat or two through the proxy first
    proxy.freeze()
    frozen_at = time.time()
    time.sleep(0.3)  # what was in flight has landed (or is held in the proxy for good)
    # The deadlines the last heartbeats that got through set, on the database's clock.
    deadline = {
        job: at.timestamp()
        for job, at in sql(pg_url, "SELECT id, lease_expires_at FROM onceq_jobs WHERE worker = 'A'")
    }
    assert set(deadline) == set(jobs)

    def rerun_by_b() -> bool:
        ledger = read_ledger(chaos.ledger)
        return {e.job for e in ledger if e.worker == "B" and e.event == "end"} == set(jobs)

    wait_for(rerun_by_b, timeout=60)
    time.sleep(max(0.0, frozen_at + 3 * LEASE - time.time()))  # the partition lasts 3 leases
    proxy.thaw()
    wait_for(lambda: all_finished(chaos.url, len(jobs)), timeout=60)

    def rejected() -> int:
        rows = sql(pg_url, "SELECT count(*) FROM onceq_attempts WHERE worker = 'A' AND "
                           "rejected IS NOT NULL")  # fmt: skip
        return int(rows[0][0])

    wait_for(lambda: rejected() == len(jobs), timeout=60)  # A's late writes, refused
    assert chaos.terminate(a) == 0 and chaos.terminate(b) == 0
    app.close()

    ledger = read_ledger(chaos.ledger)
    heartbeat = LEASE / 3
    told: dict[int, float] = {}
    for job, name in jobs.items():
        mine = [e for e in ledger if e.job == job and e.worker == "A"]
        if name == "chaos.zombie_subprocess":  # killed: its last tick is when it was told
            told[job] = max(e.wall for e in mine if e.event == "tick")
        else:
            told[job] = next(e.wall for e in mine if e.event == "told")
        b_start = next(e.wall for e in ledger if e.job == job and e.worker == "B")
        # Told before the lease could expire, so before B could claim it...
        assert told[job] < deadline[job], (name, told[job], deadline[job])
        assert told[job] < b_start, name
        # ...and within about a heartbeat of that deadline (half a heartbeat ahead, plus
        # one more when the answer to the last heartbeat was held in the partition).
        assert told[job] > deadline[job] - 2 * heartbeat, (name, deadline[job] - told[job])
    figures = chaos.check()
    margins = {jobs[j].split(".")[1]: round(deadline[j] - t, 3) for j, t in told.items()}
    chaos.report(figures, partition_s=3 * LEASE, lease_s=LEASE, told_before_deadline_s=margins)
    chaos.finished_ok(figures)
    assert figures.reruns == figures.reruns_lease_loss == len(jobs)
    assert figures.rejected - figures.rejected_self_race >= len(jobs)
