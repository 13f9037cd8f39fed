-- onceq job store queries, SQLite dialect. Each statement sits under a `-- name:` line;
-- postgres/queries.sql defines the same names (a test checks it).
-- Params are named (:name). Times are REAL unix seconds passed in as :now, because
-- SQLite 3.40's clock functions lack sub-millisecond precision and every process here
-- shares one machine clock. Batches arrive as one JSON array and are read with
-- json_each: one statement per batch, as unnest() does for PostgreSQL. In those, `+status`
-- (a unary plus) stops the planner from driving the statement by status, so each batch
-- element is one primary-key lookup.

-- name: schema_version
-- The highest migration applied, or NULL on an empty migrations table.
SELECT max(version) AS version FROM onceq_migrations;

-- name: migrations_table_exists
SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'onceq_migrations';

-- name: migrations_table_create
CREATE TABLE IF NOT EXISTS onceq_migrations (
    version    INTEGER PRIMARY KEY,
    applied_at REAL NOT NULL
);

-- name: migration_record
INSERT INTO onceq_migrations (version, applied_at) VALUES (:version, :now);

-- name: job_insert
-- One job; with a key that exists already, inserts nothing (the caller then reads it).
INSERT INTO onceq_jobs (queue, task, args, priority, run_at, key, max_attempts, created_at,
                        run_id, step, item, concurrency_key, concurrency_limit)
VALUES (:queue, :task, :args, :priority, coalesce(:run_at, :now + :delay), :key, :max_attempts,
        :now, :run_id, :step, :item, :concurrency_key, :concurrency_limit)
ON CONFLICT (key) DO NOTHING
RETURNING *;

-- name: job_dispatch
-- A workflow job. The unique (run_id, step, item) index makes a second dispatch of the
-- same item impossible: it inserts nothing and returns no row.
INSERT INTO onceq_jobs (queue, task, args, priority, run_at, max_attempts, created_at,
                        run_id, step, item)
VALUES (:queue, :task, :args, :priority, :now, :max_attempts, :now, :run_id, :step, :item)
ON CONFLICT (run_id, step, item) WHERE run_id IS NOT NULL DO NOTHING
RETURNING id;

-- name: job_get
SELECT * FROM onceq_jobs WHERE id = :job_id;

-- name: job_get_by_key
SELECT * FROM onceq_jobs WHERE key = :key;

-- name: job_claim
-- Moves up to :limit due jobs of any queue to running and returns them, in one statement.
-- "Any" leaves out queues named onceq.* (onceq's own tools): a worker serves those only
-- when it names them.
-- No FOR UPDATE SKIP LOCKED in SQLite: the caller holds BEGIN IMMEDIATE, so this is the
-- only writer and nothing else has the rows; the outer status re-check keeps the
-- statement correct on its own. RETURNING order is unspecified: the caller sorts.
UPDATE onceq_jobs
SET status = 'running', attempts = attempts + 1, lease_token = lease_token + 1,
    lease_expires_at = :now + :lease, worker = :worker, started_at = :now,
    claim = :claim
WHERE id IN (SELECT id FROM onceq_jobs
             WHERE status = 'pending' AND run_at <= :now
               AND substr(queue, 1, 6) <> 'onceq.'  -- reserved queues: named ones only
               AND concurrency_key IS NULL  -- keyed jobs: job_claim_keyed, with a slot
             ORDER BY priority DESC, run_at, id
             LIMIT :limit)
  AND +status = 'pending'
RETURNING id, lease_token, task, args, queue, attempts, max_attempts, run_id, step, item,
          priority, run_at, lease_token AS token, status;

-- name: job_claim_queue
-- As job_claim, for one queue: an ordered walk of the (queue, priority, run_at, id) index.
UPDATE onceq_jobs
SET status = 'running', attempts = attempts + 1, lease_token = lease_token + 1,
    lease_expires_at = :now + :lease, worker = :worker, started_at = :now,
    claim = :claim
WHERE id IN (SELECT id FROM onceq_jobs
             WHERE status = 'pending' AND run_at <= :now
               AND queue = :queue
               AND concurrency_key IS NULL
             ORDER BY priority DESC, run_at, id
             LIMIT :limit)
  AND +status = 'pending'
RETURNING id, lease_token, task, args, queue, attempts, max_attempts, run_id, step, item,
          priority, run_at, lease_token AS token, status;

-- name: job_claim_queues
-- As job_claim, restricted to the queues in :queues (a JSON array of names).
-- The IN list costs a sort of those queues' due jobs: prefer one queue per worker.
UPDATE onceq_jobs
SET status = 'running', attempts = attempts + 1, lease_token = lease_token + 1,
    lease_expires_at = :now + :lease, worker = :worker, started_at = :now,
    claim = :claim
WHERE id IN (SELECT id FROM onceq_jobs
             WHERE status = 'pending' AND run_at <= :now
               AND queue IN (SELECT value FROM json_each(:queues))
               AND concurrency_key IS NULL
             ORDER BY priority DESC, run_at, id
             LIMIT :limit)
  AND +status = 'pending'
RETURNING id, lease_token, task, args, queue, attempts, max_attempts, run_id, step, item,
          priority, run_at, lease_token AS token, status;

-- name: job_claimable
-- A read-only check before taking the write lock, so idle workers polling the file do not
-- queue up behind each other for BEGIN IMMEDIATE.
-- Only this worker's queues (:queues, a JSON array; NULL: all but the reserved ones).
SELECT 1 FROM onceq_jobs
WHERE status = 'pending' AND run_at <= :now
  AND (:queues IS NULL AND substr(queue, 1, 6) <> 'onceq.'
       OR queue IN (SELECT value FROM json_each(:queues)))
LIMIT 1;

-- name: queue_purge
-- Deletes a queue's jobs (attempts go with them) and the workflow runs they belonged
-- to: what `onceq diagnose` leaves behind in its own queue.
DELETE FROM onceq_runs WHERE id IN (SELECT run_id FROM onceq_jobs WHERE queue = :queue);

-- name: queue_purge_jobs
DELETE FROM onceq_jobs WHERE queue = :queue;

-- name: queue_purge_ids
-- The jobs queue_purge deletes: the queue's, and every job of the runs they belong to
-- (the runs' deletion cascades to them). Their totals are folded first.
SELECT id FROM onceq_jobs
WHERE queue = :queue
   OR run_id IN (SELECT run_id FROM onceq_jobs WHERE queue = :queue AND run_id IS NOT NULL);

-- name: job_heartbeat
-- Extends every lease in :leases that is still held; returns those kept.
-- (No row is ever `busy` here: a transaction holds the whole file, not rows.)
UPDATE onceq_jobs SET lease_expires_at = :now + :lease
WHERE +status = 'running'
  AND (id, lease_token) IN (SELECT value ->> 0, value ->> 1 FROM json_each(:leases))
RETURNING id, lease_token AS token, 0 AS busy;

-- name: job_complete
-- Records results for the leases in :batch ([[id, token, result], ...]) still held.
-- `value -> 2` is the JSON text of the result, whatever its type.
UPDATE onceq_jobs AS j
SET status = 'succeeded', result = v.result, finished_at = :now, lease_expires_at = NULL
FROM (SELECT value ->> 0 AS id, value ->> 1 AS token, value -> 2 AS result
      FROM json_each(:batch)) AS v
WHERE j.id = v.id AND j.lease_token = v.token AND +j.status = 'running'
-- (RETURNING sees only the updated table, and not by its alias. Completions sent again
-- after a lost answer are found in the attempt records: see attempt_outcomes.)
RETURNING id, lease_token AS token, status, run_id, step, item, 0 AS replayed;

-- name: job_fail
-- A failure under a held lease: back to pending after :retry_in seconds while attempts
-- remain, else failed. Returns the new status, or no row when the lease is not held.
UPDATE onceq_jobs
SET status = CASE WHEN :retry_in IS NOT NULL AND attempts < max_attempts
                  THEN 'pending' ELSE 'failed' END,
    run_at = CASE WHEN :retry_in IS NOT NULL AND attempts < max_attempts
                  THEN :now + :retry_in ELSE run_at END,
    finished_at = CASE WHEN :retry_in IS NOT NULL AND attempts < max_attempts
                       THEN NULL ELSE :now END,
    lease_expires_at = NULL, last_error = :error, last_traceback = :traceback
WHERE id = :job_id AND lease_token = :token AND +status = 'running'
RETURNING id, lease_token AS token, status, run_id, step, item, 0 AS replayed;

-- name: job_pending_text
-- The text of every pending job as bytes: read only when a claim met text that is not
-- UTF-8 (another program wrote it; json_valid() does not check), to find those rows.
SELECT id, CAST(queue AS BLOB) AS queue, CAST(task AS BLOB) AS task,
       CAST(args AS BLOB) AS args, CAST(key AS BLOB) AS key, CAST(step AS BLOB) AS step
FROM onceq_jobs WHERE status = 'pending';

-- name: job_fail_unreadable
-- Fails a pending job that no worker could read (no attempt: it never started).
UPDATE onceq_jobs
SET status = 'failed', finished_at = :now, last_error = :error, last_traceback = NULL
WHERE id = :job_id AND status = 'pending'
RETURNING id, lease_token AS token, status, run_id, step, item;

-- name: job_release
-- Hands back leases whose handler never started (graceful shutdown): pending again, and
-- the attempt is given back. The token stays bumped, so the old lease stays dead.
UPDATE onceq_jobs
SET status = 'pending', attempts = attempts - 1, lease_expires_at = NULL
WHERE +status = 'running'
  AND (id, lease_token) IN (SELECT value ->> 0, value ->> 1 FROM json_each(:leases))
RETURNING id, lease_token AS token, status, run_id, step, item, 0 AS replayed;

-- name: job_adopt
-- The jobs that :worker's claims in :claims (a JSON array of claim numbers) took and
-- that still run under them: claims whose answer was lost. Their leases are extended,
-- and they come back to be run. (Through the index of running jobs.)
UPDATE onceq_jobs SET lease_expires_at = :now + :lease
WHERE status = 'running' AND lease_expires_at IS NOT NULL AND worker = :worker
  AND claim IN (SELECT value FROM json_each(:claims))
RETURNING id, lease_token AS token, task, args, queue, attempts, max_attempts, run_id, step,
          item, priority, run_at;

-- name: job_rescue
-- Jobs whose lease expired (:worker NULL), or every job :worker held once its process is
-- known to be dead: pending again while attempts remain, else failed. The lost lease has
-- spent its attempt, so a job that kills its worker cannot loop forever. Any number of
-- workers may run this at once: each row changes under BEGIN IMMEDIATE, and the status
-- re-check leaves nothing for a second rescuer. (Through the index of running jobs:
-- there are few.)
UPDATE onceq_jobs
SET status = CASE WHEN attempts < max_attempts THEN 'pending' ELSE 'failed' END,
    run_at = :now,
    finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE :now END,
    lease_expires_at = NULL, last_error = :error, last_traceback = NULL
WHERE status = 'running' AND lease_expires_at IS NOT NULL
  AND CASE WHEN :worker IS NULL THEN lease_expires_at < :now ELSE worker = :worker END
RETURNING id, lease_token AS token, status, run_id, step, item;

-- name: job_rescue_stopped
-- Every job :worker held, once its process stopped during a shutdown: pending again and
-- the attempt given back (a shutdown is not the job's failure), never failed.
UPDATE onceq_jobs
SET status = 'pending', attempts = attempts - 1, run_at = :now, lease_expires_at = NULL
WHERE status = 'running' AND lease_expires_at IS NOT NULL AND worker = :worker
RETURNING id, lease_token AS token, status, run_id, step, item;

-- name: job_give_up
-- Leases their own worker gave up (no heartbeat got through in time, so its handler was
-- told to stop, and whatever it returns cannot count): pending again while attempts
-- remain, else failed, exactly as a rescue of an expired lease would do, only sooner.
UPDATE onceq_jobs
SET status = CASE WHEN attempts < max_attempts THEN 'pending' ELSE 'failed' END,
    run_at = :now,
    finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE :now END,
    lease_expires_at = NULL, last_error = :error, last_traceback = NULL
WHERE +status = 'running'
  AND (id, lease_token) IN (SELECT value ->> 0, value ->> 1 FROM json_each(:leases))
RETURNING id, lease_token AS token, status, run_id, step, item, 0 AS replayed;

-- name: attempt_end
-- Writes the record of each attempt in :leases that just ended with one outcome, from its
-- job row (which keeps the attempt's worker and start): an attempt's record is written
-- once, when it ends. :back is 1 for an attempt given back (a release: the job's count
-- went down), else 0. ON CONFLICT: a record opened at claim by onceq before schema v4.
-- (`WHERE true`: an INSERT … SELECT with an upsert clause needs a WHERE to parse.)
INSERT INTO onceq_attempts (job_id, token, attempt, worker, started_at, ended_at, outcome,
                            error)
SELECT id, lease_token, attempts + :back, worker, started_at, :now, :outcome, :error
FROM onceq_jobs
WHERE (id, lease_token) IN (SELECT value ->> 0, value ->> 1 FROM json_each(:leases))
  AND true
ON CONFLICT (job_id, token) DO UPDATE
SET ended_at = excluded.ended_at, outcome = excluded.outcome, error = excluded.error;

-- name: attempt_outcomes
-- How the attempts of the leases in :leases ended (a write refused for one of them may
-- be the same write sent again, whose first answer was lost).
SELECT job_id, token, outcome, error FROM onceq_attempts
WHERE (job_id, token) IN (SELECT value ->> 0, value ->> 1 FROM json_each(:leases));

-- name: attempt_reject
-- Notes a stale write (:op) refused for each lease in :leases. A heartbeat that crossed
-- its own holder's completion is not one: the holder ended that attempt itself.
UPDATE onceq_attempts SET rejected = coalesce(rejected || ',', '') || :op
WHERE (job_id, token) IN (SELECT value ->> 0, value ->> 1 FROM json_each(:leases))
  AND NOT (:op = 'heartbeat'
           AND coalesce(outcome IN ('succeeded', 'failed', 'retried', 'released'), 0));

-- name: attempt_list
-- A job's attempts: those that ended (their records), then the one running now, which
-- has no record until it ends (its lease is on the job row).
SELECT job_id, token, attempt, worker, started_at, ended_at, outcome, error, rejected
FROM onceq_attempts WHERE job_id = :job_id
UNION ALL
SELECT id, lease_token, attempts, worker, started_at, NULL, NULL, NULL, NULL
FROM onceq_jobs AS j
WHERE id = :job_id AND status = 'running'
  AND NOT EXISTS (SELECT 1 FROM onceq_attempts AS a
                  WHERE a.job_id = j.id AND a.token = j.lease_token)
ORDER BY token;

-- name: job_lock
-- Reads a job before an operator action. (PostgreSQL adds FOR UPDATE; here BEGIN
-- IMMEDIATE already holds the only write lock.)
SELECT * FROM onceq_jobs WHERE id = :job_id;

-- name: job_cancel
UPDATE onceq_jobs
SET status = 'cancelled', finished_at = :now, lease_expires_at = NULL
WHERE id = :job_id AND status IN ('pending', 'running')
RETURNING id, lease_token AS token, status, run_id, step, item;

-- name: job_retry
-- An operator retry: pending now, with at least :extra attempts left.
-- (max() here is greatest() in PostgreSQL.)
UPDATE onceq_jobs
SET status = 'pending', run_at = :now, finished_at = NULL, worker = NULL,
    max_attempts = max(max_attempts, attempts + :extra)
WHERE id = :job_id AND status IN ('failed', 'cancelled')
RETURNING *, lease_token AS token;

-- name: job_list
SELECT * FROM onceq_jobs
WHERE (:status IS NULL OR status = :status)
  AND (:queue IS NULL OR queue = :queue)
  AND (:task IS NULL OR task = :task)
  AND (:run_id IS NULL OR run_id = :run_id)
ORDER BY id DESC
LIMIT :limit OFFSET :offset;

-- name: job_counts
SELECT queue, status, count(*) AS n FROM onceq_jobs GROUP BY queue, status ORDER BY queue, status;

-- name: job_pending_exists
-- Is any job of these queues (:queues, a JSON array, or NULL for all) still to run,
-- due or not? (Used by --burst to know when to stop.)
SELECT 1 FROM onceq_jobs
WHERE status = 'pending'
  AND (:queues IS NULL AND substr(queue, 1, 6) <> 'onceq.'
       OR queue IN (SELECT value FROM json_each(:queues)))
LIMIT 1;

-- Workflow runs. These run inside the transaction that records a job's outcome (see
-- onceq.workflow.engine); BEGIN IMMEDIATE already serializes them, so run_lock needs no
-- FOR UPDATE here.

-- name: run_insert
INSERT INTO onceq_runs (name, definition, input, created_at)
VALUES (:name, :definition, :input, :now)
RETURNING id, name, status, definition;

-- name: step_insert
INSERT INTO onceq_steps (run_id, step) VALUES (:run_id, :step);

-- name: run_lock
-- (Not the input, which may hold a whole fan-out list: run_input reads it when needed.)
SELECT id, name, status, definition FROM onceq_runs WHERE id = :run_id;

-- name: run_input
SELECT input FROM onceq_runs WHERE id = :run_id;

-- name: run_get
SELECT * FROM onceq_runs WHERE id = :run_id;

-- name: run_list
SELECT * FROM onceq_runs ORDER BY id DESC LIMIT :limit OFFSET :offset;

-- name: run_finish
UPDATE onceq_runs SET status = :status, error = :error, finished_at = :now
WHERE id = :run_id AND status = 'running';

-- name: run_cancel_jobs
-- The pending jobs of a run that is ending (cancelled, or failed because it cannot be
-- advanced); its running ones finish and advance nothing.
UPDATE onceq_jobs SET status = 'cancelled', finished_at = :now
WHERE run_id = :run_id AND status = 'pending'
RETURNING id, lease_token AS token, status, run_id, step, item;

-- name: run_cancel_jobs_unlocked
-- As run_cancel_jobs, after the run's lock. (PostgreSQL skips rows other transactions
-- hold there; here a transaction holds the whole file, so none can.)
UPDATE onceq_jobs SET status = 'cancelled', finished_at = :now
WHERE run_id = :run_id AND status = 'pending'
RETURNING id, lease_token AS token, status, run_id, step, item;

-- name: step_list
-- (Not the fan-out lists: those are in onceq_step_items, read one item at a time.)
SELECT run_id, step, status, total, error, started_at, finished_at
FROM onceq_steps WHERE run_id = :run_id;

-- name: step_start
-- (`items`, the fan-out's list, is written for workers of schema v1 that may still run
-- during an upgrade: they read it. This version reads onceq_step_items.)
UPDATE onceq_steps SET status = 'running', items = :items, total = :total, started_at = :now
WHERE run_id = :run_id AND step = :step AND status = 'waiting';

-- name: step_items_insert
-- A fan-out's items, one row each with its job arguments, when its step starts: a
-- dispatch then reads its own item alone, whatever the length of the list. Items
-- from item number `:first` on (a long list goes in by parts). :items
-- is a JSON array of each item's arguments as JSON text, stored exactly as encoded.
INSERT INTO onceq_step_items (run_id, step, item, args)
SELECT :run_id, :step, :first + key, value FROM json_each(:items);

-- name: step_item_error_insert
-- The first item whose arguments could not be resolved: the step fails when its turn
-- comes (the items before it run).
INSERT INTO onceq_step_items (run_id, step, item, error)
VALUES (:run_id, :step, :item, :error);

-- name: step_item_get
SELECT args, error FROM onceq_step_items
WHERE run_id = :run_id AND step = :step AND item = :item;

-- name: step_items_legacy
-- The list of a step that was running when the schema moved to v2 (kept in the step row).
SELECT items FROM onceq_steps WHERE run_id = :run_id AND step = :step;

-- name: step_set_error
-- The first error of a step is the one kept.
UPDATE onceq_steps SET error = :error WHERE run_id = :run_id AND step = :step AND error IS NULL;

-- name: step_finish
UPDATE onceq_steps SET status = :status, finished_at = :now
WHERE run_id = :run_id AND step = :step AND status = 'running';

-- name: step_close_waiting
-- Steps that can no longer start, once the run ends (skipped) or is cancelled.
UPDATE onceq_steps SET status = :status WHERE run_id = :run_id AND status = 'waiting';

-- name: job_step_progress
-- How far a step is: items dispatched (they are numbered from 0, in order) and jobs
-- still pending or running. Two index probes, whatever the size of the fan-out.
SELECT (SELECT coalesce(max(item) + 1, 0) FROM onceq_jobs
        WHERE run_id = :run_id AND step = :step) AS dispatched,
       (SELECT count(*) FROM onceq_jobs
        WHERE run_id = :run_id AND step = :step
          AND status IN ('pending', 'running')) AS active;

-- name: job_step_results
SELECT item, result FROM onceq_jobs WHERE run_id = :run_id AND step = :step ORDER BY item;

-- name: job_run_counts
SELECT step, status, count(*) AS n FROM onceq_jobs WHERE run_id = :run_id
GROUP BY step, status;

-- name: job_running_exists
-- Is any job of these queues (all, for NULL) running? Through the index of running jobs.
SELECT 1 FROM onceq_jobs
WHERE status = 'running' AND lease_expires_at IS NOT NULL
  AND (:queues IS NULL OR queue IN (SELECT value FROM json_each(:queues)))
LIMIT 1;

-- name: job_cancel_orphan
-- A job sent back to pending (a retry, a rescue, a release) whose run has ended
-- (cancelled, or failed elsewhere) is not run again: it is cancelled instead.
UPDATE onceq_jobs SET status = 'cancelled', finished_at = :now, worker = NULL
WHERE id = :job_id AND status = 'pending'
RETURNING id;

-- name: step_close_open
-- The steps of an ending run that had not finished: running ones become :running,
-- waiting ones :waiting.
UPDATE onceq_steps
SET status = CASE status WHEN 'running' THEN :running ELSE :waiting END, finished_at = :now
WHERE run_id = :run_id AND status IN ('waiting', 'running');

-- name: job_error
-- The error a workflow job ended with (the only column read: another column of a row
-- written around onceq may not even be readable).
SELECT last_error FROM onceq_jobs WHERE id = :job_id;

-- Code-task batches (onceq.batch). A holder of a worktree slot or of the merge queue's
-- turn is a job's lease: it holds nothing once that job no longer runs under that token.

-- name: batch_lock
-- The batch's row, before changing what hangs off it. (PostgreSQL adds FOR UPDATE; here
-- BEGIN IMMEDIATE already holds the only write lock.)
SELECT * FROM onceq_batches WHERE name = :name;

-- name: batch_get
SELECT * FROM onceq_batches WHERE name = :name;

-- name: batch_insert
-- A second submit of the same new batch at once inserts nothing (then both lock it).
INSERT INTO onceq_batches (name, repo, base, base_start, definition, created_at)
VALUES (:name, :repo, :base, :base_start, :definition, :now)
ON CONFLICT (name) DO NOTHING;

-- name: batch_set_definition
UPDATE onceq_batches SET definition = :definition WHERE name = :name;

-- name: batch_set_run
UPDATE onceq_batches SET run_id = :run_id WHERE name = :name;

-- name: batch_list
SELECT b.name, b.repo, b.base, b.created_at, b.run_id, r.status AS run_status
FROM onceq_batches b LEFT JOIN onceq_runs r ON r.id = b.run_id
ORDER BY b.created_at, b.name;

-- name: batch_task_counts
SELECT batch, status, count(*) AS n FROM onceq_batch_tasks GROUP BY batch, status;

-- name: batch_delete
DELETE FROM onceq_batches WHERE name = :name;

-- name: batch_tasks_delete
DELETE FROM onceq_batch_tasks WHERE batch = :name;

-- name: batch_slots_delete
DELETE FROM onceq_batch_slots WHERE batch = :name;

-- name: batch_task_insert
-- A task of the file; one that exists keeps its progress (a batch run again resumes).
INSERT INTO onceq_batch_tasks (batch, number, title, batch_no, position, branch, updated_at)
VALUES (:name, :number, :title, :batch_no, :position, :branch, :now)
ON CONFLICT (batch, number) DO UPDATE
SET title = excluded.title, batch_no = excluded.batch_no, position = excluded.position;

-- name: batch_tasks_reopen
-- A new run of the batch: every task not merged starts over (its history stays in the
-- attempts of the run before).
UPDATE onceq_batch_tasks
SET status = 'pending', rounds = 0, start = NULL, feedback = NULL, error = NULL,
    verified = NULL, started_at = NULL, updated_at = :now
WHERE batch = :name AND status <> 'merged';

-- name: batch_tasks
SELECT * FROM onceq_batch_tasks WHERE batch = :name ORDER BY batch_no, position;

-- name: batch_task_update
-- Where a task stands, written by the job that runs it (the caller checked its lease in
-- this transaction first).
UPDATE onceq_batch_tasks
SET status = :status, rounds = :rounds, worktree = :worktree, start = :start,
    verified = :verified, feedback = :feedback, error = :error, merged_as = :merged_as,
    started_at = coalesce(started_at, :now),
    merged_at = CASE WHEN :status = 'merged' THEN coalesce(merged_at, :now) ELSE merged_at END,
    updated_at = :now
WHERE batch = :name AND number = :number;

-- name: job_lease_live
-- Whether a job still runs under this lease, as a job of the batch's current run (the
-- fence of every batch write: a job of a run that was cancelled, or of a batch made
-- again under the same name, writes nothing).
SELECT 1 AS live FROM onceq_jobs j JOIN onceq_batches b ON b.name = :name AND b.run_id = j.run_id
WHERE j.id = :job_id AND j.status = 'running' AND j.lease_token = :token;

-- name: batch_slot_insert
INSERT INTO onceq_batch_slots (batch, slot, path) VALUES (:name, :slot, :path)
ON CONFLICT (batch, slot) DO NOTHING;

-- name: batch_slots
-- The pool, with whether each slot's holder still holds it.
SELECT s.slot, s.path, s.job_id, s.token, j.id IS NOT NULL AS live
FROM onceq_batch_slots s
LEFT JOIN onceq_jobs j ON j.id = s.job_id AND j.status = 'running' AND j.lease_token = s.token
WHERE s.batch = :name ORDER BY s.slot;

-- name: batch_slot_hold
UPDATE onceq_batch_slots SET job_id = :job_id, token = :token WHERE batch = :name AND slot = :slot;

-- name: batch_slot_free
UPDATE onceq_batch_slots SET job_id = NULL, token = NULL
WHERE batch = :name AND slot = :slot AND job_id = :job_id AND token = :token;

-- name: batch_merge_holder
-- Who has the merge queue's turn, and whether that lease still holds it.
SELECT b.merge_job, b.merge_token, j.id IS NOT NULL AS live
FROM onceq_batches b
LEFT JOIN onceq_jobs j ON j.id = b.merge_job AND j.status = 'running'
                      AND j.lease_token = b.merge_token
WHERE b.name = :name;

-- name: batch_merge_hold
UPDATE onceq_batches SET merge_job = :job_id, merge_token = :token WHERE name = :name;

-- name: batch_merge_free
UPDATE onceq_batches SET merge_job = NULL, merge_token = NULL
WHERE name = :name AND merge_job = :job_id AND merge_token = :token;

-- name: batch_tasks_settle
-- Once the batch's run has ended: a task stopped half way (its job spent its attempts,
-- or the run was cancelled) is failed with the run's reason; one never started says why.
UPDATE onceq_batch_tasks
SET status = CASE WHEN status = 'pending' THEN status ELSE 'failed' END,
    error = coalesce(error, CASE WHEN status = 'pending' THEN :skipped ELSE :reason END),
    updated_at = :now
WHERE batch = :name AND status NOT IN ('merged', 'failed');

-- name: batch_task_delete
-- A task that is no longer in the batch's file (and was never merged).
DELETE FROM onceq_batch_tasks WHERE batch = :name AND number = :number;
