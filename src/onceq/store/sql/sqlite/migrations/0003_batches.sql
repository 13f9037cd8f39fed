-- Schema v3: code-task batches (see the PostgreSQL file for what each column holds).
-- Times are REAL unix seconds.

CREATE TABLE onceq_batches (
    name        TEXT PRIMARY KEY,
    repo        TEXT NOT NULL,
    base        TEXT NOT NULL,
    base_start  TEXT NOT NULL,
    definition  TEXT NOT NULL,
    run_id      INTEGER REFERENCES onceq_runs (id) ON DELETE SET NULL,
    merge_job   INTEGER,
    merge_token INTEGER,
    created_at  REAL NOT NULL
);

CREATE TABLE onceq_batch_tasks (
    batch      TEXT NOT NULL REFERENCES onceq_batches (name) ON DELETE CASCADE,
    number     TEXT NOT NULL,
    title      TEXT NOT NULL,
    batch_no   INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    status     TEXT NOT NULL DEFAULT 'pending'
               CHECK (status IN ('pending', 'in_progress', 'pr_created', 'reviewing', 'fixing',
                                 'approved', 'merged', 'failed')),
    rounds     INTEGER NOT NULL DEFAULT 0,
    branch     TEXT NOT NULL,
    worktree   TEXT,
    start      TEXT,
    verified   TEXT,
    feedback   TEXT,
    error      TEXT,
    merged_as  TEXT,
    started_at REAL,
    merged_at  REAL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (batch, number)
);

CREATE TABLE onceq_batch_slots (
    batch  TEXT NOT NULL REFERENCES onceq_batches (name) ON DELETE CASCADE,
    slot   INTEGER NOT NULL,
    path   TEXT NOT NULL,
    job_id INTEGER,
    token  INTEGER,
    PRIMARY KEY (batch, slot)
);
