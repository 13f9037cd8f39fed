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
