"""Small test helpers shared by the suites."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from onceq import App

T = TypeVar("T")


def eventually(fn: Callable[[], T | None], timeout: float = 10.0, every: float = 0.01) -> T:
    """Call `fn` until it returns something truthy; fail after `timeout` seconds.

    Used where the condition is time itself (a lease that must expire): the test waits
    for the condition, never for a fixed sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s")
        time.sleep(every)


def sql_rows(url: str, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run portable SQL straight against a store's database (bypassing onceq's code).

    Use `?` placeholders; they are translated for PostgreSQL.
    """
    from onceq.store.urls import parse_url

    parsed = parse_url(url)
    if parsed.dialect == "sqlite":
        import sqlite3

        conn = sqlite3.connect(parsed.target, timeout=30, isolation_level=None)
        try:
            return conn.execute(query, params).fetchall()
        finally:
            conn.close()
    import psycopg

    options = f"-c search_path={parsed.options['schema']}" if "schema" in parsed.options else ""
    with psycopg.connect(parsed.target, autocommit=True, options=options) as pg:
        cur = pg.execute(query.replace("?", "%s").encode(), params)
        return cur.fetchall() if cur.description else []


# Every attempt of every job, as the store's attempt_list shows one job's: the records of
# those that ended, and the one running now, which lives on its job row until it ends.
ATTEMPT_HISTORY = (
    "SELECT job_id, token, attempt, worker, started_at, ended_at, outcome, rejected, error "
    "FROM onceq_attempts "
    "UNION ALL "
    "SELECT id, lease_token, attempts, worker, started_at, NULL, NULL, NULL, NULL "
    "FROM onceq_jobs AS j WHERE status = 'running' AND NOT EXISTS ("
    "SELECT 1 FROM onceq_attempts AS a WHERE a.job_id = j.id AND a.token = j.lease_token) "
    "ORDER BY 1, 2"
)


def assert_no_overlapping_leases(url: str) -> int:
    """Check the attempt history: per job, no two attempts were live at once.

    An attempt is live from its start to its end; one still open counts as live until
    now. Returns the number of attempts checked.
    """
    rows = sql_rows(url, ATTEMPT_HISTORY)
    last: dict[object, tuple[object, object]] = {}
    for job_id, token, _, _, started, ended, _, _, _ in rows:
        if job_id in last:
            prev_token, prev_end = last[job_id]
            assert prev_end is not None, (
                f"job {job_id}: lease {prev_token} never ended but lease {token} started"
            )
            assert prev_end <= started, f"job {job_id}: leases {prev_token} and {token} overlap"  # type: ignore[operator]
        last[job_id] = (token, ended)
    return len(rows)


def app_with_tasks(url: str, source: App) -> App:
    """A fresh App on `url` with the tasks of `source` registered under the same names
    and options (the module's own App is for worker processes, which find the store in
    ONCEQ_URL)."""
    app = App(url)
    for t in source.tasks.values():
        app.task(
            name=t.name,
            queue=t.queue,
            priority=t.priority,
            retries=t.retry.retries,
            retry_backoff=t.retry.backoff,
            retry_on=t.retry.retry_on,
            timeout=t.timeout,
            subprocess=t.subprocess,
        )(t.fn)
    return app
