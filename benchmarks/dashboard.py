"""The dashboard's pages and /metrics on a store holding a million finished jobs.

For each backend: fill a store in bulk (SQLite: a recursive CTE; PostgreSQL:
generate_series), one attempt per job (2% failed, 1% retried once first), over the last
day, four queues and ten tasks; fold its history once (the first read after an upgrade
does this, in parts); then time each page and /metrics, in process through the ASGI app
(no network), the median of several requests, with the totals read afresh every time.
Last, 20,000 more finished jobs arrive (what happens between two scrapes on a busy
store) and /metrics is timed again, folding them.

    python benchmarks/dashboard.py [--jobs 1000000] [--backends sqlite,postgres]
                                   [--repeat 5] [--json]

PostgreSQL: ONCEQ_BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test);
each run uses a fresh schema, dropped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from typing import Any

import psycopg
from starlette.testclient import TestClient

from onceq.store import Store, open_store
from onceq.web import Options, create_app

PG_URL = os.environ.get("ONCEQ_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

SQLITE_FILL = """
WITH RECURSIVE n(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM n WHERE i < :last)
INSERT INTO onceq_jobs (queue, task, args, status, run_at, attempts, max_attempts,
                        lease_token, worker, result, created_at, started_at, finished_at,
                        last_error)
SELECT 'q' || (i % 4), 'app.tasks.task' || (i % 10),
       '{"image_id": ' || i || ', "width": 800, "name": "cat-' || i || '.png"}',
       CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'succeeded' END,
       :now - 86400 + i * :step, CASE WHEN i % 100 = 1 THEN 2 ELSE 1 END, 3,
       CASE WHEN i % 100 = 1 THEN 2 ELSE 1 END, 'host-' || (i % 8) || ':1234:w',
       CASE WHEN i % 50 = 0 THEN NULL ELSE '{"ok": true}' END,
       :now - 86400 + i * :step, :now - 86400 + i * :step + 0.004,
       :now - 86400 + i * :step + 0.02 + (i % 7) * 0.05,
       CASE WHEN i % 50 = 0 THEN 'ValueError: bad image ' || i END
FROM n
"""
SQLITE_ATTEMPTS = """
INSERT INTO onceq_attempts (job_id, token, attempt, worker, started_at, ended_at, outcome,
                            error)
SELECT id, 1, 1, worker, started_at - 1, started_at - 0.5, 'retried', 'timeout'
FROM onceq_jobs WHERE id >= :first AND id <= :last AND lease_token = 2
UNION ALL
SELECT id, lease_token, attempts, worker, started_at, finished_at,
       CASE status WHEN 'failed' THEN 'failed' ELSE 'succeeded' END, last_error
FROM onceq_jobs WHERE id >= :first AND id <= :last
"""
PG_FILL = """
INSERT INTO onceq_jobs (queue, task, args, status, run_at, attempts, max_attempts,
                        lease_token, worker, result, created_at, started_at, finished_at,
                        last_error)
SELECT 'q' || mod(i, 4), 'app.tasks.task' || mod(i, 10),
       json_build_object('image_id', i, 'width', 800, 'name', 'cat-' || i || '.png'),
       CASE WHEN mod(i, 50) = 0 THEN 'failed' ELSE 'succeeded' END,
       t, CASE WHEN mod(i, 100) = 1 THEN 2 ELSE 1 END, 3,
       CASE WHEN mod(i, 100) = 1 THEN 2 ELSE 1 END,
       'host-' || mod(i, 8) || ':1234:w',
       CASE WHEN mod(i, 50) = 0 THEN NULL ELSE '{"ok": true}'::json END,
       t, t + interval '4 ms', t + interval '20 ms' + mod(i, 7) * interval '50 ms',
       CASE WHEN mod(i, 50) = 0 THEN 'ValueError: bad image ' || i END
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i,
     LATERAL (SELECT now() - interval '1 day' + i * make_interval(secs => %(step)s)) AS x(t)
"""
PG_ATTEMPTS = """
INSERT INTO onceq_attempts (job_id, token, attempt, worker, started_at, ended_at, outcome,
                            error)
SELECT id, 1, 1, worker, started_at - interval '1 s', started_at - interval '0.5 s',
       'retried', 'timeout'
FROM onceq_jobs WHERE id BETWEEN %(first)s AND %(last)s AND lease_token = 2
UNION ALL
SELECT id, lease_token, attempts, worker, started_at, finished_at,
       CASE status WHEN 'failed' THEN 'failed' ELSE 'succeeded' END, last_error
FROM onceq_jobs WHERE id BETWEEN %(first)s AND %(last)s
"""


def fill(url: str, first: int, last: int, jobs: int) -> float:
    """Insert finished jobs `first`..`last` (ids in order) in bulk; seconds it took."""
    start = time.perf_counter()
    step = 86000 / max(jobs, 1)
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN")
        params = {"first": first, "last": last, "now": time.time(), "step": step}
        conn.execute(SQLITE_FILL, params)
        conn.execute(SQLITE_ATTEMPTS, {"first": first, "last": last})
        conn.execute("COMMIT")
        conn.close()
    else:
        schema = url.rsplit("schema=", 1)[1]
        with psycopg.connect(PG_URL, autocommit=True, options=f"-c search_path={schema}") as pg:
            with pg.transaction():
                pg.execute(PG_FILL, {"first": first, "last": last, "step": step})
                pg.execute(PG_ATTEMPTS, {"first": first, "last": last})
            pg.execute("VACUUM ANALYZE onceq_jobs")
            pg.execute("VACUUM ANALYZE onceq_attempts")
    return time.perf_counter() - start


def settle(url: str) -> None:
    """Write out what the bulk load left in the log, so that what follows measures the
    steady state, not its aftermath (a checkpoint: PostgreSQL needs a superuser)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        return
    with psycopg.connect(PG_URL, autocommit=True) as pg, contextlib.suppress(psycopg.Error):
        pg.execute("CHECKPOINT")


def timed(client: TestClient, path: str, repeat: int) -> float:
    """Median milliseconds of `repeat` requests (after one to warm up)."""
    assert client.get(path).status_code == 200, path
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        answer = client.get(path)
        samples.append((time.perf_counter() - start) * 1000)
        assert answer.status_code == 200, path
    return statistics.median(samples)


def run(backend: str, jobs: int, repeat: int) -> dict[str, Any]:
    folder = tempfile.mkdtemp(prefix="onceq-bench-dashboard-")
    schema = f"onceq_bench_{uuid.uuid4().hex[:8]}"
    url = (f"sqlite:///{folder}/onceq.db" if backend == "sqlite"
           else f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema={schema}")  # fmt: skip
    store: Store = open_store(url)
    try:
        out: dict[str, Any] = {"backend": backend, "jobs": jobs}
        out["fill_s"] = round(fill(url, 1, jobs, jobs), 1)
        start = time.perf_counter()
        while store.stats_fold(limit=20000):
            pass
        out["first_fold_s"] = round(time.perf_counter() - start, 1)
        settle(url)
        deep = jobs - 50 * 10000  # page 10,000 of the newest-first list
        pages = {
            "overview": "/",
            "jobs": "/jobs",
            "jobs, page 10,000 (keyset)": f"/jobs?before={max(deep, 2)}",
            "jobs, failed": "/jobs?status=failed",
            "jobs, one task": "/jobs?task=app.tasks.task3",
            "jobs, last hour": "/jobs?since=" + time.strftime(
                "%Y-%m-%dT%H:%M", time.gmtime(time.time() - 3600)),
            "jobs, text in arguments": "/jobs?text=cat-999999.png",
            "job": f"/jobs/{jobs // 2 + 1}",
            "bulk retry count (failed)": "/jobs/bulk?action=retry&status=failed",
            "runs": "/runs",
            "workers": "/workers",
            "/metrics": "/metrics",
        }  # fmt: skip
        app = create_app(store, Options(live=False, stats_ttl=0))
        with TestClient(app, base_url="http://127.0.0.1") as client:
            out["ms"] = {name: round(timed(client, path, repeat), 1)
                         for name, path in pages.items()}  # fmt: skip
            more = 20000
            out["fill_more_s"] = round(fill(url, jobs + 1, jobs + more, jobs), 1)
            start = time.perf_counter()
            assert client.get("/metrics").status_code == 200
            out["ms"][f"/metrics, {more:,} new jobs to fold"] = round(
                (time.perf_counter() - start) * 1000, 1
            )
        return out
    finally:
        store.close()
        if backend == "postgres":
            with psycopg.connect(PG_URL, autocommit=True) as pg:
                pg.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [run(b, args.jobs, args.repeat) for b in args.backends.split(",")]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(f"\n{r['backend']}: {r['jobs']:,} finished jobs (filled in {r['fill_s']} s; "
              f"first fold of the history {r['first_fold_s']} s)")  # fmt: skip
        for name, ms in r["ms"].items():
            print(f"  {name:<38} {ms:>9.1f} ms")


if __name__ == "__main__":
    main()
