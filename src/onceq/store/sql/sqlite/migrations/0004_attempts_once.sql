-- Schema v4: one row version per attempt (see the PostgreSQL file), and the `stopped`
-- outcome. An attempt's record in onceq_attempts is written once, when the attempt ends;
-- while it runs, the job row holds it, and a job row keeps `worker`, its last holder.
-- (SQLite rewrites an index entry only when its column changes, so the key index stays
-- as it is.)

-- onceq_attempts again, for its CHECK: `stopped`, an attempt whose worker was stopped by
-- a shutdown while its handler ran, given back. Rows are copied as they are; the store
-- turns foreign keys off while it migrates.
CREATE TABLE onceq_attempts_v4 (
    job_id     INTEGER NOT NULL REFERENCES onceq_jobs (id) ON DELETE CASCADE,
    token      INTEGER NOT NULL,
    attempt    INTEGER NOT NULL,
    worker     TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at   REAL,
    outcome    TEXT CHECK (outcome IS NULL OR outcome IN (
                   'succeeded', 'failed', 'retried', 'lease_expired', 'released',
                   'worker_died', 'cancelled', 'stopped')),
    error      TEXT,
    -- stale writes refused for this lease, e.g. 'heartbeat,complete'
    rejected   TEXT,
    PRIMARY KEY (job_id, token)
);
INSERT INTO onceq_attempts_v4 SELECT job_id, token, attempt, worker, started_at, ended_at,
                                     outcome, error, rejected FROM onceq_attempts;
DROP TABLE onceq_attempts;
ALTER TABLE onceq_attempts_v4 RENAME TO onceq_attempts;
