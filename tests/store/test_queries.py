"""The SQL files: both dialects name the same statements, and migrations are in order."""

from __future__ import annotations

from onceq.store import queries

# Statements only one dialect needs, and why.
SQLITE_ONLY = {
    "attempt_end",  # PostgreSQL's statements write ending attempts' records in CTEs
    "attempt_outcomes",  # likewise for writes sent again after a lost answer
    "job_pending_text",  # text that is not UTF-8: PostgreSQL refuses it on the way in
    "job_fail_unreadable",
    "job_claimable",  # a read before BEGIN IMMEDIATE; PostgreSQL claims with SKIP LOCKED
    "wal_checkpoint_passive",  # SQLite's write-ahead log; PostgreSQL keeps its own
    "wal_checkpoint_truncate",
    "slot_take",  # PostgreSQL's job_claim_keyed takes the slots in a CTE
}
POSTGRES_ONLY = {
    "job_insert_many",  # one round trip per batch; SQLite loops in-process
    "job_ids_by_key",  # reads back keyed rows of a batch
    "job_notify",  # LISTEN/NOTIFY wake-ups
    "job_wait_announce",  # app.wait() by LISTEN/NOTIFY; SQLite's waiters poll
    "job_done_notify",
    "search_path_swap",  # app.using(conn): onceq's schema inside the caller's transaction
    "backend_identity",  # a lost COMMIT's answer: find its backend again, and end it
    "backend_settle",
    "session_limit_statements",  # SQLite has no statement timeout
}


def test_both_dialects_define_the_same_statements() -> None:
    sqlite, postgres = set(queries.load("sqlite")), set(queries.load("postgres"))
    assert sqlite - postgres == SQLITE_ONLY
    assert postgres - sqlite == POSTGRES_ONLY


def test_migrations_are_numbered_alike() -> None:
    assert [v for v, _ in queries.migrations("sqlite")] == [
        v for v, _ in queries.migrations("postgres")
    ]


def test_parse_rejects_a_name_defined_twice() -> None:
    import pytest

    with pytest.raises(ValueError, match="defined twice"):
        queries.parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")
