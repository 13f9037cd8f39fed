-- What the dashboard and /metrics count (onceq/store/stats.py), SQLite dialect. The
-- history is folded into onceq_stats by id; what is above the mark (and the open jobs
-- below it) is counted from the rows at read time.

-- name: stats_snapshot
-- The statements after this one see one snapshot. (A SQLite transaction is one already;
-- PostgreSQL asks for REPEATABLE READ here.)
SELECT 1;

-- name: stats_custom_plans
-- (PostgreSQL: no generic plan for stats_events. Nothing to do here: SQLite's plan for
-- it does not depend on how many ids the bounds hold.)
SELECT 1;

-- name: stats_mark_lock
-- The fold's turn. (BEGIN IMMEDIATE already holds the only write lock.)
SELECT * FROM onceq_stats_mark WHERE id = 1;

-- name: stats_mark_get
SELECT * FROM onceq_stats_mark WHERE id = 1;

-- name: stats_mark_touch
-- An operator retry is reopening finished jobs: a fold running at the same time on
-- PostgreSQL starts over. (Here the write lock already keeps them apart.)
UPDATE onceq_stats_mark SET version = version + 1 WHERE id = 1 RETURNING folded_to;

-- name: stats_mark_set
UPDATE onceq_stats_mark SET folded_to = :folded_to WHERE id = 1;

-- name: stats_horizon
-- How far the mark may move: the highest id handed out. Under BEGIN IMMEDIATE no other
-- transaction can hold an uncommitted job, and AUTOINCREMENT never hands out an id below
-- one already used, so every id up to it has its row or never will. (PostgreSQL also
-- returns its snapshot's xmin and xmax, for its gaps.)
SELECT coalesce(max(id), 0) AS last_id, NULL AS xmin, NULL AS xmax FROM onceq_jobs;

-- name: stats_gaps_add
-- Ids of a folded part without a row: none can commit later here (see stats_horizon).
-- PostgreSQL keeps them.
SELECT 1 WHERE 0;

-- name: stats_gaps_check
SELECT 1 WHERE 0;

-- name: stats_gaps_settle
SELECT 1 WHERE 0;

-- name: stats_open_closing
-- Open jobs whose outcome can be counted now (finished), or that are gone.
SELECT o.job_id, o.after_token, j.id IS NOT NULL AS present
FROM onceq_stats_open o LEFT JOIN onceq_jobs j ON j.id = o.job_id
WHERE (j.id IS NULL AND o.after_token >= 0)
   OR j.status IN ('succeeded', 'failed', 'cancelled');

-- name: stats_open_of
-- Which of the jobs in :ids (a JSON array) are open.
SELECT job_id, after_token FROM onceq_stats_open
WHERE job_id IN (SELECT value FROM json_each(:ids));

-- name: stats_open_add
-- The jobs of a part being folded that have not finished: counted once they have.
INSERT INTO onceq_stats_open (job_id, after_token)
SELECT id, 0 FROM onceq_jobs
WHERE id > :lo AND id <= :hi AND status NOT IN ('succeeded', 'failed', 'cancelled');

-- name: stats_open_reopen
-- Finished jobs an operator sent back to pending: [[id, token], ...] in :rows.
INSERT INTO onceq_stats_open (job_id, after_token)
SELECT value ->> 0, value ->> 1 FROM json_each(:rows) WHERE true
ON CONFLICT (job_id) DO NOTHING;

-- name: stats_open_close
DELETE FROM onceq_stats_open WHERE job_id IN (SELECT value FROM json_each(:ids));

-- name: stats_add
-- Adds [[queue, task, name, n], ...] to the totals (the caller sums repeats first).
INSERT INTO onceq_stats (queue, task, name, n)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(:rows) WHERE true
ON CONFLICT (queue, task, name) DO UPDATE SET n = n + excluded.n;

-- name: stats_minutes_add
-- Adds [[minute, status, n], ...] to the per-minute counts.
INSERT INTO onceq_stats_minutes (minute, status, n)
SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(:rows) WHERE true
ON CONFLICT (minute, status) DO UPDATE SET n = n + excluded.n;

-- name: stats_minutes_trim
DELETE FROM onceq_stats_minutes WHERE minute < :before;

-- name: stats_all
SELECT queue, task, name, n FROM onceq_stats;

-- name: stats_minutes
SELECT minute, status, n FROM onceq_stats_minutes WHERE minute >= :since;

-- name: stats_now
SELECT :now AS now;

-- name: stats_job_labels
-- The queue, task and status of the jobs in :ids (a JSON array): rare events, labelled.
SELECT id, queue, task, status FROM onceq_jobs
WHERE id IN (SELECT value FROM json_each(:ids));

-- name: stats_oldest_runnable
-- Per queue, how long its oldest runnable job (pending and due) has waited: through the
-- pending jobs' index, never the finished ones.
SELECT queue, :now - min(run_at) AS age FROM onceq_jobs
WHERE status = 'pending' AND run_at <= :now
GROUP BY queue;

-- name: stats_events
-- What a set of jobs adds to the totals, as (queue, task, name, minute, n) rows. The
-- set: the ids in (:lo, :hi], the ids in :fresh (JSON), the [[id, after_token], ...] of
-- :closing, and every open job if :all_open; jobs from the first two are new (they add
-- `enqueued`), open ones were entered already and add only attempts after their token
-- (but for PostgreSQL's gaps, after_token -1: their jobs committed late, and are new).
-- :mode 0 (fold): a job that has not finished adds only `enqueued` (it stays open);
-- 1 (forget: the jobs are about to be deleted): their ended attempts count all the same;
-- 2 (read): unfinished jobs add `status_<status>` too, for the gauge.
-- Finished jobs add their status; succeeded ones their duration (start to finish) and
-- wait (due to start), each in the bucket of :buckets ([[above, up to], ...] seconds,
-- the n-th named `_b<n>`) it falls in, and to its sum; ended attempts add `retried`
-- and, for any but a job's first run, the kind of re-run, from how the run before it
-- ended (released attempts never ran: they are skipped).
WITH sel(job_id, after, entered) AS (
    SELECT id, 0, 0 FROM onceq_jobs WHERE id > :lo AND id <= :hi
    UNION ALL
    SELECT value, 0, 0 FROM json_each(:fresh)
    UNION ALL
    SELECT value ->> 0, max(value ->> 1, 0), value ->> 1 >= 0 FROM json_each(:closing)
    UNION ALL
    SELECT job_id, max(after_token, 0), after_token >= 0 FROM onceq_stats_open WHERE :all_open
), j AS MATERIALIZED (
    SELECT x.id, s.after, s.entered, x.queue, x.task, x.status,
           x.status IN ('succeeded', 'failed', 'cancelled') AS final,
           x.finished_at - x.started_at AS d, x.started_at - x.run_at AS w, x.finished_at
    FROM sel s JOIN onceq_jobs x ON x.id = s.job_id
), a AS MATERIALIZED (
    SELECT j.queue, j.task, t.job_id, t.token, t.outcome
    FROM j JOIN onceq_attempts t ON t.job_id = j.id AND t.token > j.after
    WHERE t.outcome IS NOT NULL AND t.outcome <> 'released' AND (:mode <> 0 OR j.final)
)
SELECT queue, task, 'enqueued' AS name, NULL AS minute, count(*) AS n
FROM j WHERE NOT entered GROUP BY queue, task
UNION ALL
SELECT queue, task, status, NULL, count(*) FROM j WHERE final GROUP BY queue, task, status
UNION ALL
SELECT queue, task, 'status_' || status, NULL, count(*)
FROM j WHERE NOT final AND :mode = 2 GROUP BY queue, task, status
UNION ALL
SELECT j.queue, j.task, k.kind || '_b' || b.key, NULL, count(*)
FROM j, (SELECT 'duration' AS kind UNION ALL SELECT 'wait') AS k, json_each(:buckets) AS b
WHERE j.status = 'succeeded'
  AND coalesce(CASE k.kind WHEN 'duration' THEN j.d ELSE j.w END, 0) > b.value ->> 0
  AND coalesce(CASE k.kind WHEN 'duration' THEN j.d ELSE j.w END, 0) <= b.value ->> 1
GROUP BY 1, 2, 3
UNION ALL
SELECT j.queue, j.task, k.kind || '_sum', NULL,
       sum(coalesce(CASE k.kind WHEN 'duration' THEN j.d ELSE j.w END, 0))
FROM j, (SELECT 'duration' AS kind UNION ALL SELECT 'wait') AS k
WHERE j.status = 'succeeded' GROUP BY 1, 2, 3
UNION ALL
SELECT '', '', 'minute_' || status, CAST(finished_at / 60 AS INTEGER), count(*)
FROM j WHERE final AND finished_at IS NOT NULL GROUP BY 3, 4
UNION ALL
SELECT queue, task, 'retried', NULL, count(*) FROM a WHERE outcome = 'retried'
GROUP BY queue, task
UNION ALL
SELECT queue, task, name, NULL, count(*) FROM (
    SELECT queue, task, CASE (
        SELECT coalesce(p.outcome, 'open') FROM onceq_attempts p
        WHERE p.job_id = a.job_id AND p.token < a.token AND p.outcome IS NOT 'released'
        ORDER BY p.token DESC LIMIT 1)
        WHEN 'retried' THEN 'rerun_retry'
        WHEN 'lease_expired' THEN 'rerun_lease_lost' WHEN 'worker_died' THEN 'rerun_lease_lost'
        WHEN 'failed' THEN 'rerun_operator' WHEN 'cancelled' THEN 'rerun_operator'
        WHEN 'stopped' THEN 'rerun_shutdown'
        WHEN 'succeeded' THEN 'rerun_unexplained' WHEN 'open' THEN 'rerun_unexplained'
        END AS name
    FROM a WHERE token > 1)
WHERE name IS NOT NULL GROUP BY queue, task, name;
