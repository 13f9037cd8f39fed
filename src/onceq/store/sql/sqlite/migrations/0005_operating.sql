-- Schema v5 for SQLite: what keeps a store running for months (see the PostgreSQL file
-- for what each table holds). Times are REAL unix seconds.

CREATE TABLE onceq_workers (
    name        TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    queues      TEXT CHECK (queues IS NULL OR json_valid(queues)),
    concurrency INTEGER NOT NULL,
    version     TEXT NOT NULL,
    started_at  REAL NOT NULL,
    last_seen   REAL NOT NULL,
    expires_at  REAL NOT NULL
);
