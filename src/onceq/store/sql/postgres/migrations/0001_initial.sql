-- onceq schema v1 for PostgreSQL. Times are timestamptz from the database clock.
-- Status is text under a CHECK, so a wrong value is refused by the database itself.
-- Payloads and results are `json`, not `jsonb`: kept byte-exact (key order, \u0000
-- escapes) and cheaper to write; onceq never queries inside them.

CREATE TABLE onceq_runs (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    definition  json NOT NULL,
    input       json NOT NULL,
    status      text NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

CREATE TABLE onceq_steps (
    run_id      bigint NOT NULL REFERENCES onceq_runs (id) ON DELETE CASCADE,
    step        text NOT NULL,
    status      text NOT NULL DEFAULT 'waiting'
                CHECK (status IN ('waiting', 'running', 'succeeded', 'failed', 'cancelled', 'skipped')),
    -- the resolved with_items list (NULL for a plain step), fixed when the step starts
    items       json,
    total       integer,
    error       text,
    started_at  timestamptz,
    finished_at timestamptz,
    PRIMARY KEY (run_id, step)
);

CREATE TABLE onceq_jobs (
    id               bigserial PRIMARY KEY,
    queue            text NOT NULL,
    task             text NOT NULL,
    args             json NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         integer NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL DEFAULT now(),
    key              text UNIQUE,
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     integer NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
    -- the fencing token: bumped by every claim, required by every write of the holder
    lease_token      bigint NOT NULL DEFAULT 0,
    lease_expires_at timestamptz,
    worker           text,
    result           json,
    last_error       text,
    last_traceback   text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    run_id           bigint REFERENCES onceq_runs (id) ON DELETE CASCADE,
    step             text,
    item             integer,
    -- a job holds a lease exactly when it is running
    CHECK ((status = 'running') = (lease_expires_at IS NOT NULL)),
    CHECK ((run_id IS NULL) = (step IS NULL) AND (run_id IS NULL) = (item IS NULL))
);

-- claim order: priority (high first), then run_at, then id
CREATE INDEX onceq_jobs_claim_queue ON onceq_jobs (queue, priority DESC, run_at, id)
    WHERE status = 'pending';
CREATE INDEX onceq_jobs_claim_any ON onceq_jobs (priority DESC, run_at, id)
    WHERE status = 'pending';
CREATE INDEX onceq_jobs_lease ON onceq_jobs (lease_expires_at) WHERE status = 'running';
-- the dispatch-once guard of workflows: one job per (run, step, item), ever
CREATE UNIQUE INDEX onceq_jobs_dispatch ON onceq_jobs (run_id, step, item)
    WHERE run_id IS NOT NULL;
-- what remains of a step, counted without reading its finished jobs
CREATE INDEX onceq_jobs_step_status ON onceq_jobs (run_id, step, status)
    WHERE run_id IS NOT NULL;

CREATE TABLE onceq_attempts (
    job_id     bigint NOT NULL REFERENCES onceq_jobs (id) ON DELETE CASCADE,
    token      bigint NOT NULL,
    attempt    integer NOT NULL,
    worker     text NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz,
    outcome    text CHECK (outcome IS NULL OR outcome IN (
                   'succeeded', 'failed', 'retried', 'lease_expired', 'released',
                   'worker_died', 'cancelled')),
    error      text,
    -- stale writes refused for this lease, e.g. 'heartbeat,complete'
    rejected   text,
    PRIMARY KEY (job_id, token)
);
