-- What keeps a store running for months, SQLite dialect: the worker registry, periodic
-- ticks, retention, concurrency slots. postgres/operating.sql defines the same names (a
-- test checks it). Times are REAL unix seconds passed in as :now.

-- name: worker_register
-- A worker's row, made or made again (a row that expired while its worker was paused
-- comes back at its next beat).
INSERT INTO onceq_workers (name, host, pid, queues, concurrency, version, started_at,
                           last_seen, expires_at)
VALUES (:name, :host, :pid, :queues, :concurrency, :version, :started_at, :now,
        :now + :ttl)
ON CONFLICT (name) DO UPDATE
SET host = excluded.host, pid = excluded.pid, queues = excluded.queues,
    concurrency = excluded.concurrency, version = excluded.version,
    last_seen = :now, expires_at = excluded.expires_at;

-- name: worker_seen
-- A beat of the workers in :names (a JSON array); returns those that have a row.
UPDATE onceq_workers SET last_seen = :now, expires_at = :now + :ttl
WHERE name IN (SELECT value FROM json_each(:names))
RETURNING name;

-- name: worker_unregister
DELETE FROM onceq_workers WHERE name = :name;

-- name: worker_expire
-- Rows whose worker stopped beating (it died, or is paused past its own expiry).
DELETE FROM onceq_workers WHERE expires_at < :now RETURNING name;

-- name: worker_list
SELECT name, host, pid, queues, concurrency, version, started_at, last_seen
FROM onceq_workers ORDER BY started_at, name;

-- Retention: each statement deletes at most `limit` rows, oldest first, of what finished
-- more than `older_than` seconds ago, so one transaction of it holds the file briefly.

-- name: prune_unfolded
-- Whether a job old enough to prune is above the totals' mark (not folded yet):
-- retention folds only then. Read after the batches before it deleted every folded one,
-- so what it walks is short.
SELECT (EXISTS (
    SELECT 1 FROM onceq_jobs
    WHERE run_id IS NULL AND finished_at IS NOT NULL AND finished_at < :now - :older_than
      AND id > (SELECT folded_to FROM onceq_stats_mark)
) OR EXISTS (
    SELECT 1 FROM onceq_runs AS r JOIN onceq_jobs AS j ON j.run_id = r.id
    WHERE r.finished_at IS NOT NULL AND r.finished_at < :now - :older_than
      AND j.id > (SELECT folded_to FROM onceq_stats_mark)
)) AS needed;

-- name: job_prune
-- Finished jobs outside workflow runs, with their attempts (ON DELETE CASCADE). One row
-- per job deleted, for the counters (Store._pruned). (PostgreSQL returns them counted.)
-- Only jobs the totals have folded (at or below the mark, not open: store/stats.py).
DELETE FROM onceq_jobs WHERE id IN (
    SELECT id FROM onceq_jobs
    WHERE run_id IS NULL AND finished_at IS NOT NULL AND finished_at < :now - :older_than
      AND status IN ('succeeded', 'failed', 'cancelled')
      AND id <= (SELECT folded_to FROM onceq_stats_mark)
      AND NOT EXISTS (SELECT 1 FROM onceq_stats_open AS o WHERE o.job_id = onceq_jobs.id)
    ORDER BY finished_at LIMIT :limit)
RETURNING queue, task, status, 1 AS n;

-- name: run_jobs_prune
-- The finished jobs of workflow runs that ended that long ago (a job still running in
-- a cancelled run stays until it has finished), folded ones only, as job_prune.
DELETE FROM onceq_jobs WHERE id IN (
    SELECT j.id FROM onceq_runs AS r JOIN onceq_jobs AS j ON j.run_id = r.id
    WHERE r.finished_at IS NOT NULL AND r.finished_at < :now - :older_than
      AND j.status IN ('succeeded', 'failed', 'cancelled')
      AND j.id <= (SELECT folded_to FROM onceq_stats_mark)
      AND NOT EXISTS (SELECT 1 FROM onceq_stats_open AS o WHERE o.job_id = j.id)
    LIMIT :limit)
RETURNING queue, task, status, 1 AS n;

-- name: step_items_prune
-- The fan-out items of those runs (a large fan-out goes in several transactions).
DELETE FROM onceq_step_items WHERE (run_id, step, item) IN (
    SELECT i.run_id, i.step, i.item FROM onceq_runs AS r
    JOIN onceq_step_items AS i ON i.run_id = r.id
    WHERE r.finished_at IS NOT NULL AND r.finished_at < :now - :older_than
    LIMIT :limit);

-- name: run_prune
-- Runs that ended that long ago and have no job left (their steps go with them).
DELETE FROM onceq_runs WHERE id IN (
    SELECT id FROM onceq_runs AS r
    WHERE finished_at IS NOT NULL AND finished_at < :now - :older_than
      AND NOT EXISTS (SELECT 1 FROM onceq_jobs AS j WHERE j.run_id = r.id)
    ORDER BY finished_at LIMIT :limit)
RETURNING id;

-- name: maintenance_insert
INSERT INTO onceq_maintenance (name, due_at) VALUES (:name, :now) ON CONFLICT (name) DO NOTHING;

-- name: maintenance_take
-- The duty for :holder if it holds it already (its lease is extended), or if it is due
-- and nobody holds it (or its holder's lease has run out: that holder died).
UPDATE onceq_maintenance
SET holder = :holder, lease_expires_at = :now + :lease,
    started_at = CASE WHEN holder IS :holder THEN started_at ELSE :now END
WHERE name = :name
  AND (holder IS :holder
       OR (due_at <= :now AND (holder IS NULL OR lease_expires_at < :now)))
RETURNING name;

-- name: maintenance_done
-- A pass is over: due again in :every seconds. (Only by its holder.)
UPDATE onceq_maintenance
SET holder = NULL, lease_expires_at = NULL, due_at = :now + :every, finished_at = :now
WHERE name = :name AND holder IS :holder;

-- Periodic ticks.

-- name: periodic_register
-- A periodic task's row, made the first time a worker knows it (its ticks count from
-- then), its schedule updated after; returns where it stands.
INSERT INTO onceq_periodic (name, spec, created_at, seen_at) VALUES (:name, :spec, :now, :now)
ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, seen_at = :now
RETURNING name, last_tick, created_at;

-- name: periodic_advance
-- Compare-and-set: the task's last tick becomes :tick only if it was earlier. No row:
-- this tick (or a later one) was enqueued already, by this worker or another.
UPDATE onceq_periodic SET last_tick = :tick
WHERE name = :name AND (last_tick IS NULL OR last_tick < :tick)
RETURNING name;

-- name: periodic_set_job
UPDATE onceq_periodic SET last_job = :job_id WHERE name = :name;

-- name: periodic_last_tick
SELECT last_tick FROM onceq_periodic WHERE name = :name;

-- name: periodic_list
SELECT p.name, p.spec, p.last_tick, p.last_job, p.created_at, p.seen_at,
       j.status AS last_status
FROM onceq_periodic AS p LEFT JOIN onceq_jobs AS j ON j.id = p.last_job
ORDER BY p.name;

-- SQLite upkeep (PostgreSQL needs none of it). Run outside any transaction.

-- name: wal_checkpoint_passive
-- Copies what it can of the WAL into the database file without waiting for anyone.
-- Returns (busy, WAL pages, pages copied).
PRAGMA wal_checkpoint(PASSIVE);

-- name: wal_checkpoint_truncate
-- Copies the whole WAL and truncates it to zero bytes; waits (the busy timeout) for
-- readers and writers, so it runs only when the worker is idle.
PRAGMA wal_checkpoint(TRUNCATE);

-- Concurrency limits per key. A keyed job runs only while holding a slot row: one of
-- the numbers 0..limit-1 of its key, under the primary key, bound to its lease (job id
-- and token). The three statements of a keyed claim run in one BEGIN IMMEDIATE
-- transaction: the only writer, so what slot_take counts stays true until the commit.
-- (PostgreSQL takes the slots and the jobs in one statement: it has data-modifying
-- CTEs.)

-- name: slot_reap
-- Slots whose job no longer runs under their token (it ended, was rescued, re-claimed
-- or cancelled: once so, never again) are free: their rows go.
DELETE FROM onceq_concurrency_slots
WHERE NOT EXISTS (SELECT 1 FROM onceq_jobs AS j
                  WHERE j.id = onceq_concurrency_slots.job_id
                    AND j.lease_token = onceq_concurrency_slots.token
                    AND j.status = 'running');

-- name: slot_take
-- Slots for up to :limit due keyed jobs of these queues (:queues, a JSON array; NULL:
-- all but the reserved ones), in claim order. Jobs whose key is at its limit are
-- stepped over, so the other keys' jobs behind them are not held up; among the first
-- :scan candidates, the n-th job of a key gets that key's n-th free slot number. The
-- token is the one the claim will give the job (job_claim_keyed).
WITH RECURSIVE cand AS (
    SELECT j.id, j.concurrency_key AS key, j.concurrency_limit AS lim, j.lease_token,
           j.priority, j.run_at
    FROM onceq_jobs AS j
    WHERE j.status = 'pending' AND j.concurrency_key IS NOT NULL AND j.run_at <= :now
      AND (:queues IS NULL AND substr(j.queue, 1, 6) <> 'onceq.'
           OR j.queue IN (SELECT value FROM json_each(:queues)))
      AND (SELECT count(*) FROM onceq_concurrency_slots AS s
           WHERE s.key = j.concurrency_key) < j.concurrency_limit
    ORDER BY j.priority DESC, j.run_at, j.id
    LIMIT :scan
), ranked AS (
    SELECT cand.*, row_number() OVER (PARTITION BY key ORDER BY priority DESC, run_at, id) AS n
    FROM cand
), keys AS (
    -- The numbers a key's candidates may get: the first ones free are below the slots
    -- it holds plus its candidates, so no more are made (not its limit: a limit of a
    -- million would make a million numbers per claim, under the write lock).
    SELECT c.key, min(max(c.lim), count(*) + (SELECT count(*) FROM onceq_concurrency_slots
                                               AS s WHERE s.key = c.key)) AS top
    FROM cand AS c GROUP BY c.key
), numbers (slot) AS (
    SELECT 0 UNION ALL SELECT slot + 1 FROM numbers WHERE slot + 1 < (SELECT max(top) FROM keys)
), free AS (
    SELECT k.key, numbers.slot,
           row_number() OVER (PARTITION BY k.key ORDER BY numbers.slot) AS n
    FROM keys AS k
    JOIN numbers ON numbers.slot < k.top
    WHERE NOT EXISTS (SELECT 1 FROM onceq_concurrency_slots AS x
                      WHERE x.key = k.key AND x.slot = numbers.slot)
)
INSERT INTO onceq_concurrency_slots (key, slot, job_id, token)
SELECT r.key, f.slot, r.id, r.lease_token + 1
FROM ranked AS r JOIN free AS f ON f.key = r.key AND f.n = r.n AND f.slot < r.lim
ORDER BY r.priority DESC, r.run_at, r.id
LIMIT :limit;

-- name: job_claim_keyed
-- The keyed jobs slot_take just gave a slot (a pending job whose slot holds the token
-- its claim is about to give it) move to running, as job_claim does for plain ones.
UPDATE onceq_jobs AS j
SET status = 'running', attempts = attempts + 1, lease_token = lease_token + 1,
    lease_expires_at = :now + :lease, worker = :worker, started_at = :now, claim = :claim
FROM onceq_concurrency_slots AS s
WHERE s.job_id = j.id AND s.token = j.lease_token + 1 AND +j.status = 'pending'
RETURNING id, lease_token, task, args, queue, attempts, max_attempts, run_id, step, item,
          priority, run_at, lease_token AS token, status;
