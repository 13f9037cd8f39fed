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

-- Duties one worker at a time does for all (a retention pass): a row each, leased to
-- its holder while it works, due again `every` seconds after its last pass ended.
CREATE TABLE onceq_maintenance (
    name             text PRIMARY KEY,
    holder           text,
    lease_expires_at timestamptz,
    due_at           timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz
);

-- Retention finds what to delete, oldest first, without reading anything else: the
-- finished jobs outside workflow runs, and the finished runs (their jobs are found
-- through onceq_jobs_dispatch).
CREATE INDEX onceq_jobs_finished ON onceq_jobs (finished_at)
    WHERE run_id IS NULL AND finished_at IS NOT NULL;
CREATE INDEX onceq_runs_finished ON onceq_runs (finished_at) WHERE finished_at IS NOT NULL;

-- Periodic tasks: a row per task with a schedule. `last_tick` is the latest tick
-- enqueued and only moves forward, by compare-and-set in the transaction that inserts
-- the tick's job: a tick at or before it is never enqueued again, even once its job
-- (and so its unique key) has been pruned. A new schedule's first tick is the first
-- one after `created_at`.
CREATE TABLE onceq_periodic (
    name       text PRIMARY KEY,  -- the task's name
    spec       json NOT NULL,     -- its schedule: {"every": s} or {"cron", "timezone"}, catch_up
    last_tick  timestamptz,
    last_job   bigint,            -- that tick's job (pruned jobs leave the id behind)
    created_at timestamptz NOT NULL DEFAULT now(),
    seen_at    timestamptz NOT NULL DEFAULT now()  -- last registered by a worker
);

-- Concurrency limits per key: a job enqueued with a key and a limit N runs only while
-- fewer than N jobs of its key run, across every worker. Slot rows make it so: a
-- keyed claim holds one of the numbers 0..N-1 of its key under the unique primary key
-- (a second claim of the same slot inserts nothing), bound to the job's lease (id and
-- token): the slot is free once that job no longer runs under that token (it ended, was
-- rescued, re-claimed or cancelled) and such dead rows are removed at the next keyed
-- claim. Plain claims never take a keyed job.
ALTER TABLE onceq_jobs ADD COLUMN concurrency_key text;
ALTER TABLE onceq_jobs ADD COLUMN concurrency_limit integer
    CHECK (concurrency_limit IS NULL OR concurrency_limit >= 1);
CREATE INDEX onceq_jobs_claim_keyed ON onceq_jobs (priority DESC, run_at, id)
    WHERE status = 'pending' AND concurrency_key IS NOT NULL;

CREATE TABLE onceq_concurrency_slots (
    key    text NOT NULL,
    slot   integer NOT NULL,
    job_id bigint NOT NULL,
    token  bigint NOT NULL,
    PRIMARY KEY (key, slot)
);
