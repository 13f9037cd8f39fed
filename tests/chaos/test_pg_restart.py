"""Scenario 3, the PostgreSQL server restarted in the middle of a run (`-m fast`, then
`-m immediate`): the workers reconnect by themselves and carry on; nothing is lost,
nothing runs twice without a lease loss, and the server connections stay bounded.

PostgreSQL only: SQLite has no server to restart (its equivalent, a worker killed while
it holds the file's lock, is scenario 1). This restarts the shared test server, so any
other PostgreSQL test running at the same moment (another pytest) sees it go away.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from onceq.store import open_store
from onceq.store.postgres import DEFAULT_POOL_SIZE
from tests.chaos.conftest import fresh_app
from tests.chaos.harness import (
    Chaos,
    Feeder,
    all_finished,
    ensure_postgres_running,
    pg_cluster,
    pg_connections,
    pg_ctl,
    pg_ready,
    read_ledger,
    sampling,
    soak,
    sql,
    statuses,
    wait_for,
)

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

PROCESSES = 3


def test_workers_reconnect_after_postgres_restarts_and_lose_nothing(
    pg_url: str, new_chaos: Callable[[str], Chaos]
) -> None:
    if pg_cluster() is None:
        pytest.skip("needs root and pg_ctlcluster to restart the local PostgreSQL server")
    chaos = new_chaos(pg_url)
    open_store(pg_url).close()  # the schema, before anything starts
    workers = [chaos.worker(concurrency=4, lease=10)[0] for _ in range(PROCESSES)]
    bound = PROCESSES * (DEFAULT_POOL_SIZE + 1)  # per process: its pool, its LISTEN
    modes = soak(["fast", "immediate"], ["fast", "immediate"] * 5)
    restarts = 0

    def succeeded() -> int:
        return statuses(pg_url)["succeeded"]

    feeder = Feeder(pg_url, "chaos.short", lambda n: {"n": n, "sleep": 0.02}, backlog=200)
    with feeder, sampling(lambda: pg_connections(pg_url, chaos.appname)) as samples:
        try:
            for mode in modes:
                before = succeeded()  # the workers are busy: mid-run
                wait_for(lambda b=before: succeeded() >= b + 100, timeout=120)
                pg_ctl("restart", "-m", mode)
                restarts += 1
                wait_for(lambda: pg_ready(pg_url), timeout=60)
            after = succeeded()  # and they carry on
            wait_for(lambda: succeeded() >= after + 100, timeout=120)
        finally:
            ensure_postgres_running(pg_url)
        feeder.stop()
        wait_for(lambda: all_finished(pg_url, len(feeder.ids)), timeout=180)
    assert [chaos.terminate(w) for w in workers] == [0] * PROCESSES

    log = "".join(chaos.logs().values())
    figures = chaos.check(expected_ids=feeder.ids)
    chaos.report(
        figures,
        restarts=restarts,
        modes="+".join(modes),
        max_connections=max(samples),
        connection_bound=bound,
        worker_pass_errors=log.count("worker pass failed"),
        heartbeat_errors=log.count("heartbeat failed"),
        listen_reconnects=log.count("LISTEN connection lost"),
        enqueue_errors=len(feeder.errors),
    )
    chaos.finished_ok(figures)
    assert max(samples) <= bound, f"{max(samples)} server connections, bound {bound}"
    assert figures.reruns == figures.reruns_lease_loss
    assert "Traceback" not in log


def test_the_supervisor_survives_a_postgres_restart_and_still_rescues_a_dead_child(
    pg_url: str, new_chaos: Callable[[str], Chaos]
) -> None:
    if pg_cluster() is None:
        pytest.skip("needs root and pg_ctlcluster to restart the local PostgreSQL server")
    chaos = new_chaos(pg_url)
    app = fresh_app(pg_url)
    job = app.enqueue("chaos.slow_first", {"seconds": 120})
    app.close()
    supervisor = chaos.supervisor("supervisor", "--processes", "2", "--lease", "600")
    (start,) = wait_for(
        lambda: [e for e in read_ledger(chaos.ledger) if e.event == "start"], timeout=60
    )
    try:
        pg_ctl("restart", "-m", "fast")
        wait_for(lambda: pg_ready(pg_url), timeout=60)
    finally:
        ensure_postgres_running(pg_url)
    os.kill(start.pid, signal.SIGKILL)  # a 600 s lease: only the supervisor can rescue it

    def crashed() -> bool:
        return supervisor.poll() is not None or "Traceback" in chaos.log("supervisor").read_text()

    def done() -> bool:
        status = sql(pg_url, "SELECT status FROM onceq_jobs WHERE id = ?", (job.id,))
        return status == [("succeeded",)]

    wait_for(lambda: crashed() or done(), timeout=120)
    assert not crashed(), chaos.log("supervisor").read_text()[-2000:]
    first, second = sql(
        pg_url,
        "SELECT outcome FROM onceq_attempts WHERE job_id = ? ORDER BY token",
        (job.id,),
    )
    assert (first, second) == (("worker_died",), ("succeeded",))
    assert chaos.terminate(supervisor) == 0
