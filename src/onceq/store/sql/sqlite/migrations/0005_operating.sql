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

CREATE TABLE onceq_maintenance (
    name             TEXT PRIMARY KEY,
    holder           TEXT,
    lease_expires_at REAL,
    due_at           REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL
);

CREATE INDEX onceq_jobs_finished ON onceq_jobs (finished_at)
    WHERE run_id IS NULL AND finished_at IS NOT NULL;
CREATE INDEX onceq_runs_finished ON onceq_runs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE onceq_periodic (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL CHECK (json_valid(spec)),
    last_tick  REAL,
    last_job   INTEGER,
    created_at REAL NOT NULL,
    seen_at    REAL NOT NULL
);

ALTER TABLE onceq_jobs ADD COLUMN concurrency_key TEXT;
ALTER TABLE onceq_jobs ADD COLUMN concurrency_limit INTEGER
    CHECK (concurrency_limit IS NULL OR concurrency_limit >= 1);
CREATE INDEX onceq_jobs_claim_keyed ON onceq_jobs (priority DESC, run_at, id)
    WHERE status = 'pending' AND concurrency_key IS NOT NULL;

CREATE TABLE onceq_concurrency_slots (
    key    TEXT NOT NULL,
    slot   INTEGER NOT NULL,
    job_id INTEGER NOT NULL,
    token  INTEGER NOT NULL,
    PRIMARY KEY (key, slot)
) WITHOUT ROWID;
