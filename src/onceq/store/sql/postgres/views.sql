-- What the dashboard reads and does (onceq/store/views.py), PostgreSQL dialect: the
-- same statements as the SQLite file (see it for the filter's parameters). Arguments
-- are `json`, searched as their stored text (`args::text`, byte for byte as written).

-- name: job_page
-- Jobs matching the filter, newest first, below %(before)s (and up to %(upto)s). A bulk
-- action walks what it counted with it: %(statuses)s (a JSON array, or NULL for any)
-- and %(plain)s (no workflow jobs) as in job_match_count.
SELECT * FROM onceq_jobs
WHERE id < %(before)s AND id <= %(upto)s
  AND (%(statuses)s::json IS NULL
       OR status IN (SELECT json_array_elements_text(%(statuses)s::json)))
  AND (NOT %(plain)s OR run_id IS NULL)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(run_id)s::bigint IS NULL OR run_id = %(run_id)s::bigint)
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s::timestamptz)
  AND (%(text)s::text IS NULL OR strpos(args::text, %(text)s::text) > 0)
ORDER BY id DESC LIMIT %(limit)s;

-- name: job_page_failed
-- As job_page when the status is failed or cancelled: through their partial index (the
-- literal IN is what proves the index's predicate for a prepared statement).
SELECT * FROM onceq_jobs
WHERE status IN ('failed', 'cancelled') AND status = %(status)s::text AND id < %(before)s
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(run_id)s::bigint IS NULL OR run_id = %(run_id)s::bigint)
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s::timestamptz)
  AND (%(text)s::text IS NULL OR strpos(args::text, %(text)s::text) > 0)
ORDER BY id DESC LIMIT %(limit)s;

-- name: job_page_newer
-- Jobs matching the filter above %(after)s, oldest first (the page before, reversed).
SELECT * FROM onceq_jobs
WHERE id > %(after)s
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(run_id)s::bigint IS NULL OR run_id = %(run_id)s::bigint)
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s::timestamptz)
  AND (%(text)s::text IS NULL OR strpos(args::text, %(text)s::text) > 0)
ORDER BY id LIMIT %(limit)s;

-- name: job_match_count
-- How many jobs match the filter, up to id %(upto)s, among those in %(statuses)s, and
-- without workflow jobs when %(plain)s; the highest id bounds the action that follows.
SELECT count(*)::bigint AS n, max(id) AS upto FROM onceq_jobs
WHERE id <= %(upto)s AND status IN (SELECT json_array_elements_text(%(statuses)s::json))
  AND (NOT %(plain)s OR run_id IS NULL)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(run_id)s::bigint IS NULL OR run_id = %(run_id)s::bigint)
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s::timestamptz)
  AND (%(text)s::text IS NULL OR strpos(args::text, %(text)s::text) > 0);

-- name: job_retry_many_lock
-- The jobs in %(ids)s an operator retry may send back to pending, as they are, locked
-- in id order (the order every transaction locks job rows in).
SELECT id, queue, task, status, lease_token, finished_at FROM onceq_jobs
WHERE id IN (SELECT v::bigint FROM json_array_elements_text(%(ids)s::json) AS v)
  AND status IN ('failed', 'cancelled') AND run_id IS NULL
ORDER BY id FOR UPDATE;

-- name: job_retry_many
-- As job_retry, for the jobs in %(ids)s (locked by job_retry_many_lock).
UPDATE onceq_jobs
SET status = 'pending', run_at = now(), finished_at = NULL, worker = NULL,
    max_attempts = greatest(max_attempts, attempts + %(extra)s)
WHERE id IN (SELECT v::bigint FROM json_array_elements_text(%(ids)s::json) AS v)
  AND status IN ('failed', 'cancelled') AND run_id IS NULL
RETURNING id, lease_token AS token, status, run_id, step, item;

-- name: job_cancel_many
-- Cancels the pending jobs in %(ids)s, locked in id order first (running ones are
-- cancelled one by one, as job_cancel does: their attempts end with them).
WITH locked AS MATERIALIZED (
    SELECT id FROM onceq_jobs
    WHERE id IN (SELECT v::bigint FROM json_array_elements_text(%(ids)s::json) AS v)
      AND status = 'pending'
    ORDER BY id FOR UPDATE
)
UPDATE onceq_jobs AS j SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL
FROM locked WHERE j.id = locked.id AND j.status = 'pending'
RETURNING j.id, j.lease_token AS token, j.status, j.run_id, j.step, j.item;

-- name: job_running_of
-- Which of the jobs in %(ids)s are running.
SELECT id FROM onceq_jobs
WHERE id IN (SELECT v::bigint FROM json_array_elements_text(%(ids)s::json) AS v)
  AND status = 'running'
ORDER BY id;

-- name: step_items
-- A fan-out's items from item %(first)s on, with the job of each one dispatched
-- (through the dispatch-once index).
SELECT i.item, i.args, i.error, j.id AS job_id, j.status
FROM onceq_step_items i
LEFT JOIN onceq_jobs j ON j.run_id = i.run_id AND j.step = i.step AND j.item = i.item
WHERE i.run_id = %(run_id)s AND i.step = %(step)s AND i.item >= %(first)s
ORDER BY i.item LIMIT %(limit)s;

-- name: step_jobs
-- The jobs of a step, from item %(first)s on (a plain step has one, item 0).
SELECT item, args, NULL AS error, id AS job_id, status FROM onceq_jobs
WHERE run_id = %(run_id)s AND step = %(step)s AND item >= %(first)s
ORDER BY item LIMIT %(limit)s;
