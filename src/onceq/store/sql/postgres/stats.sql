-- What the dashboard and /metrics count (onceq/store/stats.py), PostgreSQL dialect. The
-- history is folded into onceq_stats by id; what is above the mark (and the open jobs
-- below it) is counted from the rows at read time.

-- name: stats_snapshot
-- The statements after this one see one snapshot: a fold and a read each run several
-- statements, and under READ COMMITTED a fold committing between two of them would be
-- counted twice or not at all. (Must be the transaction's first statement.)
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ;

-- name: stats_custom_plans
-- Plan stats_events for each call's own bounds: psycopg prepares a statement run often,
-- and after a few large folds PostgreSQL would keep a generic plan that hash-joins every
-- attempt (120 ms on a million) for the small parts that follow (1 ms planned for them).
SET LOCAL plan_cache_mode = force_custom_plan;

-- name: stats_mark_lock
-- The fold's turn: folds take turns on this row.
SELECT * FROM onceq_stats_mark WHERE id = 1 FOR UPDATE;

-- name: stats_mark_get
SELECT * FROM onceq_stats_mark WHERE id = 1;

-- name: stats_mark_touch
-- An operator retry is reopening finished jobs (their rows are locked already: job rows
-- first, then this one). Writing the row, not just locking it, makes a fold that waits
-- for it fail to serialize and start over on a snapshot that sees the retry.
UPDATE onceq_stats_mark SET version = version + 1 WHERE id = 1 RETURNING folded_to;

-- name: stats_mark_set
UPDATE onceq_stats_mark SET folded_to = %(folded_to)s WHERE id = 1;

-- name: stats_horizon
-- How far the mark may move: the sequence's last value (ids up to it are handed out;
-- some may not have committed yet: stats_gaps_add keeps those), and the snapshot's
-- oldest running transaction (xmin) and next one (xmax), to settle gaps.
SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('onceq_jobs', 'id')::regclass),
                0) AS last_id,
       pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax;

-- name: stats_gaps_add
-- Ids of the part (%(lo)s, %(hi)s] without a row in this snapshot: handed out to a
-- transaction that has not committed yet, or burnt (a rollback, an insert whose key was
-- taken). Kept open as gaps: a job that commits later is counted from its row.
INSERT INTO onceq_stats_open (job_id, after_token, gap_seen)
SELECT g, -1, now() FROM generate_series(%(lo)s::bigint + 1, %(hi)s::bigint) AS g
WHERE NOT EXISTS (SELECT 1 FROM onceq_jobs WHERE id = g)
ON CONFLICT (job_id) DO NOTHING;

-- name: stats_gaps_check
-- A gap seen a second ago or more is checked: every transaction that could still commit
-- its id has its transaction id by now (an insert takes one microseconds after its id),
-- and is below the xmax recorded here.
UPDATE onceq_stats_open SET gap_xmax = %(xmax)s
WHERE after_token = -1 AND gap_xmax IS NULL AND gap_seen < now() - interval '1 second';

-- name: stats_gaps_settle
-- Gaps whose id will never have a row: every transaction running when they were checked
-- has ended, and none wrote it. (The jobs id sequence must keep CACHE 1, its default: a
-- cached range is handed out long before it is used.)
DELETE FROM onceq_stats_open AS o
WHERE o.after_token = -1 AND o.gap_xmax IS NOT NULL AND o.gap_xmax <= %(xmin)s
  AND NOT EXISTS (SELECT 1 FROM onceq_jobs WHERE id = o.job_id);

-- name: stats_open_closing
-- Open jobs whose outcome can be counted now (finished), or that are gone (a gap is not
-- gone: its job may not have committed yet).
SELECT o.job_id, o.after_token, j.id IS NOT NULL AS present
FROM onceq_stats_open o LEFT JOIN onceq_jobs j ON j.id = o.job_id
WHERE (j.id IS NULL AND o.after_token >= 0)
   OR j.status IN ('succeeded', 'failed', 'cancelled');

-- name: stats_open_of
-- Which of the jobs in %(ids)s (a JSON array) are open.
SELECT job_id, after_token FROM onceq_stats_open
WHERE job_id IN (SELECT v::bigint FROM json_array_elements_text(%(ids)s::json) AS v);

-- name: stats_open_add
-- The jobs of a part being folded that have not finished: counted once they have.
INSERT INTO onceq_stats_open (job_id, after_token)
SELECT id, 0 FROM onceq_jobs
WHERE id > %(lo)s AND id <= %(hi)s AND status NOT IN ('succeeded', 'failed', 'cancelled');

-- name: stats_open_reopen
-- Finished jobs an operator sent back to pending: [[id, token], ...] in %(rows)s.
INSERT INTO onceq_stats_open (job_id, after_token)
SELECT (e ->> 0)::bigint, (e ->> 1)::bigint FROM json_array_elements(%(rows)s::json) AS e
ON CONFLICT (job_id) DO NOTHING;

-- name: stats_open_close
DELETE FROM onceq_stats_open
WHERE job_id IN (SELECT v::bigint FROM json_array_elements_text(%(ids)s::json) AS v);

-- name: stats_add
-- Adds [[queue, task, name, n], ...] to the totals (the caller sums repeats and sorts
-- them: upserts from two transactions then lock their rows in one order).
INSERT INTO onceq_stats AS s (queue, task, name, n)
SELECT e ->> 0, e ->> 1, e ->> 2, (e ->> 3)::double precision
FROM json_array_elements(%(rows)s::json) AS e
ON CONFLICT (queue, task, name) DO UPDATE SET n = s.n + excluded.n;

-- name: stats_minutes_add
-- Adds [[minute, status, n], ...] to the per-minute counts.
INSERT INTO onceq_stats_minutes AS m (minute, status, n)
SELECT (e ->> 0)::bigint, e ->> 1, (e ->> 2)::bigint FROM json_array_elements(%(rows)s::json) AS e
ON CONFLICT (minute, status) DO UPDATE SET n = m.n + excluded.n;

-- name: stats_minutes_trim
DELETE FROM onceq_stats_minutes WHERE minute < %(before)s;

-- name: stats_all
SELECT queue, task, name, n FROM onceq_stats;

-- name: stats_minutes
SELECT minute, status, n FROM onceq_stats_minutes WHERE minute >= %(since)s;

-- name: stats_now
-- The database's clock, as unix seconds.
SELECT extract(epoch FROM now())::float8 AS now;

-- name: stats_job_labels
-- The queue, task and status of the jobs in %(ids)s (a JSON array): rare events, labelled.
SELECT id, queue, task, status FROM onceq_jobs
WHERE id IN (SELECT v::bigint FROM json_array_elements_text(%(ids)s::json) AS v);

-- name: stats_oldest_runnable
-- Per queue, how long its oldest runnable job (pending and due) has waited: through the
-- pending jobs' index, never the finished ones.
SELECT queue, extract(epoch FROM now() - min(run_at))::float8 AS age FROM onceq_jobs
WHERE status = 'pending' AND run_at <= now()
GROUP BY queue;

-- name: stats_events
-- What a set of jobs adds to the totals, as (queue, task, name, minute, n) rows: see the
-- SQLite file for the set and the modes. Times are timestamptz here: durations in
-- seconds through extract(epoch …).
WITH sel(job_id, after, entered) AS (
    SELECT id, 0::bigint, false FROM onceq_jobs WHERE id > %(lo)s AND id <= %(hi)s
    UNION ALL
    SELECT v::bigint, 0, false FROM json_array_elements_text(%(fresh)s::json) AS v
    UNION ALL
    SELECT (e ->> 0)::bigint, greatest((e ->> 1)::bigint, 0), (e ->> 1)::bigint >= 0
    FROM json_array_elements(%(closing)s::json) AS e
    UNION ALL
    SELECT job_id, greatest(after_token, 0), after_token >= 0
    FROM onceq_stats_open WHERE %(all_open)s
), j AS MATERIALIZED (
    SELECT x.id, s.after, s.entered, x.queue, x.task, x.status,
           x.status IN ('succeeded', 'failed', 'cancelled') AS final,
           extract(epoch FROM x.finished_at - x.started_at)::float8 AS d,
           extract(epoch FROM x.started_at - x.run_at)::float8 AS w, x.finished_at
    FROM sel s JOIN onceq_jobs x ON x.id = s.job_id
), a AS MATERIALIZED (
    SELECT j.queue, j.task, t.job_id, t.token, t.outcome
    FROM j JOIN onceq_attempts t ON t.job_id = j.id AND t.token > j.after
    WHERE t.outcome IS NOT NULL AND t.outcome <> 'released' AND (%(mode)s <> 0 OR j.final)
)
SELECT queue, task, 'enqueued' AS name, NULL::bigint AS minute, count(*)::float8 AS n
FROM j WHERE NOT entered GROUP BY queue, task
UNION ALL
SELECT queue, task, status, NULL, count(*) FROM j WHERE final GROUP BY queue, task, status
UNION ALL
SELECT queue, task, 'status_' || status, NULL, count(*)
FROM j WHERE NOT final AND %(mode)s = 2 GROUP BY queue, task, status
UNION ALL
SELECT j.queue, j.task, k.kind || '_b' || (b.n - 1), NULL, count(*)
FROM j, (VALUES ('duration'), ('wait')) AS k(kind),
     json_array_elements(%(buckets)s::json) WITH ORDINALITY AS b(e, n)
WHERE j.status = 'succeeded'
  AND coalesce(CASE k.kind WHEN 'duration' THEN j.d ELSE j.w END, 0) > (b.e ->> 0)::float8
  AND coalesce(CASE k.kind WHEN 'duration' THEN j.d ELSE j.w END, 0) <= (b.e ->> 1)::float8
GROUP BY 1, 2, 3
UNION ALL
SELECT j.queue, j.task, k.kind || '_sum', NULL,
       sum(coalesce(CASE k.kind WHEN 'duration' THEN j.d ELSE j.w END, 0))
FROM j, (VALUES ('duration'), ('wait')) AS k(kind)
WHERE j.status = 'succeeded' GROUP BY 1, 2, 3
UNION ALL
SELECT '', '', 'minute_' || status, floor(extract(epoch FROM finished_at) / 60)::bigint,
       count(*)
FROM j WHERE final AND finished_at IS NOT NULL GROUP BY 3, 4
UNION ALL
SELECT queue, task, 'retried', NULL, count(*) FROM a WHERE outcome = 'retried'
GROUP BY queue, task
UNION ALL
SELECT queue, task, name, NULL, count(*) FROM (
    SELECT queue, task, CASE (
        SELECT coalesce(p.outcome, 'open') FROM onceq_attempts p
        WHERE p.job_id = a.job_id AND p.token < a.token
          AND p.outcome IS DISTINCT FROM 'released'
        ORDER BY p.token DESC LIMIT 1)
        WHEN 'retried' THEN 'rerun_retry'
        WHEN 'lease_expired' THEN 'rerun_lease_lost' WHEN 'worker_died' THEN 'rerun_lease_lost'
        WHEN 'failed' THEN 'rerun_operator' WHEN 'cancelled' THEN 'rerun_operator'
        WHEN 'stopped' THEN 'rerun_shutdown'
        WHEN 'succeeded' THEN 'rerun_unexplained' WHEN 'open' THEN 'rerun_unexplained'
        END AS name
    FROM a WHERE token > 1) AS r
WHERE name IS NOT NULL GROUP BY queue, task, name;
