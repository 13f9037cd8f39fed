-- onceq schema v1 for SQLite. Times are REAL unix seconds (UTC).
-- Status is TEXT under a CHECK, so a wrong value (an enum object's repr, a typo)
-- is refused by the database itself.

CREATE TABLE onceq_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    definition  TEXT NOT NULL CHECK (json_valid(definition)),
    input       TEXT NOT NULL CHECK (json_valid(input)),
    status      TEXT NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    error       TEXT,
    created_at  REAL NOT NULL,
    finished_at REAL
);

CREATE TABLE onceq_steps (
    run_id      INTEGER NOT NULL REFERENCES onceq_runs (id) ON DELETE CASCADE,
    step        TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'waiting'
                CHECK (status IN ('waiting', 'running', 'succeeded', 'failed', 'cancelled', 'skipped')),
    -- the resolved with_items list (NULL for a plain step), fixed when the step starts
    items       TEXT CHECK (items IS NULL OR json_valid(items)),
    total       INTEGER,
    error       TEXT,
    started_at  REAL,
    finished_at REAL,
    PRIMARY KEY (run_id, step)
);

CREATE TABLE onceq_jobs (
    -- AUTOINCREMENT: ids are never reused, so (id, lease_token) names one lease forever
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    queue            TEXT NOT NULL,
    task             TEXT NOT NULL,
    args             TEXT NOT NULL CHECK (json_valid(args)),
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         INTEGER NOT NULL DEFAULT 0,
    run_at           REAL NOT NULL,
    key              TEXT UNIQUE,
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     INTEGER NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
    -- the fencing token: bumped by every claim, required by every write of the holder
    lease_token      INTEGER NOT NULL DEFAULT 0,
    lease_expires_at REAL,
    worker           TEXT,
    result           TEXT CHECK (result IS NULL OR json_valid(result)),
    last_error       TEXT,
    last_traceback   TEXT,
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    run_id           INTEGER REFERENCES onceq_runs (id) ON DELETE CASCADE,
    step             TEXT,
    item             INTEGER,
    -- a job holds a lease exactly when it is running
    CHECK ((status = 'running') = (lease_expires_at IS NOT NULL)),
    CHECK ((run_id IS NULL) = (step IS NULL) AND (run_id IS NULL) = (item IS NULL))
);

-- claim order: priority (high first), then run_at, then id
CREATE INDEX onceq_jobs_claim_queue ON onceq_jobs (queue, priority DESC, run_at, id)
    WHERE status = 'pending';
CREATE INDEX onceq_jobs_claim_any ON onceq_jobs (priority DESC, run_at, id)
    WHERE status = 'pending';
CREATE INDEX onceq_jobs_lease ON onceq_jobs (lease_expires_at) WHERE status = 'running';
-- the dispatch-once guard of workflows: one job per (run, step, item), ever
CREATE UNIQUE INDEX onceq_jobs_dispatch ON onceq_jobs (run_id, step, item)
    WHERE run_id IS NOT NULL;
-- what remains of a step, counted without reading its finished jobs
CREATE INDEX onceq_jobs_step_status ON onceq_jobs (run_id, step, status)
    WHERE run_id IS NOT NULL;

CREATE TABLE onceq_attempts (
    job_id     INTEGER NOT NULL REFERENCES onceq_jobs (id) ON DELETE CASCADE,
    token      INTEGER NOT NULL,
    attempt    INTEGER NOT NULL,
    worker     TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at   REAL,
    outcome    TEXT CHECK (outcome IS NULL OR outcome IN (
                   'succeeded', 'failed', 'retried', 'lease_expired', 'released',
                   'worker_died', 'cancelled')),
    error      TEXT,
    -- stale writes refused for this lease, e.g. 'heartbeat,complete'
    rejected   TEXT,
    PRIMARY KEY (job_id, token)
);
