-- What the dashboard reads and does (onceq/store/views.py), SQLite dialect.
-- A job filter is :queue, :task, :status, :run_id, :since, :until (creation time) and
-- :text (found anywhere in the arguments' JSON text); NULL matches anything. Pages are
-- keyset pages: each is an index walk from where the last one stopped, however deep.

-- name: job_page
-- Jobs matching the filter, newest first, below :before (and up to :upto). A bulk action
-- walks what it counted with it: :statuses (a JSON array, or NULL for any) and :plain
-- (no workflow jobs) as in job_match_count.
SELECT * FROM onceq_jobs
WHERE id < :before AND id <= :upto
  AND (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)))
  AND (NOT :plain OR run_id IS NULL)
  AND (:queue IS NULL OR queue = :queue) AND (:task IS NULL OR task = :task)
  AND (:status IS NULL OR status = :status) AND (:run_id IS NULL OR run_id = :run_id)
  AND (:since IS NULL OR created_at >= :since) AND (:until IS NULL OR created_at < :until)
  AND (:text IS NULL OR instr(args, :text) > 0)
ORDER BY id DESC LIMIT :limit;

-- name: job_page_failed
-- As job_page when :status is failed or cancelled: through their partial index (the
-- literal IN is what lets the planner use it), not past every job that succeeded.
SELECT * FROM onceq_jobs
WHERE status IN ('failed', 'cancelled') AND status = :status AND id < :before
  AND (:queue IS NULL OR queue = :queue) AND (:task IS NULL OR task = :task)
  AND (:run_id IS NULL OR run_id = :run_id)
  AND (:since IS NULL OR created_at >= :since) AND (:until IS NULL OR created_at < :until)
  AND (:text IS NULL OR instr(args, :text) > 0)
ORDER BY id DESC LIMIT :limit;

-- name: job_page_newer
-- Jobs matching the filter above :after, oldest first (the page before, reversed).
SELECT * FROM onceq_jobs
WHERE id > :after
  AND (:queue IS NULL OR queue = :queue) AND (:task IS NULL OR task = :task)
  AND (:status IS NULL OR status = :status) AND (:run_id IS NULL OR run_id = :run_id)
  AND (:since IS NULL OR created_at >= :since) AND (:until IS NULL OR created_at < :until)
  AND (:text IS NULL OR instr(args, :text) > 0)
ORDER BY id LIMIT :limit;

-- name: job_match_count
-- How many jobs match the filter, up to id :upto, among those in :statuses (a JSON
-- array: the statuses an action applies to), and without workflow jobs when :plain; the
-- highest id among them bounds the action that follows.
SELECT count(*) AS n, max(id) AS upto FROM onceq_jobs
WHERE id <= :upto AND status IN (SELECT value FROM json_each(:statuses))
  AND (NOT :plain OR run_id IS NULL)
  AND (:queue IS NULL OR queue = :queue) AND (:task IS NULL OR task = :task)
  AND (:status IS NULL OR status = :status) AND (:run_id IS NULL OR run_id = :run_id)
  AND (:since IS NULL OR created_at >= :since) AND (:until IS NULL OR created_at < :until)
  AND (:text IS NULL OR instr(args, :text) > 0);

-- name: job_retry_many_lock
-- The jobs in :ids (a JSON array) an operator retry may send back to pending, as they
-- are. (PostgreSQL locks them; here BEGIN IMMEDIATE holds the only write lock.)
SELECT id, queue, task, status, lease_token, finished_at FROM onceq_jobs
WHERE id IN (SELECT value FROM json_each(:ids))
  AND status IN ('failed', 'cancelled') AND run_id IS NULL
ORDER BY id;

-- name: job_retry_many
-- As job_retry, for the jobs in :ids.
UPDATE onceq_jobs
SET status = 'pending', run_at = :now, finished_at = NULL, worker = NULL,
    max_attempts = max(max_attempts, attempts + :extra)
WHERE id IN (SELECT value FROM json_each(:ids))
  AND status IN ('failed', 'cancelled') AND run_id IS NULL
RETURNING id, lease_token AS token, status, run_id, step, item;

-- name: job_cancel_many
-- Cancels the pending jobs in :ids (running ones are cancelled one by one, as job_cancel
-- does: their attempts end with them).
UPDATE onceq_jobs
SET status = 'cancelled', finished_at = :now, lease_expires_at = NULL
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'pending'
RETURNING id, lease_token AS token, status, run_id, step, item;

-- name: job_running_of
-- Which of the jobs in :ids are running.
SELECT id FROM onceq_jobs
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'running'
ORDER BY id;

-- name: step_items
-- A fan-out's items from item :first on, with the job of each one dispatched (through
-- the dispatch-once index).
SELECT i.item, i.args, i.error, j.id AS job_id, j.status
FROM onceq_step_items i
LEFT JOIN onceq_jobs j ON j.run_id = i.run_id AND j.step = i.step AND j.item = i.item
WHERE i.run_id = :run_id AND i.step = :step AND i.item >= :first
ORDER BY i.item LIMIT :limit;

-- name: step_jobs
-- The jobs of a step, from item :first on (a plain step has one, item 0).
SELECT item, args, NULL AS error, id AS job_id, status FROM onceq_jobs
WHERE run_id = :run_id AND step = :step AND item >= :first
ORDER BY item LIMIT :limit;
