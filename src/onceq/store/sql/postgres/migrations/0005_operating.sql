-- Schema v5 for PostgreSQL: what keeps a store running for months. (Issue 12 was given
-- number 4; main had taken it by the time this branch was rebased.)

-- The worker registry: a row per live worker process, kept by its heartbeat, removed on
-- clean exit, and removed by any worker once `expires_at` (set by the worker itself at
-- each beat, from its own heartbeat period) has passed.
CREATE TABLE onceq_workers (
    name        text PRIMARY KEY,
    host        text NOT NULL,
    pid         integer NOT NULL,
    queues      json,              -- a JSON array of names; NULL: every unreserved queue
    concurrency integer NOT NULL,
    version     text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
