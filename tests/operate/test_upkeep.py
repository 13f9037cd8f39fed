"""SQLite upkeep: WAL checkpoints (PASSIVE, TRUNCATE when idle), journal_size_limit, and
a warning while a long-open reader starves the checkpoints."""

from __future__ import annotations

import logging
import os
import sqlite3

import pytest

from onceq.models import NewJob
from onceq.schedule.upkeep import NEVER, Checkpointer
from onceq.store import Store, open_store
from onceq.store.sqlite import JOURNAL_SIZE_LIMIT, SqliteStore


def test_a_long_reader_starving_checkpoints_is_warned_about_and_the_wal_shrinks_after(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(sqlite_url)
    assert isinstance(store, SqliteStore)
    wal = f"{store.path}-wal"
    limit = store._connection().execute("PRAGMA journal_size_limit").fetchone()[0]
    assert limit == JOURNAL_SIZE_LIMIT
    reader = sqlite3.connect(store.path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM onceq_jobs").fetchone()  # holds its snapshot
    for _ in range(10):
        store.job_insert_many([NewJob(task="t", args={"pad": "x" * 4000}) for _ in range(100)])
    idle = False
    upkeep = Checkpointer(store, lambda: idle, every=1, starved_after=5, warn_bytes=2**20)
    with caplog.at_level(logging.INFO, logger="onceq.store"):
        assert upkeep.run_once(100.0) == 101.0
        assert upkeep.run_once(103.0) == 104.0  # stuck for 3 s: not yet
        upkeep.run_once(106.0)  # stuck for 6 s, and the WAL is past 1 MiB
        upkeep.run_once(107.0)  # said once, not at every turn
        starved = [r.getMessage() for r in caplog.records if "starved" in r.getMessage()]
        assert len(starved) == 1 and "read transaction open" in starved[0]
        assert "stuck_for=6s" in starved[0] and os.path.getsize(wal) > 4 * 2**20
        reader.execute("COMMIT")  # the reader lets go
        idle = True
        upkeep.run_once(108.0)  # idle: TRUNCATE
    assert os.path.getsize(wal) == 0
    assert any("checkpoint_resumed" in r.getMessage() for r in caplog.records)
    assert store.job_counts() == [("default", "pending", 1000)]  # nothing lost on the way
    reader.close()
    store.close()


def test_a_busy_worker_checkpoints_without_waiting_and_postgres_needs_none(store: Store) -> None:
    upkeep = Checkpointer(store, lambda: False, every=1)
    store.job_insert_many([NewJob(task="t") for _ in range(50)])
    if store.dialect == "postgres":
        assert store.wal_checkpoint() is None and upkeep.run_once(0.0) == NEVER
        return
    done = store.wal_checkpoint("PASSIVE")
    assert done is not None and done.complete and done.mode == "PASSIVE"
    assert upkeep.run_once(0.0) == 1.0 and upkeep.stuck_since is None
    with pytest.raises(ValueError, match="PASSIVE or TRUNCATE"):
        store.wal_checkpoint("FULL")
