-- onceq job store queries, PostgreSQL dialect. Each statement sits under a `-- name:`
-- line; sqlite/queries.sql defines the same names (a test checks it).
-- Params are named (%(name)s). Times come from the database clock, so worker clock skew
-- cannot move a lease. A lease starts at clock_timestamp(), not now(): now() is when the
-- *transaction* began, and a claim made after its transaction waited (for a run's lock,
-- say) would get a lease stamped in the past — born expired, and overlapping in the
-- history the attempt that a rescue ended meanwhile. (Ends and rescues may use now():
-- an end stamped early, or a rescue that sees a little less, only errs on the safe side.)
-- Batches arrive as one JSON array (the same text the SQLite dialect reads with
-- json_each) and are read with json_array_elements: psycopg
-- would spend more time building the equivalent arrays than the server spends on them.
-- Where SQLite needs a second statement for the attempt records, these statements
-- write them in a data-modifying CTE: one round trip per worker write.
-- Lock order, to rule out deadlocks: job rows first, then the rows of the workflow runs
-- they touch, in run id order. A worker's batch writes cannot cross each other: its
-- heartbeat skips the rows its completion (or anything else) holds (SKIP LOCKED, and
-- says so), and the rest of its writes take turns on its dispatcher; a give-up, which
-- may meet a heartbeat of another worker's, locks its rows in id order.

-- name: schema_version
SELECT max(version) AS version FROM onceq_migrations;

-- name: migrations_table_exists
SELECT 1 WHERE to_regclass('onceq_migrations') IS NOT NULL;

-- name: migrations_table_create
CREATE TABLE IF NOT EXISTS onceq_migrations (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migration_record
INSERT INTO onceq_migrations (version) VALUES (%(version)s);

-- name: job_insert
-- One job; with a key that exists already, inserts nothing (the caller then reads it).
-- The NOTIFY wakes idle workers when the transaction commits.
WITH ins AS (
    INSERT INTO onceq_jobs (queue, task, args, priority, run_at, key, max_attempts,
                            run_id, step, item, concurrency_key, concurrency_limit)
    VALUES (%(queue)s, %(task)s, %(args)s::json, %(priority)s,
            coalesce(%(run_at)s::timestamptz, now() + make_interval(secs => %(delay)s)),
            %(key)s, %(max_attempts)s, %(run_id)s, %(step)s, %(item)s,
            %(concurrency_key)s, %(concurrency_limit)s)
    ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING
    RETURNING *)
SELECT ins.*, pg_notify(%(channel)s, ins.queue) FROM ins;

-- name: job_insert_many
-- Many jobs in one statement (SQLite loops on job_insert instead: no round trips there).
-- %(rows)s: [[queue, task, priority, run_at, delay, key, max_attempts, run_id, step,
-- item, concurrency_key, concurrency_limit], ...] and %(args)s: [payload, ...], matched
-- by position (payloads apart: see Store._results_param). Ids follow input order:
-- nextval runs as the ordered rows go in. The rows are read as jsonb: parsed once, where
-- each ->> on a json element parses its text again (twelve times a row: a third of the
-- statement's time at 5,000 rows).
INSERT INTO onceq_jobs (queue, task, args, priority, run_at, key, max_attempts,
                        run_id, step, item, concurrency_key, concurrency_limit)
SELECT m.e ->> 0, m.e ->> 1, a.e, (m.e ->> 2)::int,
       coalesce((m.e ->> 3)::timestamptz, now() + make_interval(secs => (m.e ->> 4)::float8)),
       m.e ->> 5, (m.e ->> 6)::int, (m.e ->> 7)::bigint, m.e ->> 8, (m.e ->> 9)::int,
       m.e ->> 10, (m.e ->> 11)::int
FROM jsonb_array_elements(%(rows)s::jsonb) WITH ORDINALITY AS m(e, n)
JOIN json_array_elements(%(args)s::json) WITH ORDINALITY AS a(e, n) USING (n)
ORDER BY n
ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING
RETURNING id, key;

-- name: job_ids_by_key
SELECT id, key FROM onceq_jobs WHERE key IN (SELECT json_array_elements_text(%(keys)s::json));

-- name: job_notify
SELECT pg_notify(%(channel)s, queue)
FROM json_array_elements_text(%(queues)s::json) AS queue GROUP BY queue;

-- name: job_wait_announce
-- A waiter (app.wait) tells the workers which job it waits for; the one that ends it
-- answers with job_done_notify. Nothing is written: waits cost nothing when nobody waits.
SELECT pg_notify(%(channel)s || '_wait', %(job_id)s::text);

-- name: job_done_notify
-- Jobs whose end a waiter announced: wake it (on commit; one notification per job).
SELECT pg_notify(%(channel)s || '_done', id)
FROM json_array_elements_text(%(ids)s::json) AS id;

-- name: search_path_swap
-- Inside the caller's own transaction (app.using): onceq's schema for our statements,
-- local to that transaction; the same statement puts the caller's search_path back.
SELECT current_setting('search_path') AS previous,
       set_config('search_path', %(path)s, true) AS now;

-- name: job_dispatch
-- A workflow job. The unique (run_id, step, item) index makes a second dispatch of the
-- same item impossible: it inserts nothing and returns no row.
WITH ins AS (
    INSERT INTO onceq_jobs (queue, task, args, priority, max_attempts, run_id, step, item)
    VALUES (%(queue)s, %(task)s, %(args)s::json, %(priority)s, %(max_attempts)s,
            %(run_id)s, %(step)s, %(item)s)
    ON CONFLICT (run_id, step, item) WHERE run_id IS NOT NULL DO NOTHING
    RETURNING id, queue)
SELECT ins.id, pg_notify(%(channel)s, ins.queue) FROM ins;

-- name: job_get
SELECT * FROM onceq_jobs WHERE id = %(job_id)s;

-- name: queue_purge
-- Deletes a queue's jobs (attempts go with them) and the workflow runs they belonged
-- to: what `onceq diagnose` leaves behind in its own queue.
DELETE FROM onceq_runs WHERE id IN (SELECT run_id FROM onceq_jobs WHERE queue = %(queue)s);

-- name: queue_purge_jobs
DELETE FROM onceq_jobs WHERE queue = %(queue)s;

-- name: queue_purge_ids
-- The jobs queue_purge deletes: the queue's, and every job of the runs they belong to
-- (the runs' deletion cascades to them), locked first: their totals are folded before.
SELECT id FROM onceq_jobs
WHERE queue = %(queue)s
   OR run_id IN (SELECT run_id FROM onceq_jobs WHERE queue = %(queue)s AND run_id IS NOT NULL)
ORDER BY id FOR UPDATE;

-- name: job_get_by_key
SELECT * FROM onceq_jobs WHERE key = %(key)s;

-- name: job_claim
-- One worker cycle in one statement: records the results of %(leases)s/%(results)s as
-- job_complete does (both `[]` for a claim alone), then moves up to %(limit)s due jobs of
-- any queue to running and returns them (`kind` 'claimed'), with the completions
-- (`kind` 'done'; `replayed` for one recorded before). Sent on its own (autocommit), a
-- worker's cycle is one round trip and one commit. Rows completed here are running and
-- rows claimed are pending in the statement's one snapshot: none is updated twice.
-- The locking SELECT is a CTE, not `IN (subquery)`: the planner may run the latter as a
-- nested loop that updates more rows than LIMIT (Oban's bug). SKIP LOCKED: rows another
-- claimer holds are not ours to wait for. The rows picked are then updated through the
-- primary key (`id = ANY (ARRAY(...))`, and a status re-check the planner cannot match
-- to the pending indexes): joined to `picked`, with statistics taken while few jobs
-- were pending (autovacuum's usual view of a queue), the planner walked every pending
-- job for each one picked — 200 ms a claim at 20,000 pending. A claim writes no attempt
-- record: the running attempt lives on the job row (token, worker, started_at) until it
-- ends.
WITH v AS (
    -- results in an array of their own, matched by position: see the note on
    -- Store._results_param
    SELECT (k.e ->> 0)::bigint AS id, (k.e ->> 1)::bigint AS token, r.e AS result
    FROM json_array_elements(%(leases)s::json) WITH ORDINALITY AS k(e, n)
    JOIN json_array_elements(%(results)s::json) WITH ORDINALITY AS r(e, n) USING (n)
), done AS (
    UPDATE onceq_jobs AS j
    SET status = 'succeeded', result = v.result, finished_at = now(),
        lease_expires_at = NULL
    FROM v WHERE j.id = v.id AND j.lease_token = v.token AND j.status = 'running'
    RETURNING j.id, j.lease_token AS token, j.status, j.run_id, j.step, j.item, j.attempts,
              j.worker, j.started_at
), ended AS (
    INSERT INTO onceq_attempts AS a (job_id, token, attempt, worker, started_at, ended_at,
                                     outcome)
    SELECT id, token, attempts, worker, started_at, now(), 'succeeded' FROM done
    ON CONFLICT (job_id, token) DO UPDATE SET ended_at = excluded.ended_at,
                                              outcome = excluded.outcome
), earlier AS (
    SELECT a.job_id AS id, a.token, a.outcome
    FROM onceq_attempts AS a JOIN v ON a.job_id = v.id AND a.token = v.token
    WHERE (v.id, v.token) NOT IN (SELECT id, token FROM done)
), picked AS (
    SELECT id FROM onceq_jobs
    WHERE status = 'pending' AND run_at <= now()
      AND left(queue, 6) <> 'onceq.'  -- reserved queues: served only when named
      AND concurrency_key IS NULL  -- keyed jobs: job_claim_keyed, with a slot
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE onceq_jobs AS j
    SET status = 'running', attempts = j.attempts + 1, lease_token = j.lease_token + 1,
        lease_expires_at = clock_timestamp() + make_interval(secs => %(lease)s),
        worker = %(worker)s, started_at = clock_timestamp(), claim = %(claim)s
    WHERE j.id = ANY (ARRAY(SELECT id FROM picked)) AND j.status || '' = 'pending'
    RETURNING j.id, j.lease_token AS token, j.status, j.run_id, j.step, j.item, j.task,
              j.args, j.queue, j.attempts, j.max_attempts, j.priority, j.run_at
)
SELECT 'claimed' AS kind, id, token, status, run_id, step, item, task, args, queue,
       attempts, max_attempts, priority, run_at, false AS replayed
FROM claimed
UNION ALL
SELECT 'done', id, token, status, run_id, step, item, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, false
FROM done
UNION ALL
SELECT 'done', id, token, 'succeeded', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, true
FROM earlier WHERE outcome = 'succeeded';

-- name: job_claim_queue
-- As job_claim, for one queue: an ordered walk of the (queue, priority, run_at, id) index.
WITH v AS (
    -- results in an array of their own, matched by position: see the note on
    -- Store._results_param
    SELECT (k.e ->> 0)::bigint AS id, (k.e ->> 1)::bigint AS token, r.e AS result
    FROM json_array_elements(%(leases)s::json) WITH ORDINALITY AS k(e, n)
    JOIN json_array_elements(%(results)s::json) WITH ORDINALITY AS r(e, n) USING (n)
), done AS (
    UPDATE onceq_jobs AS j
    SET status = 'succeeded', result = v.result, finished_at = now(),
        lease_expires_at = NULL
    FROM v WHERE j.id = v.id AND j.lease_token = v.token AND j.status = 'running'
    RETURNING j.id, j.lease_token AS token, j.status, j.run_id, j.step, j.item, j.attempts,
              j.worker, j.started_at
), ended AS (
    INSERT INTO onceq_attempts AS a (job_id, token, attempt, worker, started_at, ended_at,
                                     outcome)
    SELECT id, token, attempts, worker, started_at, now(), 'succeeded' FROM done
    ON CONFLICT (job_id, token) DO UPDATE SET ended_at = excluded.ended_at,
                                              outcome = excluded.outcome
), earlier AS (
    SELECT a.job_id AS id, a.token, a.outcome
    FROM onceq_attempts AS a JOIN v ON a.job_id = v.id AND a.token = v.token
    WHERE (v.id, v.token) NOT IN (SELECT id, token FROM done)
), picked AS (
    SELECT id FROM onceq_jobs
    WHERE status = 'pending' AND run_at <= now() AND queue = %(queue)s
      AND concurrency_key IS NULL
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE onceq_jobs AS j
    SET status = 'running', attempts = j.attempts + 1, lease_token = j.lease_token + 1,
        lease_expires_at = clock_timestamp() + make_interval(secs => %(lease)s),
        worker = %(worker)s, started_at = clock_timestamp(), claim = %(claim)s
    WHERE j.id = ANY (ARRAY(SELECT id FROM picked)) AND j.status || '' = 'pending'
    RETURNING j.id, j.lease_token AS token, j.status, j.run_id, j.step, j.item, j.task,
              j.args, j.queue, j.attempts, j.max_attempts, j.priority, j.run_at
)
SELECT 'claimed' AS kind, id, token, status, run_id, step, item, task, args, queue,
       attempts, max_attempts, priority, run_at, false AS replayed
FROM claimed
UNION ALL
SELECT 'done', id, token, status, run_id, step, item, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, false
FROM done
UNION ALL
SELECT 'done', id, token, 'succeeded', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, true
FROM earlier WHERE outcome = 'succeeded';

-- name: job_claim_queues
-- As job_claim, restricted to the queues in %(queues)s.
WITH v AS (
    -- results in an array of their own, matched by position: see the note on
    -- Store._results_param
    SELECT (k.e ->> 0)::bigint AS id, (k.e ->> 1)::bigint AS token, r.e AS result
    FROM json_array_elements(%(leases)s::json) WITH ORDINALITY AS k(e, n)
    JOIN json_array_elements(%(results)s::json) WITH ORDINALITY AS r(e, n) USING (n)
), done AS (
    UPDATE onceq_jobs AS j
    SET status = 'succeeded', result = v.result, finished_at = now(),
        lease_expires_at = NULL
    FROM v WHERE j.id = v.id AND j.lease_token = v.token AND j.status = 'running'
    RETURNING j.id, j.lease_token AS token, j.status, j.run_id, j.step, j.item, j.attempts,
              j.worker, j.started_at
), ended AS (
    INSERT INTO onceq_attempts AS a (job_id, token, attempt, worker, started_at, ended_at,
                                     outcome)
    SELECT id, token, attempts, worker, started_at, now(), 'succeeded' FROM done
    ON CONFLICT (job_id, token) DO UPDATE SET ended_at = excluded.ended_at,
                                              outcome = excluded.outcome
), earlier AS (
    SELECT a.job_id AS id, a.token, a.outcome
    FROM onceq_attempts AS a JOIN v ON a.job_id = v.id AND a.token = v.token
    WHERE (v.id, v.token) NOT IN (SELECT id, token FROM done)
), picked AS (
    SELECT id FROM onceq_jobs
    WHERE status = 'pending' AND run_at <= now()
      AND queue IN (SELECT json_array_elements_text(%(queues)s::json))
      AND concurrency_key IS NULL
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE onceq_jobs AS j
    SET status = 'running', attempts = j.attempts + 1, lease_token = j.lease_token + 1,
        lease_expires_at = clock_timestamp() + make_interval(secs => %(lease)s),
        worker = %(worker)s, started_at = clock_timestamp(), claim = %(claim)s
    WHERE j.id = ANY (ARRAY(SELECT id FROM picked)) AND j.status || '' = 'pending'
    RETURNING j.id, j.lease_token AS token, j.status, j.run_id, j.step, j.item, j.task,
              j.args, j.queue, j.attempts, j.max_attempts, j.priority, j.run_at
)
SELECT 'claimed' AS kind, id, token, status, run_id, step, item, task, args, queue,
       attempts, max_attempts, priority, run_at, false AS replayed
FROM claimed
UNION ALL
SELECT 'done', id, token, status, run_id, step, item, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, false
FROM done
UNION ALL
SELECT 'done', id, token, 'succeeded', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, true
FROM earlier WHERE outcome = 'succeeded';

-- name: job_heartbeat
-- Extends every lease in %(leases)s ([[id, token], ...]) still held; notes the stale
-- ones; returns those kept, and those `busy`: held, but locked by another transaction
-- right now — most often this worker's own completion of that job, which may take a
-- while (it can start a large fan-out). SKIP LOCKED: a heartbeat never waits behind it,
-- so the worker's other leases are extended all the same; a busy one is neither
-- extended nor refused.
WITH v AS (
    SELECT (e ->> 0)::bigint AS id, (e ->> 1)::bigint AS token
    FROM json_array_elements(%(leases)s::json) AS e
), locked AS MATERIALIZED (
    SELECT j.id FROM onceq_jobs AS j JOIN v ON j.id = v.id AND j.lease_token = v.token
    WHERE j.status = 'running' ORDER BY j.id FOR UPDATE OF j SKIP LOCKED
), kept AS (
    UPDATE onceq_jobs AS j
    SET lease_expires_at = clock_timestamp() + make_interval(secs => %(lease)s)
    FROM v, locked
    WHERE j.id = locked.id AND j.id = v.id AND j.lease_token = v.token AND j.status = 'running'
    RETURNING j.id, j.lease_token AS token
), busy AS (
    SELECT j.id, j.lease_token AS token
    FROM onceq_jobs AS j JOIN v ON j.id = v.id AND j.lease_token = v.token
    WHERE j.status = 'running' AND j.id NOT IN (SELECT id FROM locked)
)
SELECT id, token, false AS busy FROM kept
UNION ALL
SELECT id, token, true FROM busy;

-- name: job_complete
-- Records results for the leases still held and writes their attempts' records. A lease
-- whose attempt had already succeeded is this completion sent again (its first answer
-- was lost): it comes back as `replayed`. Any other is stale (the store notes it with
-- attempt_reject). (All CTEs read one snapshot: `earlier` cannot see what `ended`
-- writes.) An attempt's record is written once, when it ends; ON CONFLICT: a record
-- opened at claim by onceq before schema v4 is closed instead.
WITH v AS (
    -- results in an array of their own, matched by position: see the note on
    -- Store._results_param
    SELECT (k.e ->> 0)::bigint AS id, (k.e ->> 1)::bigint AS token, r.e AS result
    FROM json_array_elements(%(leases)s::json) WITH ORDINALITY AS k(e, n)
    JOIN json_array_elements(%(results)s::json) WITH ORDINALITY AS r(e, n) USING (n)
), done AS (
    UPDATE onceq_jobs AS j
    SET status = 'succeeded', result = v.result, finished_at = now(),
        lease_expires_at = NULL
    FROM v WHERE j.id = v.id AND j.lease_token = v.token AND j.status = 'running'
    RETURNING j.id, j.lease_token AS token, j.status, j.run_id, j.step, j.item, j.attempts,
              j.worker, j.started_at
), ended AS (
    INSERT INTO onceq_attempts AS a (job_id, token, attempt, worker, started_at, ended_at,
                                     outcome)
    SELECT id, token, attempts, worker, started_at, now(), 'succeeded' FROM done
    ON CONFLICT (job_id, token) DO UPDATE SET ended_at = excluded.ended_at,
                                              outcome = excluded.outcome
), earlier AS (
    SELECT a.job_id AS id, a.token, a.outcome
    FROM onceq_attempts AS a JOIN v ON a.job_id = v.id AND a.token = v.token
    WHERE (v.id, v.token) NOT IN (SELECT id, token FROM done)
)
SELECT id, token, status, run_id, step, item, false AS replayed FROM done
UNION ALL
SELECT id, token, 'succeeded', NULL, NULL, NULL, true FROM earlier
WHERE outcome = 'succeeded';

-- name: job_fail
-- A failure under a held lease: back to pending after %(retry_in)s seconds while
-- attempts remain, else failed. Returns the new status, or no row when the lease is stale.
WITH done AS (
    UPDATE onceq_jobs
    SET status = CASE WHEN %(retry_in)s::float8 IS NOT NULL AND attempts < max_attempts
                      THEN 'pending' ELSE 'failed' END,
        run_at = CASE WHEN %(retry_in)s::float8 IS NOT NULL AND attempts < max_attempts
                      THEN now() + make_interval(secs => %(retry_in)s::float8)
                      ELSE run_at END,
        finished_at = CASE WHEN %(retry_in)s::float8 IS NOT NULL AND attempts < max_attempts
                           THEN NULL ELSE now() END,
        lease_expires_at = NULL, last_error = %(error)s, last_traceback = %(traceback)s
    WHERE id = %(job_id)s AND lease_token = %(token)s AND status = 'running'
    RETURNING id, lease_token AS token, status, run_id, step, item, attempts, worker,
              started_at
), ended AS (
    INSERT INTO onceq_attempts AS a (job_id, token, attempt, worker, started_at, ended_at,
                                     outcome, error)
    SELECT id, token, attempts, worker, started_at, now(),
           CASE WHEN status = 'pending' THEN 'retried' ELSE 'failed' END, %(error)s
    FROM done
    ON CONFLICT (job_id, token) DO UPDATE
    SET ended_at = excluded.ended_at, outcome = excluded.outcome, error = excluded.error
), earlier AS (
    -- as in job_complete: the same failure sent again finds its attempt ended by it,
    -- with its error (a timed-out thread's late failure is another one: refused)
    SELECT a.job_id AS id, a.token,
           a.outcome IN ('retried', 'failed') AND a.error IS NOT DISTINCT FROM %(error)s
               AS again,
           a.outcome
    FROM onceq_attempts AS a
    WHERE a.job_id = %(job_id)s AND a.token = %(token)s AND NOT EXISTS (SELECT 1 FROM done)
)
SELECT id, token, status, run_id, step, item, false AS replayed FROM done
UNION ALL
SELECT id, token, CASE WHEN outcome = 'retried' THEN 'pending' ELSE 'failed' END,
       NULL, NULL, NULL, true
FROM earlier WHERE again;

-- name: job_release
-- Hands back leases whose handler never started (graceful shutdown): pending again, and
-- the attempt is given back. The token stays bumped, so the old lease stays dead.
-- A lease whose attempt was already released is this release sent again: `replayed`.
WITH v AS (
    SELECT (e ->> 0)::bigint AS id, (e ->> 1)::bigint AS token
    FROM json_array_elements(%(leases)s::json) AS e
), done AS (
    UPDATE onceq_jobs AS j
    SET status = 'pending', attempts = j.attempts - 1, lease_expires_at = NULL
    FROM v WHERE j.id = v.id AND j.lease_token = v.token AND j.status = 'running'
    RETURNING j.id, j.lease_token AS token, j.status, j.run_id, j.step, j.item,
              j.attempts + 1 AS attempt, j.worker, j.started_at
), ended AS (
    INSERT INTO onceq_attempts AS a (job_id, token, attempt, worker, started_at, ended_at,
                                     outcome)
    SELECT id, token, attempt, worker, started_at, now(), 'released' FROM done
    ON CONFLICT (job_id, token) DO UPDATE SET ended_at = excluded.ended_at,
                                              outcome = excluded.outcome
), earlier AS (
    SELECT a.job_id AS id, a.token, a.outcome
    FROM onceq_attempts AS a JOIN v ON a.job_id = v.id AND a.token = v.token
    WHERE (v.id, v.token) NOT IN (SELECT id, token FROM done)
)
SELECT id, token, status, run_id, step, item, false AS replayed FROM done
UNION ALL
SELECT id, token, 'pending', NULL, NULL, NULL, true FROM earlier WHERE outcome = 'released';

-- name: job_adopt
-- The jobs that %(worker)s's claims in %(claims)s (a JSON array of claim numbers) took
-- and that still run under them: claims whose answer was lost. Their leases are
-- extended, and they come back to be run. (Through the index of running jobs.)
UPDATE onceq_jobs AS j SET lease_expires_at = clock_timestamp() + make_interval(secs => %(lease)s)
WHERE j.status = 'running' AND j.worker = %(worker)s
  AND j.claim IN (SELECT v::bigint FROM json_array_elements_text(%(claims)s::json) AS v)
RETURNING j.id, j.lease_token AS token, j.task, j.args, j.queue, j.attempts,
          j.max_attempts, j.run_id, j.step, j.item, j.priority, j.run_at;

-- name: job_rescue
-- Jobs whose lease expired on the database clock (%(worker)s NULL), or every job
-- %(worker)s held once its process is known to be dead: pending again while attempts
-- remain, else failed. The lost lease has spent its attempt, so a job that kills its
-- worker cannot loop forever. Any number of workers may run this at once: SKIP LOCKED
-- leaves each row to one rescuer, and the status re-check leaves nothing for a later one.
WITH picked AS (
    SELECT id FROM onceq_jobs
    WHERE status = 'running'
      AND CASE WHEN %(worker)s::text IS NULL THEN lease_expires_at < now()
               ELSE worker = %(worker)s::text END
    FOR UPDATE SKIP LOCKED
), done AS (
    UPDATE onceq_jobs AS j
    SET status = CASE WHEN j.attempts < j.max_attempts THEN 'pending' ELSE 'failed' END,
        run_at = now(),
        finished_at = CASE WHEN j.attempts < j.max_attempts THEN NULL ELSE now() END,
        lease_expires_at = NULL, last_error = %(error)s, last_traceback = NULL
    FROM picked WHERE j.id = picked.id AND j.status = 'running'
    RETURNING j.id, j.lease_token AS token, j.status, j.run_id, j.step, j.item, j.attempts,
              j.worker, j.started_at
), ended AS (
    INSERT INTO onceq_attempts AS a (job_id, token, attempt, worker, started_at, ended_at,
                                     outcome, error)
    SELECT id, token, attempts, worker, started_at, now(), %(outcome)s, %(error)s FROM done
    ON CONFLICT (job_id, token) DO UPDATE
    SET ended_at = excluded.ended_at, outcome = excluded.outcome, error = excluded.error
)
SELECT id, token, status, run_id, step, item FROM done;

-- name: job_rescue_stopped
-- Every job %(worker)s held, once its process stopped during a shutdown: pending again
-- and the attempt given back (a shutdown is not the job's failure), never failed. The
-- attempt ends `stopped`, with the reason as its error.
WITH picked AS (
    SELECT id FROM onceq_jobs
    WHERE status = 'running' AND worker = %(worker)s::text
    FOR UPDATE SKIP LOCKED
), done AS (
    UPDATE onceq_jobs AS j
    SET status = 'pending', attempts = j.attempts - 1, run_at = now(), lease_expires_at = NULL
    FROM picked WHERE j.id = picked.id AND j.status = 'running'
    RETURNING j.id, j.lease_token AS token, j.status, j.run_id, j.step, j.item,
              j.attempts + 1 AS attempt, j.worker, j.started_at
), ended AS (
    INSERT INTO onceq_attempts AS a (job_id, token, attempt, worker, started_at, ended_at,
                                     outcome, error)
    SELECT id, token, attempt, worker, started_at, now(), 'stopped', %(error)s FROM done
    ON CONFLICT (job_id, token) DO UPDATE
    SET ended_at = excluded.ended_at, outcome = excluded.outcome, error = excluded.error
)
SELECT id, token, status, run_id, step, item FROM done;

-- name: job_give_up
-- Leases their own worker gave up (no heartbeat got through in time, so its handler was
-- told to stop, and whatever it returns cannot count): pending again while attempts
-- remain, else failed, exactly as a rescue of an expired lease would do, only sooner. A
-- lease whose attempt already ended that way (this same give-up, its answer lost; or a
-- rescue) comes back as `replayed`.
WITH v AS (
    SELECT (e ->> 0)::bigint AS id, (e ->> 1)::bigint AS token
    FROM json_array_elements(%(leases)s::json) AS e
), locked AS MATERIALIZED (
    SELECT j.id FROM onceq_jobs AS j JOIN v ON j.id = v.id AND j.lease_token = v.token
    WHERE j.status = 'running' ORDER BY j.id FOR UPDATE OF j
), done AS (
    UPDATE onceq_jobs AS j
    SET status = CASE WHEN j.attempts < j.max_attempts THEN 'pending' ELSE 'failed' END,
        run_at = now(),
        finished_at = CASE WHEN j.attempts < j.max_attempts THEN NULL ELSE now() END,
        lease_expires_at = NULL, last_error = %(error)s, last_traceback = NULL
    FROM v, locked
    WHERE j.id = locked.id AND j.id = v.id AND j.lease_token = v.token AND j.status = 'running'
    RETURNING j.id, j.lease_token AS token, j.status, j.run_id, j.step, j.item, j.attempts,
              j.worker, j.started_at
), ended AS (
    INSERT INTO onceq_attempts AS a (job_id, token, attempt, worker, started_at, ended_at,
                                     outcome, error)
    SELECT id, token, attempts, worker, started_at, now(), 'lease_expired', %(error)s
    FROM done
    ON CONFLICT (job_id, token) DO UPDATE
    SET ended_at = excluded.ended_at, outcome = excluded.outcome, error = excluded.error
), earlier AS (
    SELECT a.job_id AS id, a.token, a.outcome
    FROM onceq_attempts AS a JOIN v ON a.job_id = v.id AND a.token = v.token
    WHERE (v.id, v.token) NOT IN (SELECT id, token FROM done)
)
SELECT id, token, status, run_id, step, item, false AS replayed FROM done
UNION ALL
SELECT id, token, 'pending', NULL, NULL, NULL, true FROM earlier
WHERE outcome = 'lease_expired';

-- name: attempt_reject
-- Notes a stale write (%(op)s) refused for each lease in %(leases)s. A statement of its
-- own, after the write: its snapshot sees the attempt's record even when the write that
-- ended that attempt (a rescue, a cancel) committed while the refused one waited for the
-- job's row. A heartbeat that crossed its own holder's completion is not one: the holder
-- ended that attempt itself.
UPDATE onceq_attempts AS a SET rejected = concat_ws(',', a.rejected, %(op)s)
FROM json_array_elements(%(leases)s::json) AS e
WHERE a.job_id = (e ->> 0)::bigint AND a.token = (e ->> 1)::bigint
  AND NOT (%(op)s = 'heartbeat'
           AND coalesce(a.outcome IN ('succeeded', 'failed', 'retried', 'released'), false));

-- name: attempt_list
-- A job's attempts: those that ended (their records), then the one running now, which
-- has no record until it ends (its lease is on the job row).
SELECT job_id, token, attempt, worker, started_at, ended_at, outcome, error, rejected
FROM onceq_attempts WHERE job_id = %(job_id)s
UNION ALL
SELECT id, lease_token, attempts, worker, started_at, NULL, NULL, NULL, NULL
FROM onceq_jobs AS j
WHERE id = %(job_id)s AND status = 'running'
  AND NOT EXISTS (SELECT 1 FROM onceq_attempts AS a
                  WHERE a.job_id = j.id AND a.token = j.lease_token)
ORDER BY token;

-- name: job_lock
-- Reads and locks a job before an operator action.
SELECT * FROM onceq_jobs WHERE id = %(job_id)s FOR UPDATE;

-- name: job_cancel
-- Cancels a pending or running job; a running one's attempt ends `cancelled` (its holder's
-- writes are refused from now on).
WITH done AS (
    UPDATE onceq_jobs
    SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL
    WHERE id = %(job_id)s AND status IN ('pending', 'running')
    RETURNING id, lease_token AS token, status, run_id, step, item, attempts, worker,
              started_at
), ended AS (
    INSERT INTO onceq_attempts AS a (job_id, token, attempt, worker, started_at, ended_at,
                                     outcome, error)
    SELECT id, token, attempts, worker, started_at, now(), 'cancelled', 'cancelled'
    FROM done WHERE %(running)s
    ON CONFLICT (job_id, token) DO UPDATE
    SET ended_at = excluded.ended_at, outcome = excluded.outcome, error = excluded.error
    WHERE a.ended_at IS NULL
)
SELECT id, token, status, run_id, step, item FROM done;

-- name: job_retry
-- An operator retry: pending now, with at least %(extra)s attempts left.
UPDATE onceq_jobs
SET status = 'pending', run_at = now(), finished_at = NULL, worker = NULL,
    max_attempts = greatest(max_attempts, attempts + %(extra)s)
WHERE id = %(job_id)s AND status IN ('failed', 'cancelled')
RETURNING *, lease_token AS token;

-- name: job_list
SELECT * FROM onceq_jobs
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(run_id)s::bigint IS NULL OR run_id = %(run_id)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s OFFSET %(offset)s;

-- name: job_counts
SELECT queue, status, count(*)::int AS n FROM onceq_jobs
GROUP BY queue, status ORDER BY queue, status;

-- name: job_pending_exists
-- Is any job of these queues (or of all, for NULL) still to run, due or not?
SELECT 1 FROM onceq_jobs
WHERE status = 'pending'
  AND (%(queues)s::json IS NULL AND left(queue, 6) <> 'onceq.'
       OR queue IN (SELECT json_array_elements_text(%(queues)s::json)))
LIMIT 1;

-- Workflow runs. These run inside the transaction that records a job's outcome (see
-- onceq.workflow.engine), after its job rows are locked; run_lock takes the run's row.

-- name: run_insert
INSERT INTO onceq_runs (name, definition, input)
VALUES (%(name)s, %(definition)s::json, %(input)s::json)
RETURNING id, name, status, definition;

-- name: step_insert
INSERT INTO onceq_steps (run_id, step) VALUES (%(run_id)s, %(step)s);

-- name: run_lock
-- Completions of one run advance it one at a time, each seeing the ones before it.
-- (Not the input, which may hold a whole fan-out list: run_input reads it when needed.)
SELECT id, name, status, definition FROM onceq_runs WHERE id = %(run_id)s FOR UPDATE;

-- name: run_input
SELECT input FROM onceq_runs WHERE id = %(run_id)s;

-- name: run_get
SELECT * FROM onceq_runs WHERE id = %(run_id)s;

-- name: run_list
SELECT * FROM onceq_runs ORDER BY id DESC LIMIT %(limit)s OFFSET %(offset)s;

-- name: run_finish
UPDATE onceq_runs SET status = %(status)s, error = %(error)s, finished_at = now()
WHERE id = %(run_id)s AND status = 'running';

-- name: run_cancel_jobs
-- The pending jobs of a run that is ending (cancelled, or failed because it cannot be
-- advanced); its running ones finish and advance nothing.
WITH locked AS MATERIALIZED (
    SELECT id FROM onceq_jobs WHERE run_id = %(run_id)s AND status = 'pending'
    ORDER BY id FOR UPDATE
)
UPDATE onceq_jobs AS j SET status = 'cancelled', finished_at = now()
FROM locked WHERE j.id = locked.id AND j.status = 'pending'
RETURNING j.id, j.lease_token AS token, j.status, j.run_id, j.step, j.item;

-- name: run_cancel_jobs_unlocked
-- As run_cancel_jobs, once the run's row is locked: the jobs that became pending
-- meanwhile. SKIP LOCKED: a row another transaction holds (a retry, an operator's
-- cancel) would be waited for while that transaction waits for this run's lock — a
-- deadlock; it will see the run ended and cancel its job itself.
WITH locked AS MATERIALIZED (
    SELECT id FROM onceq_jobs WHERE run_id = %(run_id)s AND status = 'pending'
    ORDER BY id FOR UPDATE SKIP LOCKED
)
UPDATE onceq_jobs AS j SET status = 'cancelled', finished_at = now()
FROM locked WHERE j.id = locked.id AND j.status = 'pending'
RETURNING j.id, j.lease_token AS token, j.status, j.run_id, j.step, j.item;

-- name: step_list
-- (Not the fan-out lists: those are in onceq_step_items, read one item at a time.)
SELECT run_id, step, status, total, error, started_at, finished_at
FROM onceq_steps WHERE run_id = %(run_id)s;

-- name: step_start
-- (`items`, the fan-out's list, is written for workers of schema v1 that may still run
-- during an upgrade: they read it. This version reads onceq_step_items.)
UPDATE onceq_steps
SET status = 'running', items = %(items)s::json, total = %(total)s, started_at = now()
WHERE run_id = %(run_id)s AND step = %(step)s AND status = 'waiting';

-- name: step_items_insert
-- A fan-out's items, one row each with its job arguments, when its step starts: a
-- dispatch then reads its own item alone, whatever the length of the list. Items
-- from item number %(first)s on (a long list goes in by parts). %(items)s
-- is a JSON array of each item's arguments as JSON text, stored exactly as encoded.
INSERT INTO onceq_step_items (run_id, step, item, args)
SELECT %(run_id)s, %(step)s, %(first)s + n - 1, v::json
FROM json_array_elements_text(%(items)s::json) WITH ORDINALITY AS t(v, n);

-- name: step_item_error_insert
-- The first item whose arguments could not be resolved: the step fails when its turn
-- comes (the items before it run).
INSERT INTO onceq_step_items (run_id, step, item, error)
VALUES (%(run_id)s, %(step)s, %(item)s, %(error)s);

-- name: step_item_get
SELECT args, error FROM onceq_step_items
WHERE run_id = %(run_id)s AND step = %(step)s AND item = %(item)s;

-- name: step_items_legacy
-- The list of a step that was running when the schema moved to v2 (kept in the step row).
SELECT items FROM onceq_steps WHERE run_id = %(run_id)s AND step = %(step)s;

-- name: step_set_error
-- The first error of a step is the one kept.
UPDATE onceq_steps SET error = %(error)s
WHERE run_id = %(run_id)s AND step = %(step)s AND error IS NULL;

-- name: step_finish
UPDATE onceq_steps SET status = %(status)s, finished_at = now()
WHERE run_id = %(run_id)s AND step = %(step)s AND status = 'running';

-- name: step_close_waiting
-- Steps that can no longer start, once the run ends (skipped) or is cancelled.
UPDATE onceq_steps SET status = %(status)s WHERE run_id = %(run_id)s AND status = 'waiting';

-- name: job_step_progress
-- How far a step is: items dispatched (they are numbered from 0, in order) and jobs
-- still pending or running. Two index probes, whatever the size of the fan-out.
SELECT (SELECT coalesce(max(item) + 1, 0) FROM onceq_jobs
        WHERE run_id = %(run_id)s AND step = %(step)s) AS dispatched,
       (SELECT count(*) FROM onceq_jobs
        WHERE run_id = %(run_id)s AND step = %(step)s
          AND status IN ('pending', 'running')) AS active;

-- name: job_step_results
SELECT item, result FROM onceq_jobs
WHERE run_id = %(run_id)s AND step = %(step)s ORDER BY item;

-- name: job_run_counts
SELECT step, status, count(*)::int AS n FROM onceq_jobs WHERE run_id = %(run_id)s
GROUP BY step, status;

-- name: job_running_exists
-- Is any job of these queues (all, for NULL) running? Through the index of running jobs.
SELECT 1 FROM onceq_jobs
WHERE status = 'running' AND lease_expires_at IS NOT NULL
  AND (%(queues)s::json IS NULL OR queue IN (SELECT json_array_elements_text(%(queues)s::json)))
LIMIT 1;

-- name: job_cancel_orphan
-- A job sent back to pending (a retry, a rescue, a release) whose run has ended
-- (cancelled, or failed elsewhere) is not run again: it is cancelled instead.
UPDATE onceq_jobs SET status = 'cancelled', finished_at = now(), worker = NULL
WHERE id = %(job_id)s AND status = 'pending'
RETURNING id;

-- name: step_close_open
-- The steps of an ending run that had not finished: running ones become %(running)s,
-- waiting ones %(waiting)s.
UPDATE onceq_steps
SET status = CASE status WHEN 'running' THEN %(running)s ELSE %(waiting)s END,
    finished_at = now()
WHERE run_id = %(run_id)s AND status IN ('waiting', 'running');

-- name: job_error
-- The error a workflow job ended with.
SELECT last_error FROM onceq_jobs WHERE id = %(job_id)s;

-- name: session_limit_statements
-- A worker's bound on one statement (below its lease), for this connection's session;
-- a lower one already in force (the URL's own options) is kept. 0 means none.
SELECT set_config('statement_timeout',
                  CASE WHEN current_setting('statement_timeout')::interval = interval '0'
                         OR current_setting('statement_timeout')::interval
                            > make_interval(secs => %(ms)s / 1000.0)
                       THEN %(ms)s::text ELSE current_setting('statement_timeout') END,
                  false);

-- name: backend_identity
-- Who this connection is on the server: enough to find its backend again (pids are
-- reused; a backend's start time with its pid is not).
SELECT pg_backend_pid() AS pid, backend_start FROM pg_stat_activity
WHERE pid = pg_backend_pid();

-- name: backend_settle
-- The backend of a connection lost while it committed: ended if it is still there (an
-- idle one has nothing left to do; one still in its transaction rolls back), so that
-- once no row comes back, its transaction is over one way or the other and what
-- committed can be read.
SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity
WHERE pid = %(pid)s AND backend_start = %(started)s;

-- Code-task batches (onceq.batch). A holder of a worktree slot or of the merge queue's
-- turn is a job's lease: it holds nothing once that job no longer runs under that token.

-- name: batch_lock
-- The batch's row, locked before changing what hangs off it: changes to one batch's
-- pool, merge turn and tasks go one at a time.
SELECT * FROM onceq_batches WHERE name = %(name)s FOR UPDATE;

-- name: batch_get
SELECT * FROM onceq_batches WHERE name = %(name)s;

-- name: batch_insert
-- A second submit of the same new batch at once inserts nothing (then both lock it).
INSERT INTO onceq_batches (name, repo, base, base_start, definition, created_at)
VALUES (%(name)s, %(repo)s, %(base)s, %(base_start)s, %(definition)s::json, now())
ON CONFLICT (name) DO NOTHING;

-- name: batch_set_definition
UPDATE onceq_batches SET definition = %(definition)s::json WHERE name = %(name)s;

-- name: batch_set_run
UPDATE onceq_batches SET run_id = %(run_id)s WHERE name = %(name)s;

-- name: batch_list
SELECT b.name, b.repo, b.base, b.created_at, b.run_id, r.status AS run_status
FROM onceq_batches b LEFT JOIN onceq_runs r ON r.id = b.run_id
ORDER BY b.created_at, b.name;

-- name: batch_task_counts
SELECT batch, status, count(*) AS n FROM onceq_batch_tasks GROUP BY batch, status;

-- name: batch_delete
DELETE FROM onceq_batches WHERE name = %(name)s;

-- name: batch_tasks_delete
DELETE FROM onceq_batch_tasks WHERE batch = %(name)s;

-- name: batch_slots_delete
DELETE FROM onceq_batch_slots WHERE batch = %(name)s;

-- name: batch_task_insert
-- A task of the file; one that exists keeps its progress (a batch run again resumes).
INSERT INTO onceq_batch_tasks (batch, number, title, batch_no, position, branch, updated_at)
VALUES (%(name)s, %(number)s, %(title)s, %(batch_no)s, %(position)s, %(branch)s, now())
ON CONFLICT (batch, number) DO UPDATE
SET title = excluded.title, batch_no = excluded.batch_no, position = excluded.position;

-- name: batch_tasks_reopen
-- A new run of the batch: every task not merged starts over (its history stays in the
-- attempts of the run before).
UPDATE onceq_batch_tasks
SET status = 'pending', rounds = 0, start = NULL, feedback = NULL, error = NULL,
    verified = NULL, started_at = NULL, updated_at = now()
WHERE batch = %(name)s AND status <> 'merged';

-- name: batch_tasks
SELECT * FROM onceq_batch_tasks WHERE batch = %(name)s ORDER BY batch_no, position;

-- name: batch_task_update
-- Where a task stands, written by the job that runs it (the caller checked its lease in
-- this transaction first).
UPDATE onceq_batch_tasks
SET status = %(status)s, rounds = %(rounds)s, worktree = %(worktree)s, start = %(start)s,
    verified = %(verified)s, feedback = %(feedback)s, error = %(error)s, merged_as = %(merged_as)s,
    started_at = coalesce(started_at, now()),
    merged_at = CASE WHEN %(status)s::text = 'merged' THEN coalesce(merged_at, now()) ELSE merged_at END,
    updated_at = now()
WHERE batch = %(name)s AND number = %(number)s;

-- name: job_lease_live
-- Whether a job still runs under this lease, as a job of the batch's current run (the
-- fence of every batch write: a job of a run that was cancelled, or of a batch made
-- again under the same name, writes nothing). FOR SHARE: a rescue of that job waits
-- until the write it fences has committed.
SELECT 1 AS live FROM onceq_jobs j JOIN onceq_batches b ON b.name = %(name)s AND b.run_id = j.run_id
WHERE j.id = %(job_id)s AND j.status = 'running' AND j.lease_token = %(token)s
FOR SHARE OF j;

-- name: batch_slot_insert
INSERT INTO onceq_batch_slots (batch, slot, path) VALUES (%(name)s, %(slot)s, %(path)s)
ON CONFLICT (batch, slot) DO NOTHING;

-- name: batch_slots
-- The pool, with whether each slot's holder still holds it.
SELECT s.slot, s.path, s.job_id, s.token, j.id IS NOT NULL AS live
FROM onceq_batch_slots s
LEFT JOIN onceq_jobs j ON j.id = s.job_id AND j.status = 'running' AND j.lease_token = s.token
WHERE s.batch = %(name)s ORDER BY s.slot;

-- name: batch_slot_hold
UPDATE onceq_batch_slots SET job_id = %(job_id)s, token = %(token)s WHERE batch = %(name)s AND slot = %(slot)s;

-- name: batch_slot_free
UPDATE onceq_batch_slots SET job_id = NULL, token = NULL
WHERE batch = %(name)s AND slot = %(slot)s AND job_id = %(job_id)s AND token = %(token)s;

-- name: batch_merge_holder
-- Who has the merge queue's turn, and whether that lease still holds it.
SELECT b.merge_job, b.merge_token, j.id IS NOT NULL AS live
FROM onceq_batches b
LEFT JOIN onceq_jobs j ON j.id = b.merge_job AND j.status = 'running'
                      AND j.lease_token = b.merge_token
WHERE b.name = %(name)s
FOR UPDATE OF b;

-- name: batch_merge_hold
UPDATE onceq_batches SET merge_job = %(job_id)s, merge_token = %(token)s WHERE name = %(name)s;

-- name: batch_merge_free
UPDATE onceq_batches SET merge_job = NULL, merge_token = NULL
WHERE name = %(name)s AND merge_job = %(job_id)s AND merge_token = %(token)s;

-- name: batch_tasks_settle
-- Once the batch's run has ended: a task stopped half way (its job spent its attempts,
-- or the run was cancelled) is failed with the run's reason; one never started says why.
UPDATE onceq_batch_tasks
SET status = CASE WHEN status = 'pending' THEN status ELSE 'failed' END,
    error = coalesce(error, CASE WHEN status = 'pending' THEN %(skipped)s ELSE %(reason)s END),
    updated_at = now()
WHERE batch = %(name)s AND status NOT IN ('merged', 'failed');

-- name: batch_task_delete
-- A task that is no longer in the batch's file (and was never merged).
DELETE FROM onceq_batch_tasks WHERE batch = %(name)s AND number = %(number)s;
