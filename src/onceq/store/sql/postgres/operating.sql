-- What keeps a store running for months, PostgreSQL dialect: the worker registry,
-- periodic ticks, retention, concurrency slots. sqlite/operating.sql defines the same
-- names (a test checks it). Params are named (%(name)s); times are the database's now().

-- name: worker_register
-- A worker's row, made or made again (a row that expired while its worker was paused
-- comes back at its next beat).
-- (started_at is the worker's own clock: when its process started.)
INSERT INTO onceq_workers (name, host, pid, queues, concurrency, version, started_at,
                           expires_at)
VALUES (%(name)s, %(host)s, %(pid)s, %(queues)s::json, %(concurrency)s, %(version)s,
        %(started_at)s, now() + make_interval(secs => %(ttl)s))
ON CONFLICT (name) DO UPDATE
SET host = excluded.host, pid = excluded.pid, queues = excluded.queues,
    concurrency = excluded.concurrency, version = excluded.version,
    last_seen = now(), expires_at = excluded.expires_at;

-- name: worker_seen
-- A beat of the workers in %(names)s (a JSON array); returns those that have a row.
UPDATE onceq_workers
SET last_seen = now(), expires_at = now() + make_interval(secs => %(ttl)s)
WHERE name IN (SELECT json_array_elements_text(%(names)s::json))
RETURNING name;

-- name: worker_unregister
DELETE FROM onceq_workers WHERE name = %(name)s;

-- name: worker_expire
-- Rows whose worker stopped beating (it died, or is paused past its own expiry).
DELETE FROM onceq_workers WHERE expires_at < now() RETURNING name;

-- name: worker_list
SELECT name, host, pid, queues, concurrency, version, started_at, last_seen
FROM onceq_workers ORDER BY started_at, name;

-- Retention: each statement deletes at most `limit` rows, oldest first, of what
-- finished more than `older_than` seconds ago, so one transaction of it holds few row
-- locks, briefly. SKIP LOCKED: rows another pruner holds are its to delete.

-- name: prune_unfolded
-- Whether a job old enough to prune is above the totals' mark (not folded yet):
-- retention folds only then. Read after the batches before it deleted every folded one,
-- so what it walks is short.
SELECT (EXISTS (
    SELECT 1 FROM onceq_jobs
    WHERE run_id IS NULL AND finished_at IS NOT NULL AND finished_at < now() - make_interval(secs => %(older_than)s)
      AND id > (SELECT folded_to FROM onceq_stats_mark)
) OR EXISTS (
    SELECT 1 FROM onceq_runs AS r JOIN onceq_jobs AS j ON j.run_id = r.id
    WHERE r.finished_at IS NOT NULL AND r.finished_at < now() - make_interval(secs => %(older_than)s)
      AND j.id > (SELECT folded_to FROM onceq_stats_mark)
)) AS needed;

-- name: job_prune
-- Finished jobs outside workflow runs, with their attempts (ON DELETE CASCADE), counted
-- by queue, task and status for the counters (Store._pruned). Only jobs the totals have
-- folded (at or below the mark, not open: store/stats.py).
WITH doomed AS (
    SELECT id FROM onceq_jobs
    WHERE run_id IS NULL AND finished_at IS NOT NULL
      AND finished_at < now() - make_interval(secs => %(older_than)s)
      AND status IN ('succeeded', 'failed', 'cancelled')
      AND id <= (SELECT folded_to FROM onceq_stats_mark)
      AND NOT EXISTS (SELECT 1 FROM onceq_stats_open AS o WHERE o.job_id = onceq_jobs.id)
    ORDER BY finished_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM onceq_jobs AS j USING doomed WHERE j.id = doomed.id
    RETURNING j.queue, j.task, j.status
)
SELECT queue, task, status, count(*)::int AS n FROM gone GROUP BY queue, task, status;

-- name: run_jobs_prune
-- The finished jobs of workflow runs that ended that long ago (a job still running in
-- a cancelled run stays until it has finished), folded ones only, as job_prune.
WITH doomed AS (
    SELECT j.id FROM onceq_runs AS r JOIN onceq_jobs AS j ON j.run_id = r.id
    WHERE r.finished_at IS NOT NULL
      AND r.finished_at < now() - make_interval(secs => %(older_than)s)
      AND j.status IN ('succeeded', 'failed', 'cancelled')
      AND j.id <= (SELECT folded_to FROM onceq_stats_mark)
      AND NOT EXISTS (SELECT 1 FROM onceq_stats_open AS o WHERE o.job_id = j.id)
    LIMIT %(limit)s
    FOR UPDATE OF j SKIP LOCKED
), gone AS (
    DELETE FROM onceq_jobs AS j USING doomed WHERE j.id = doomed.id
    RETURNING j.queue, j.task, j.status
)
SELECT queue, task, status, count(*)::int AS n FROM gone GROUP BY queue, task, status;

-- name: step_items_prune
-- The fan-out items of those runs (a large fan-out goes in several transactions).
WITH doomed AS (
    SELECT i.ctid AS row FROM onceq_runs AS r JOIN onceq_step_items AS i ON i.run_id = r.id
    WHERE r.finished_at IS NOT NULL
      AND r.finished_at < now() - make_interval(secs => %(older_than)s)
    LIMIT %(limit)s
    FOR UPDATE OF i SKIP LOCKED
)
DELETE FROM onceq_step_items WHERE ctid IN (SELECT row FROM doomed);

-- name: run_prune
-- Runs that ended that long ago and have no job left (their steps go with them). Job
-- rows were locked before, in their own statement: the lock order stays jobs, then runs.
WITH doomed AS (
    SELECT id FROM onceq_runs AS r
    WHERE finished_at IS NOT NULL
      AND finished_at < now() - make_interval(secs => %(older_than)s)
      AND NOT EXISTS (SELECT 1 FROM onceq_jobs AS j WHERE j.run_id = r.id)
    ORDER BY finished_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM onceq_runs AS r USING doomed WHERE r.id = doomed.id RETURNING r.id;

-- name: maintenance_insert
INSERT INTO onceq_maintenance (name) VALUES (%(name)s) ON CONFLICT (name) DO NOTHING;

-- name: maintenance_take
-- The duty for %(holder)s if it holds it already (its lease is extended), or if it is
-- due and nobody holds it (or its holder's lease has run out: that holder died).
UPDATE onceq_maintenance
SET holder = %(holder)s,
    lease_expires_at = now() + make_interval(secs => %(lease)s),
    started_at = CASE WHEN holder = %(holder)s THEN started_at ELSE now() END
WHERE name = %(name)s
  AND (holder = %(holder)s
       OR (due_at <= now() AND (holder IS NULL OR lease_expires_at < now())))
RETURNING name;

-- name: maintenance_done
-- A pass is over: due again in %(every)s seconds. (Only by its holder.)
UPDATE onceq_maintenance
SET holder = NULL, lease_expires_at = NULL,
    due_at = now() + make_interval(secs => %(every)s), finished_at = now()
WHERE name = %(name)s AND holder = %(holder)s;

-- Periodic ticks.

-- name: periodic_register
-- A periodic task's row, made the first time a worker knows it (its ticks count from
-- then), its schedule updated after; returns where it stands.
INSERT INTO onceq_periodic (name, spec) VALUES (%(name)s, %(spec)s::json)
ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, seen_at = now()
RETURNING name, last_tick, created_at;

-- name: periodic_advance
-- Compare-and-set: the task's last tick becomes %(tick)s only if it was earlier. No row:
-- this tick (or a later one) was enqueued already, by this worker or another. (Two
-- workers at once: the second waits for the first's row lock, then finds the new tick.)
UPDATE onceq_periodic SET last_tick = %(tick)s
WHERE name = %(name)s AND (last_tick IS NULL OR last_tick < %(tick)s)
RETURNING name;

-- name: periodic_set_job
UPDATE onceq_periodic SET last_job = %(job_id)s WHERE name = %(name)s;

-- name: periodic_last_tick
SELECT last_tick FROM onceq_periodic WHERE name = %(name)s;

-- name: periodic_list
SELECT p.name, p.spec, p.last_tick, p.last_job, p.created_at, p.seen_at,
       j.status AS last_status
FROM onceq_periodic AS p LEFT JOIN onceq_jobs AS j ON j.id = p.last_job
ORDER BY p.name;

-- Concurrency limits per key. A keyed job runs only while holding a slot row: one of
-- the numbers 0..limit-1 of its key, under the primary key, bound to its lease (job id
-- and token). Two claims of the same slot at once: the second one's insert waits for
-- the first and then inserts nothing (ON CONFLICT DO NOTHING), so its job stays
-- pending — never more than `limit` jobs of a key run.

-- name: slot_reap
-- Slots whose job no longer runs under their token (it ended, was rescued, re-claimed
-- or cancelled: once so, never again) are free: their rows go. (A slot row is visible
-- only with its claim committed, job and all, so "not running" here is never a claim
-- still in flight.) SKIP LOCKED: a row another claim is reaping is its to delete.
WITH dead AS (
    SELECT s.key, s.slot FROM onceq_concurrency_slots AS s
    WHERE NOT EXISTS (SELECT 1 FROM onceq_jobs AS j
                      WHERE j.id = s.job_id AND j.lease_token = s.token
                        AND j.status = 'running')
    FOR UPDATE OF s SKIP LOCKED
)
DELETE FROM onceq_concurrency_slots AS s USING dead
WHERE s.key = dead.key AND s.slot = dead.slot;

-- name: job_claim_keyed
-- Moves up to %(limit)s due keyed jobs of these queues (%(queues)s, a JSON array; NULL:
-- all but the reserved ones) to running, each with a slot of its key, in one
-- statement. Jobs whose key is at its limit are stepped over, so the other keys' jobs
-- behind them are not held up; among the first %(scan)s candidates, the n-th job of a
-- key tries that key's n-th free slot number. Only the jobs whose slot insert went in
-- are claimed. The slots go in ordered by (key, slot), the same order in every claim,
-- so two claims waiting on each other's inserts cannot deadlock. As job_claim, no
-- attempt record: the running attempt lives on the job row.
WITH cand AS MATERIALIZED (
    SELECT j.id, j.concurrency_key AS key, j.concurrency_limit AS lim, j.lease_token,
           j.priority, j.run_at
    FROM onceq_jobs AS j
    WHERE j.status = 'pending' AND j.concurrency_key IS NOT NULL AND j.run_at <= now()
      AND (%(queues)s::json IS NULL AND left(j.queue, 6) <> 'onceq.'
           OR j.queue IN (SELECT json_array_elements_text(%(queues)s::json)))
      AND (SELECT count(*) FROM onceq_concurrency_slots AS s
           WHERE s.key = j.concurrency_key) < j.concurrency_limit
    ORDER BY j.priority DESC, j.run_at, j.id
    LIMIT %(scan)s
    FOR UPDATE OF j SKIP LOCKED
), ranked AS (
    SELECT cand.*, row_number() OVER (PARTITION BY key ORDER BY priority DESC, run_at, id) AS n
    FROM cand
), keys AS (
    -- The numbers a key's candidates may get: the first ones free are below the slots
    -- it holds plus its candidates, so no more are made (not its limit: a limit of a
    -- million would make a million numbers per claim).
    SELECT c.key, least(max(c.lim), count(*) + (SELECT count(*) FROM onceq_concurrency_slots
                                                 AS s WHERE s.key = c.key)) AS top
    FROM cand AS c GROUP BY c.key
), free AS (
    SELECT k.key, s.slot, row_number() OVER (PARTITION BY k.key ORDER BY s.slot) AS n
    FROM keys AS k
    CROSS JOIN LATERAL generate_series(0, k.top - 1) AS s (slot)
    WHERE NOT EXISTS (SELECT 1 FROM onceq_concurrency_slots AS x
                      WHERE x.key = k.key AND x.slot = s.slot)
), chosen AS (
    SELECT r.key, f.slot, r.id, r.lease_token + 1 AS token
    FROM ranked AS r JOIN free AS f ON f.key = r.key AND f.n = r.n AND f.slot < r.lim
    ORDER BY r.priority DESC, r.run_at, r.id
    LIMIT %(limit)s
), held AS (
    INSERT INTO onceq_concurrency_slots (key, slot, job_id, token)
    SELECT key, slot, id, token FROM chosen ORDER BY key, slot
    ON CONFLICT DO NOTHING
    RETURNING job_id
), claimed AS (
    UPDATE onceq_jobs AS j
    SET status = 'running', attempts = j.attempts + 1, lease_token = j.lease_token + 1,
        lease_expires_at = clock_timestamp() + make_interval(secs => %(lease)s),
        worker = %(worker)s, started_at = clock_timestamp(), claim = %(claim)s
    FROM held
    WHERE j.id = held.job_id AND j.status = 'pending'
    RETURNING j.id, j.lease_token AS token, j.status, j.run_id, j.step, j.item, j.task,
              j.args, j.queue, j.attempts, j.max_attempts, j.priority, j.run_at
)
SELECT 'claimed' AS kind, id, token, status, run_id, step, item, task, args, queue,
       attempts, max_attempts, priority, run_at, false AS replayed
FROM claimed;
