"""PostgreSQL specifics. The claim's plan: an ordered walk of the pending index that
stops after LIMIT rows, whatever the table statistics say (a queue table changes faster
than autovacuum analyzes it; with statistics that still counted a few pending rows, the
planner once sorted every pending job on each claim: 10 ms per claim at 10,000 pending).
And the pool: a connection that died while idle is replaced without losing the write."""

from __future__ import annotations

import re

import psycopg
import pytest

from onceq.models import NewJob
from onceq.store import open_store, queries
from onceq.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres


def _plan(store: PostgresStore, statement: str, params: dict[str, object], how: str = "") -> str:
    """The server's plan for one of the dialect's statements (nothing is run)."""
    with store.pool.connection() as conn:
        rows = conn.execute(f"EXPLAIN {how} {queries.load('postgres')[statement]}", params)
        return "\n".join(row[0] for row in rows.fetchall())


@pytest.mark.parametrize("finished", [0, 50_000])
@pytest.mark.parametrize("statement", ["job_claim", "job_claim_queue"])
def test_a_claim_walks_the_pending_index_even_with_stale_statistics(
    pg_url: str, statement: str, finished: int
) -> None:
    store = open_store(pg_url)
    assert isinstance(store, PostgresStore)
    try:
        # Statistics taken while nothing was pending (an empty queue, or finished jobs
        # only), then a backlog arrives: they are stale.
        with store.pool.connection() as conn:
            if finished:
                conn.execute(
                    "INSERT INTO onceq_jobs (queue, task, args, status, finished_at) "
                    "SELECT 'default', 't', '{}', 'succeeded', now() "
                    "FROM generate_series(1, %s)",
                    (finished,),
                )
            conn.execute("ANALYZE onceq_jobs")
        store.job_insert_many([NewJob(task="t", args={"i": i}) for i in range(5000)])
        params = {"limit": 64, "lease": 30.0, "worker": "w", "queue": "default", "claim": 1,
                  "leases": "[]", "results": "[]"}  # fmt: skip
        plan = _plan(store, statement, params)
        assert "Index Scan using onceq_jobs_claim_" in plan, plan
        assert "Sort" not in plan and "Bitmap" not in plan, plan
        # and the rows picked are updated through the primary key, not by a walk of
        # every pending job for each one (a nested loop's join filter)
        claimed = plan[plan.index("CTE claimed") :]
        assert "Index Scan using onceq_jobs_pkey" in claimed, plan
        assert "Join Filter" not in claimed, plan
    finally:
        store.close()


def test_a_claim_of_one_queue_walks_that_queue_only_behind_another_queue_s_backlog(
    pg_url: str,
) -> None:
    """20,000 pending jobs of another queue, enqueued earlier, and statistics taken while
    nothing was pending: a claim of queue `default` walked the any-queue index through
    all of them (27 ms a claim)."""
    store = open_store(pg_url)
    assert isinstance(store, PostgresStore)
    try:
        with store.pool.connection() as conn:
            conn.execute(
                "INSERT INTO onceq_jobs (queue, task, args, status, finished_at) "
                "SELECT 'default', 't', '{}', 'succeeded', now() FROM generate_series(1, 50000)"
            )
            conn.execute("ANALYZE onceq_jobs")
            conn.execute(
                "INSERT INTO onceq_jobs (queue, task, args) "
                "SELECT 'other', 't', '{}' FROM generate_series(1, 20000)"
            )
        store.job_insert_many([NewJob(task="t") for _ in range(100)])
        params = {"limit": 64, "lease": 30.0, "worker": "w", "queue": "default", "claim": 1,
                  "leases": "[]", "results": "[]"}  # fmt: skip
        plan = _plan(store, "job_claim_queue", params)
        picked = plan[plan.index("CTE picked") : plan.index("CTE claimed")]
        assert "Index Scan using onceq_jobs_claim_queue" in picked, plan
    finally:
        store.close()


def test_the_url_s_own_options_still_reach_the_server(pg_url: str) -> None:
    store = open_store(pg_url + "&options=-c%20statement_timeout%3D12345")
    assert isinstance(store, PostgresStore)
    try:
        with store.pool.connection() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == ("12345ms",)
            assert conn.execute("SHOW enable_bitmapscan").fetchone() == ("off",)
    finally:
        store.close()


def test_a_pooled_connection_that_died_while_idle_is_replaced_and_the_write_retried(
    pg_url: str,
) -> None:
    """After a server restart every idle pooled connection is dead, and only its BEGIN
    finds out. Nothing was sent, so the store takes another connection and the write
    happens once; it used to fail with StoreUnavailable."""
    store = open_store(pg_url)
    assert isinstance(store, PostgresStore)
    try:
        with store.pool.connection() as conn:
            victim = conn.info.backend_pid
        with psycopg.connect(pg_url.split("?")[0], autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (victim,))
        job = store.job_insert(NewJob(task="t", args={"n": 1}))
        assert [j.id for j in store.job_list()] == [job.id]  # written once
    finally:
        store.close()


def test_a_pooled_connection_that_died_while_idle_is_replaced_before_a_lone_statement(
    pg_url: str,
) -> None:
    """A claim (a statement sent without BEGIN, so it commits on its own) on a pooled
    connection the server closed while it was idle: the store sees the closed socket
    before sending anything and takes another connection, instead of reporting an
    unknown outcome."""
    store = open_store(pg_url)
    assert isinstance(store, PostgresStore)
    try:
        job = store.job_insert(NewJob(task="t", args={"n": 1}))
        with store.pool.connection() as conn:
            victim = conn.info.backend_pid
        with psycopg.connect(pg_url.split("?")[0], autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (victim,))
            for _ in range(100):  # the backend is gone once it leaves pg_stat_activity
                row = admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (victim,))
                if row.fetchone() is None:
                    break
        leases = store.job_claim("w", None, 5, 30.0)
        assert [x.job_id for x in leases] == [job.id]
    finally:
        store.close()


@pytest.mark.parametrize("statement", ["job_heartbeat", "job_give_up"])
def test_batch_writes_that_may_meet_another_lock_their_rows_in_id_order(
    pg_url: str, statement: str
) -> None:
    """A heartbeat and a completion over the same jobs, sent in different orders, locked
    them in different orders and deadlocked (PostgreSQL aborts one after a second; the
    store retried it). A heartbeat now skips locked rows, and locks the others in id
    order, as does a give-up."""
    store = open_store(pg_url)
    assert isinstance(store, PostgresStore)
    try:
        params = {"leases": "[[3, 1], [1, 1], [2, 1]]", "lease": 30.0, "error": "e"}
        plan = _plan(store, statement, params, "(VERBOSE)")
        lines = plan.splitlines()
        lock = next(i for i, line in enumerate(lines) if "LockRows" in line)
        below = "\n".join(lines[lock:])
        assert re.search(r"Sort Key: j(_\d+)?\.id\b", below), plan  # (aliases are numbered)
    finally:
        store.close()


def test_a_claim_made_after_its_transaction_waited_gets_a_lease_that_is_not_born_expired(
    pg_url: str,
) -> None:
    """now() is when a transaction began. A completion that waits for its run's lock and
    then claims in the same transaction used to stamp the new lease at that beginning:
    a lease already expired when it committed, and an attempt that started, in the
    history, before the one a rescue ended meanwhile. Leases start when they are made."""
    import threading
    import time

    from onceq import App, Workflow

    app = App(pg_url)
    app.task(name="item")(lambda n: n)
    flow = Workflow("w", input=["items"]).step(
        "fan", "item", with_items="$input.items", args={"n": "$item"}, concurrency=1
    )
    app.run_workflow(flow, {"items": [1, 2]})
    (item,) = app.store.job_claim("w", None, 1, 30.0)
    plain = app.store.job_insert(NewJob(task="item", args={"n": 3}, priority=1))
    lease = 1.0
    locked = threading.Event()
    released: list[object] = []

    def hold_the_run() -> None:
        schema = pg_url.split("schema=")[1]
        with psycopg.connect(pg_url.split("?")[0], options=f"-c search_path={schema}") as conn:
            conn.execute("SELECT id FROM onceq_runs FOR UPDATE")
            locked.set()
            time.sleep(lease * 1.5)  # the completion below waits this long for the run
            released.append(conn.execute("SELECT clock_timestamp()").fetchone()[0])  # type: ignore[index]

    holder = threading.Thread(target=hold_the_run)
    holder.start()
    assert locked.wait(10)
    written, claimed = app.store.job_complete_and_claim([(item, "1")], "w", None, 1, lease)
    holder.join(10)
    assert written == {(item.job_id, item.token)}
    assert [x.job_id for x in claimed] == [plain.id]
    job = app.store.job_get(plain.id)
    assert job.started_at is not None and job.lease_expires_at is not None
    assert job.started_at >= released[0]  # type: ignore[operator]
    assert (job.lease_expires_at - job.started_at).total_seconds() == pytest.approx(lease, abs=0.01)
    app.close()


def test_a_heartbeat_does_not_wait_behind_a_transaction_holding_one_of_its_jobs(
    pg_url: str,
) -> None:
    """A worker's completion can hold its job's row for a while (it may start a large
    fan-out). The same worker's heartbeat used to wait behind it, and every other lease
    of that worker went unrenewed meanwhile. It now extends the others at once, and
    reports the locked one busy: neither extended nor refused."""
    import threading

    store = open_store(pg_url)
    assert isinstance(store, PostgresStore)
    store.job_insert_many([NewJob(task="t") for _ in range(2)])
    slow, other = store.job_claim("w", None, 2, 30.0)
    locked, answered = threading.Event(), threading.Event()

    def hold(job_id: int) -> None:  # as the worker's own completion of `slow` would
        schema = pg_url.split("schema=")[1]
        with psycopg.connect(pg_url.split("?")[0], options=f"-c search_path={schema}") as conn:
            conn.execute("SELECT id FROM onceq_jobs WHERE id = %s FOR UPDATE", (job_id,))
            locked.set()
            answered.wait(30)  # held until the heartbeat has answered (or 30 s)

    holder = threading.Thread(target=hold, args=(slow.job_id,))
    holder.start()
    assert locked.wait(10)
    try:
        kept = store.job_heartbeat([slow, other], 30.0)
        still_locked = holder.is_alive()
    finally:
        answered.set()
        holder.join(10)
    assert still_locked  # it answered while the row was still locked
    assert kept == {(other.job_id, other.token)}
    assert kept.busy == {(slow.job_id, slow.token)}
    assert [a.rejected for a in store.attempt_list(slow.job_id)] == [None]
    store.close()
