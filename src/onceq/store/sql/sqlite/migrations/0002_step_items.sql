-- onceq schema v2 for SQLite: a fan-out's items one row each, with the job arguments of
-- each item resolved when the step starts. A dispatch then reads its own item's row
-- instead of decoding the whole list (and the run's input) on every completion: 7 ms
-- per completion at 500 items and 42 ms at 8,000 before. onceq_steps.items is still
-- written, for workers of v1 still running during an upgrade, but no longer read; steps
-- that were running during the upgrade have their lists moved here by the engine the
-- first time it needs one of their items.

-- onceq_runs and onceq_steps again, with their large values last (a run's `input`, a
-- step's `items`): SQLite keeps a row's columns in line, in order, so reading a column
-- after a large value walks that value's overflow pages — and every completion reads a
-- run's status and its steps' later columns. Rows are copied as they are. (The store
-- turns foreign keys off while it migrates, so dropping the old onceq_runs cascades to
-- nothing; PostgreSQL keeps large values out of line and needs none of this.)
CREATE TABLE onceq_runs_v2 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    error       TEXT,
    created_at  REAL NOT NULL,
    finished_at REAL,
    definition  TEXT NOT NULL CHECK (json_valid(definition)),
    input       TEXT NOT NULL CHECK (json_valid(input))
);
INSERT INTO onceq_runs_v2 (id, name, status, error, created_at, finished_at, definition, input)
SELECT id, name, status, error, created_at, finished_at, definition, input FROM onceq_runs;
DROP TABLE onceq_runs;
ALTER TABLE onceq_runs_v2 RENAME TO onceq_runs;

CREATE TABLE onceq_steps_v2 (
    run_id      INTEGER NOT NULL REFERENCES onceq_runs (id) ON DELETE CASCADE,
    step        TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'waiting'
                CHECK (status IN ('waiting', 'running', 'succeeded', 'failed', 'cancelled', 'skipped')),
    total       INTEGER,
    error       TEXT,
    started_at  REAL,
    finished_at REAL,
    -- the resolved with_items list (NULL for a plain step), fixed when the step starts
    items       TEXT CHECK (items IS NULL OR json_valid(items)),
    PRIMARY KEY (run_id, step)
);
INSERT INTO onceq_steps_v2 (run_id, step, status, total, error, started_at, finished_at, items)
SELECT run_id, step, status, total, error, started_at, finished_at, items FROM onceq_steps;
DROP TABLE onceq_steps;
ALTER TABLE onceq_steps_v2 RENAME TO onceq_steps;

CREATE TABLE onceq_step_items (
    run_id INTEGER NOT NULL,
    step   TEXT NOT NULL,
    item   INTEGER NOT NULL,
    -- the item's job arguments (JSON text), or why they could not be resolved
    args   TEXT CHECK (args IS NULL OR json_valid(args)),
    error  TEXT,
    CHECK ((args IS NULL) <> (error IS NULL)),
    PRIMARY KEY (run_id, step, item),
    FOREIGN KEY (run_id, step) REFERENCES onceq_steps (run_id, step) ON DELETE CASCADE
) WITHOUT ROWID;

-- Which claim took a job (a random number per claim call): after a claim whose answer
-- was lost, its worker adopts exactly the jobs that claim took, and nothing else.
ALTER TABLE onceq_jobs ADD COLUMN claim INTEGER;
