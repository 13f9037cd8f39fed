"""Retention under load: a worker fleet's throughput on a store holding a backlog of
old finished jobs that its workers prune as they go, beside the same fleet on a store
without the backlog, in one run; with the database file's and the WAL's size after
every round.

Each scenario: a fresh store (SQLite file, or a PostgreSQL schema); for "backlog",
--backlog finished jobs (one attempt each) written straight into it, finished two
days ago; then 2 worker processes (concurrency --concurrency each, retention
--retention seconds, so the fleet prunes its own old jobs too: the steady state of a
store that runs for months), and --rounds rounds of --jobs no-op jobs, each enqueued
at once and drained. Throughput is a round's jobs over its wall time.

    python benchmarks/retention.py [--backends sqlite,postgres] [--backlog 1000000]
        [--jobs 10000] [--rounds 6] [--concurrency 16] [--retention 60] [--stale-stats]
        [--json]

PostgreSQL: ONCEQ_BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test),
each scenario in a fresh schema dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the worker processes import benchmarks.retention_app

from onceq.models import NewJob  # noqa: E402
from onceq.store import Store, open_store  # noqa: E402
from onceq.store.urls import parse_url  # noqa: E402
from onceq.tools.bench import isolated  # noqa: E402
from onceq.tools.fleet import Fleet  # noqa: E402

PG_URL = os.environ.get("ONCEQ_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
AGE = 2 * 86400.0  # how old the backlog is

SQLITE_BACKLOG = """
WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
INSERT INTO onceq_jobs (queue, task, args, status, run_at, attempts, max_attempts,
                        lease_token, worker, result, created_at, started_at, finished_at)
SELECT 'default', 'bench.noop', '{}', 'succeeded', ?, 1, 1, 1, 'backlog', 'null', ?, ?, ?
FROM n
"""
SQLITE_ATTEMPTS = """
INSERT INTO onceq_attempts (job_id, token, attempt, worker, started_at, ended_at, outcome)
SELECT id, 1, 1, 'backlog', created_at, finished_at, 'succeeded' FROM onceq_jobs
WHERE worker = 'backlog'
"""
PG_BACKLOG = """
INSERT INTO onceq_jobs (queue, task, args, status, run_at, attempts, max_attempts,
                        lease_token, worker, result, created_at, started_at, finished_at)
SELECT 'default', 'bench.noop', '{}', 'succeeded', t, 1, 1, 1, 'backlog', 'null', t, t, t
FROM generate_series(1, %s), (SELECT now() - make_interval(secs => %s) AS t) AS old
"""
STATS_PENDING = """
INSERT INTO onceq_jobs (queue, task, args)
SELECT 'default', 'bench.stats', '{}' FROM generate_series(1, 20000)
"""
PG_ATTEMPTS = """
INSERT INTO onceq_attempts (job_id, token, attempt, worker, started_at, ended_at, outcome)
SELECT id, 1, 1, 'backlog', created_at, finished_at, 'succeeded' FROM onceq_jobs
WHERE worker = 'backlog'
"""


def sql(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    parsed = parse_url(url)
    if parsed.dialect == "sqlite":
        import sqlite3

        conn = sqlite3.connect(parsed.target, isolation_level=None, timeout=60)
        try:
            return conn.execute(query, params).fetchall()
        finally:
            conn.close()
    import psycopg

    options = f"-c search_path={parsed.options['schema']}"
    with psycopg.connect(parsed.target, autocommit=True, options=options) as conn:
        cur = conn.execute(query.encode(), params)
        return cur.fetchall() if cur.description else []


def make_backlog(url: str, count: int, stale_stats: bool) -> float:
    """Write `count` old finished jobs with an attempt each; seconds it took."""
    started = time.perf_counter()
    if parse_url(url).dialect == "sqlite":
        when = time.time() - AGE
        sql(url, SQLITE_BACKLOG, (count, when, when, when, when))
        sql(url, SQLITE_ATTEMPTS)
    else:
        sql(url, PG_BACKLOG, (count, AGE))
        sql(url, PG_ATTEMPTS)
        # What writing the backlog left to do (vacuum, analyze, flushing its pages) is
        # done now, not during the rounds: they measure the pruning, not the writing.
        # The planner's statistics are taken with a round's worth of pending jobs in the
        # table, unless --stale-stats: then with none, as autovacuum may well take them
        # on a store of finished jobs: the claim's UPDATE is then planned as a walk of
        # every pending job (EXPLAIN ANALYZE: 20,000 rows removed by its join filter).
        if not stale_stats:
            sql(url, STATS_PENDING)
        sql(url, "VACUUM ANALYZE onceq_jobs")
        sql(url, "DELETE FROM onceq_jobs WHERE task = 'bench.stats'")
        sql(url, "VACUUM ANALYZE onceq_attempts")
        sql(url, "CHECKPOINT")
    return time.perf_counter() - started


def sizes(url: str) -> tuple[float, float]:
    """The database's size and its WAL's, in MB (PostgreSQL: the tables' and indexes'
    size; its WAL is the server's, shared)."""
    parsed = parse_url(url)
    if parsed.dialect == "sqlite":
        db, wal = Path(parsed.target), Path(f"{parsed.target}-wal")
        return db.stat().st_size / 2**20, (wal.stat().st_size if wal.exists() else 0) / 2**20
    schema = parsed.options["schema"]
    ((total,),) = sql(url, "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                           "JOIN pg_namespace n ON n.oid = c.relnamespace "
                           "WHERE n.nspname = %s AND c.relkind = 'r'", (schema,))  # fmt: skip
    return float(total or 0) / 2**20, 0.0


def old_left(url: str) -> int:
    ((n,),) = sql(url, "SELECT count(*) FROM onceq_jobs WHERE worker = 'backlog'")
    return int(n)


def drain(store: Store, jobs: int) -> float:
    """Enqueue a round at once and wait until it is done; its jobs per second."""
    started = time.perf_counter()
    for offset in range(0, jobs, 5_000):
        store.job_insert_many([NewJob(task="bench.noop")] * min(5_000, jobs - offset))
    while store.jobs_active(["default"]):
        time.sleep(0.02)
    return jobs / (time.perf_counter() - started)


def scenario(backend: str, backlog: int, args: argparse.Namespace) -> dict[str, Any]:
    with isolated(backend, PG_URL) as url:
        store = open_store(url)
        took = make_backlog(url, backlog, args.stale_stats) if backlog else 0.0
        print(f"{backend}: {backlog:,} old jobs written in {took:.0f}s; "
              f"{sizes(url)[0]:.0f} MB", flush=True)  # fmt: skip
        folder = Path(tempfile.mkdtemp(prefix="onceq-retention-"))
        fleet = Fleet("benchmarks.retention_app:app", url, folder,
                      concurrency=args.concurrency, lease=30.0,
                      env={"ONCEQ_BENCH_RETENTION": str(args.retention)})  # fmt: skip
        rounds = []
        try:
            fleet.start(2)
            for r in range(args.rounds):
                rate = drain(store, args.jobs)
                db, wal = sizes(url)
                left = old_left(url) if backlog else 0
                rounds.append({"round": r + 1, "jobs_per_s": rate, "db_mb": db, "wal_mb": wal,
                               "backlog_left": left})  # fmt: skip
                print(f"  {backend} {'backlog' if backlog else 'no backlog'} round {r + 1}: "
                      f"{rate:,.0f} jobs/s, db {db:.1f} MB, wal {wal:.1f} MB, "
                      f"backlog left {left:,}", flush=True)  # fmt: skip
        finally:
            fleet.stop()
            store.close()
        median = statistics.median(x["jobs_per_s"] for x in rounds)
        return {"backend": backend, "backlog": backlog, "rounds": rounds,
                "median_jobs_per_s": median}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--retention", type=float, default=60.0)
    parser.add_argument("--stale-stats", action="store_true",
                        help="PostgreSQL: analyze the backlog with no job pending")  # fmt: skip
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    for backend in args.backends.split(","):
        without = scenario(backend, 0, args)
        with_backlog = scenario(backend, args.backlog, args)
        ratio = with_backlog["median_jobs_per_s"] / without["median_jobs_per_s"]
        results += [without, with_backlog]
        print(f"{backend}: median {without['median_jobs_per_s']:,.0f} jobs/s without the "
              f"backlog, {with_backlog['median_jobs_per_s']:,.0f} with {args.backlog:,} old "
              f"jobs being pruned ({ratio:.0%})", flush=True)  # fmt: skip
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
