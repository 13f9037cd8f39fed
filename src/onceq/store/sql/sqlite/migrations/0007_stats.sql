-- Schema v7 for SQLite: what the dashboard and /metrics count, kept without a write per
-- job on the workers' path (see onceq/store/stats.py and the PostgreSQL file).

-- Totals per queue and task: the folded history (enqueued, succeeded, failed, retried,
-- re-runs, duration histograms…), the gauge corrections (reopened_*, pruned_*) and rare
-- events counted where they happen (lease_lost, rescued, stale_*, dispatch_suppressed).
-- `n` is REAL: histogram sums are seconds.
CREATE TABLE onceq_stats (
    queue TEXT NOT NULL,
    task  TEXT NOT NULL,
    name  TEXT NOT NULL,
    n     REAL NOT NULL,
    PRIMARY KEY (queue, task, name)
) WITHOUT ROWID;

-- How far the history is folded: every job with id <= folded_to is counted in
-- onceq_stats, or listed in onceq_stats_open. `version` moves when an operator retry
-- reopens a finished job, so a fold running at the same time starts over.
CREATE TABLE onceq_stats_mark (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    folded_to INTEGER NOT NULL,
    version   INTEGER NOT NULL DEFAULT 0
);
INSERT INTO onceq_stats_mark (id, folded_to) VALUES (1, 0);

-- Jobs at or below the mark whose outcome is not counted yet: not finished when their
-- part was folded, or finished and sent back to pending by an operator. Attempts up to
-- `after_token` are counted already. (after_token -1 and gap_*: PostgreSQL's ids that
-- had no row yet when their part was folded; SQLite never has any.)
CREATE TABLE onceq_stats_open (
    job_id      INTEGER PRIMARY KEY,
    after_token INTEGER NOT NULL,
    gap_seen    REAL,
    gap_xmax    INTEGER
);

-- Jobs finished per minute (unix minutes) and status, for the last hours' chart.
CREATE TABLE onceq_stats_minutes (
    minute INTEGER NOT NULL,
    status TEXT NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (minute, status)
) WITHOUT ROWID;

-- The dashboard's failed and cancelled jobs, newest first, without walking the others.
-- Partial: a job that succeeds never enters it, so completions pay nothing for it.
CREATE INDEX onceq_jobs_failed ON onceq_jobs (status, id) WHERE status IN ('failed', 'cancelled');
