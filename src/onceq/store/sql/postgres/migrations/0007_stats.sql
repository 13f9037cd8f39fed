-- Schema v7 for PostgreSQL: what the dashboard and /metrics count, kept without a write
-- per job on the workers' path (see onceq/store/stats.py).

-- Totals per queue and task: the folded history (enqueued, succeeded, failed, retried,
-- re-runs, duration histograms…), the gauge corrections (reopened_*, pruned_*) and rare
-- events counted where they happen (lease_lost, rescued, stale_*, dispatch_suppressed).
-- `n` is double precision: histogram sums are seconds.
CREATE TABLE onceq_stats (
    queue text NOT NULL,
    task  text NOT NULL,
    name  text NOT NULL,
    n     double precision NOT NULL,
    PRIMARY KEY (queue, task, name)
);

-- How far the history is folded: every job with id <= folded_to is counted in
-- onceq_stats, or listed in onceq_stats_open. `version` moves when an operator retry
-- reopens a finished job, so a fold running at the same time starts over.
CREATE TABLE onceq_stats_mark (
    id        integer PRIMARY KEY CHECK (id = 1),
    folded_to bigint NOT NULL,
    version   bigint NOT NULL DEFAULT 0
);
INSERT INTO onceq_stats_mark (id, folded_to) VALUES (1, 0);

-- Jobs at or below the mark whose outcome is not counted yet: not finished when their
-- part was folded, or finished and sent back to pending by an operator. Attempts up to
-- `after_token` are counted already.
-- Gaps: ids commit out of order here (the sequence hands them out before their
-- transactions commit), so an id of a folded part that had no row yet is kept with
-- after_token -1 (its job, once it commits, is counted from its row like any open one)
-- until it is known never to come: its gap was checked (gap_xmax: the snapshot's xmax, a
-- second after gap_seen) and every transaction running then has ended.
CREATE TABLE onceq_stats_open (
    job_id      bigint PRIMARY KEY,
    after_token bigint NOT NULL,
    gap_seen    timestamptz,
    gap_xmax    bigint
);

-- Jobs finished per minute (unix minutes) and status, for the last hours' chart.
CREATE TABLE onceq_stats_minutes (
    minute bigint NOT NULL,
    status text NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (minute, status)
);

-- The dashboard's failed and cancelled jobs, newest first, without walking the others.
-- Partial: a job that succeeds never enters it, so completions pay nothing for it.
CREATE INDEX onceq_jobs_failed ON onceq_jobs (status, id) WHERE status IN ('failed', 'cancelled');
