-- onceq schema v2 for PostgreSQL: a fan-out's items one row each, with the job arguments
-- of each item resolved when the step starts. A dispatch then reads its own item's row
-- instead of decoding the whole list (and the run's input) on every completion: 7 ms
-- per completion at 500 items and 42 ms at 8,000 before. onceq_steps.items is still
-- written, for workers of v1 still running during an upgrade, but no longer read; steps
-- that were running during the upgrade have their lists moved here by the engine the
-- first time it needs one of their items.

CREATE TABLE onceq_step_items (
    run_id bigint NOT NULL,
    step   text NOT NULL,
    item   integer NOT NULL,
    args   json,  -- the item's job arguments, or why they could not be resolved:
    error  text,
    CHECK ((args IS NULL) <> (error IS NULL)),
    PRIMARY KEY (run_id, step, item),
    FOREIGN KEY (run_id, step) REFERENCES onceq_steps (run_id, step) ON DELETE CASCADE
);

-- Which claim took a job (a random number per claim call): after a claim whose answer
-- was lost, its worker adopts exactly the jobs that claim took, and nothing else.
ALTER TABLE onceq_jobs ADD COLUMN claim bigint;
