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

-- name: job_prune
-- Finished jobs outside workflow runs, with their attempts (ON DELETE CASCADE). One row
-- per job deleted, for the counters (Store._pruned). (PostgreSQL returns them counted.)
DELETE FROM onceq_jobs WHERE id IN (
    SELECT id FROM onceq_jobs
    WHERE run_id IS NULL AND finished_at IS NOT NULL AND finished_at < :now - :older_than
      AND status IN ('succeeded', 'failed', 'cancelled')
    ORDER BY finished_at LIMIT :limit)
RETURNING queue, task, status, 1 AS n;

-- name: run_jobs_prune
-- The finished jobs of workflow runs that ended that long ago (a job still running in
-- a cancelled run stays until it has finished).
DELETE FROM onceq_jobs WHERE id IN (
    SELECT j.id FROM onceq_runs AS r JOIN onceq_jobs AS j ON j.run_id = r.id
    WHERE r.finished_at IS NOT NULL AND r.finished_at < :now - :older_than
      AND j.status IN ('succeeded', 'failed', 'cancelled')
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
