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
