"""Scenario 4, SQLite contention: 16 worker processes and 4 enqueuer processes on one
file. No `database is locked` reaches user code (no enqueue raises, no worker logs it),
idempotent keys hold across processes, and the file is intact at the end.

SQLite only: PostgreSQL has row locks and no single-writer file lock to contend for
(its claim race is covered by tests/store/test_claim_race.py and scenario 1).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from onceq.models import Lease, NewJob
from onceq.store import open_store
from onceq.store.sqlite import SqliteStore
from onceq.store.urls import parse_url
from tests.chaos.harness import Chaos, all_finished, soak, sql, wait_for

pytestmark = pytest.mark.chaos

WORKERS = 16
ENQUEUERS = 4


def test_sixteen_workers_and_four_enqueuers_share_one_sqlite_file(
    sqlite_url: str, new_chaos: Callable[[str], Chaos]
) -> None:
    chaos = new_chaos(sqlite_url)
    per_enqueuer = soak(150, 2500)
    workers = [chaos.worker(concurrency=2, lease=30)[0] for _ in range(WORKERS)]
    ids_file = chaos.tmp / "enqueued.txt"
    enqueuers = [chaos.enqueuer(f"enqueuer{i}", per_enqueuer, ids_file) for i in range(ENQUEUERS)]
    codes = [p.wait(300) for p in enqueuers]
    acked = _read_ids(ids_file)
    distinct = {job_id for job_id, _, _ in acked}
    wait_for(lambda: all_finished(sqlite_url, len(distinct)), timeout=240)
    exits = [chaos.terminate(w, timeout=120) for w in workers]

    logs = chaos.logs()
    locked = {name: text.count("locked") for name, text in logs.items() if "locked" in text}
    figures = chaos.check(expected_ids=distinct)
    ((integrity,),) = sql(sqlite_url, "PRAGMA integrity_check")
    chaos.report(
        figures,
        workers=WORKERS,
        enqueuers=ENQUEUERS,
        enqueued=len(acked),
        locked_in_logs=sum(locked.values()),
        integrity=integrity,
    )
    assert codes == [0] * ENQUEUERS, {n: t[-2000:] for n, t in logs.items() if "enqueuer" in n}
    assert len(acked) == ENQUEUERS * per_enqueuer  # every enqueue call returned an id
    assert locked == {}, locked
    for name, text in logs.items():
        assert "worker pass failed" not in text and "Traceback" not in text, (name, text[-2000:])
    assert exits == [0] * WORKERS
    assert integrity == "ok"
    assert sql(sqlite_url, "PRAGMA foreign_key_check") == []
    chaos.finished_ok(figures)
    assert figures.reruns == 0  # no crash, no lost lease: every job ran once
    # Idempotent keys across processes: every enqueuer got the same job for a key.
    by_key: dict[int, set[int]] = defaultdict(set)
    for job_id, _, n in acked:
        if n % 10 == 0:
            by_key[n].add(job_id)
    assert all(len(got) == 1 for got in by_key.values()), by_key
    assert len(distinct) == ENQUEUERS * per_enqueuer - (ENQUEUERS - 1) * len(by_key)


def _read_ids(path: Path) -> list[tuple[int, str, int]]:
    rows = []
    for line in path.read_text().splitlines():
        job_id, tag, n = line.split()
        rows.append((int(job_id), tag, int(n)))
    return rows


def test_a_claim_that_waited_for_the_write_lock_still_gets_its_whole_lease(
    sqlite_url: str,
) -> None:
    lease = 0.5
    store, rescuer = open_store(sqlite_url), open_store(sqlite_url)
    job = store.job_insert(NewJob(task="t", max_attempts=3))
    blocker = sqlite3.connect(parse_url(sqlite_url).target, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process's long write transaction
    claimed: list[Lease] = []
    claim = threading.Thread(
        target=lambda: claimed.extend(store.job_claim("B", None, 1, lease)), daemon=True
    )
    began = time.monotonic()
    claim.start()
    wait_for(lambda: time.monotonic() - began > 2 * lease)  # the condition is time itself
    blocker.execute("ROLLBACK")
    claim.join(30)
    blocker.close()
    try:
        assert [c.job_id for c in claimed] == [job.id]
        granted = store.job_get(job.id)
        assert granted.lease_expires_at is not None
        assert granted.lease_expires_at > datetime.now(UTC)  # a live lease, as granted
        assert rescuer.job_rescue() == []
    finally:
        store.close()
        rescuer.close()


def test_the_attempt_history_never_shows_two_leases_overlapping(sqlite_url: str) -> None:
    """A rescuer and a claimer interleaved as they can be: the claimer reads the clock
    while the rescuer holds the write lock, then waits for it."""
    ticks = iter(float(t) for t in range(1000, 2000))
    tick_lock = threading.Lock()

    def tick() -> float:
        with tick_lock:
            return next(ticks)

    rescuer_reads = 0
    rescuer_inside, claimer_read = threading.Event(), threading.Event()

    def rescuer_clock() -> float:
        nonlocal rescuer_reads
        rescuer_reads += 1
        if rescuer_reads == 2:  # inside its transaction: let the claimer read its clock
            rescuer_inside.set()
            claimer_read.wait(10)
        return tick()

    def claimer_clock() -> float:
        claimer_read.set()
        return tick()

    parsed = parse_url(sqlite_url)
    holder = SqliteStore(sqlite_url, parsed, clock=tick)
    rescuer = SqliteStore(sqlite_url, parsed, clock=rescuer_clock)
    claimer = SqliteStore(sqlite_url, parsed, clock=claimer_clock)
    try:
        holder.migrate()
        job = holder.job_insert(NewJob(task="t", max_attempts=3))
        holder.job_claim("A", None, 1, 0.5)  # A stalls past its lease
        rescued: list[object] = []
        rescue = threading.Thread(target=lambda: rescued.extend(rescuer.job_rescue()))
        rescue.start()
        rescuer_inside.wait(5)  # (a store that reads the clock once never stops here)
        claimed = claimer.job_claim("B", None, 1, 30.0)  # waits for the rescuer's commit
        rescue.join(30)
        assert len(rescued) == 1 and [c.job_id for c in claimed] == [job.id]
        first, second = holder.attempt_list(job.id)
        assert first.ended_at is not None
        assert first.ended_at <= second.started_at, (first.ended_at, second.started_at)
    finally:
        for store in (holder, rescuer, claimer):
            store.close()
