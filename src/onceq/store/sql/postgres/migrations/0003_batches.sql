-- Schema v3: code-task batches. A batch's tasks run as jobs of one workflow run (its
-- steps are the batch numbers, in order); these rows hold what git work each task is at.
-- The pool's worktrees and the merge queue's turn are leased to a job's lease (job id and
-- token): a holder whose job is no longer running under that token holds nothing.

CREATE TABLE onceq_batches (
    name        text PRIMARY KEY,
    repo        text NOT NULL,
    base        text NOT NULL,
    base_start  text NOT NULL,  -- the base's tip when the batch was made: history before it holds no task
    definition  json NOT NULL,
    run_id      bigint REFERENCES onceq_runs (id) ON DELETE SET NULL,
    merge_job   bigint,
    merge_token bigint,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE onceq_batch_tasks (
    batch      text NOT NULL REFERENCES onceq_batches (name) ON DELETE CASCADE,
    number     text NOT NULL,
    title      text NOT NULL,
    batch_no   integer NOT NULL,
    position   integer NOT NULL,   -- its place in the file
    status     text NOT NULL DEFAULT 'pending'
               CHECK (status IN ('pending', 'in_progress', 'pr_created', 'reviewing', 'fixing',
                                 'approved', 'merged', 'failed')),
    rounds     integer NOT NULL DEFAULT 0,
    branch     text NOT NULL,
    worktree   text,
    start      text,        -- the commit its current round started from
    verified   text,        -- the last verification's result, one line
    feedback   text,        -- what sent it back to its agent (output or conflict)
    error      text,        -- why it failed, or why it last left the merge queue
    merged_as  text,        -- the commit on the base that holds its change
    started_at  timestamptz,
    merged_at   timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch, number)
);

CREATE TABLE onceq_batch_slots (
    batch  text NOT NULL REFERENCES onceq_batches (name) ON DELETE CASCADE,
    slot   integer NOT NULL,
    path   text NOT NULL,
    job_id bigint,
    token  bigint,
    PRIMARY KEY (batch, slot)
);
