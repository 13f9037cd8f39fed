-- Schema v4: one row version per attempt, a key index only for jobs with a key, and the
-- `stopped` outcome.
--
-- An attempt's record in onceq_attempts is now written once, when the attempt ends (a
-- completion, failure, release, rescue, give-up or cancel writes it, in the statement
-- that ends it); while it runs, the job row alone holds it (lease_token, worker,
-- started_at), and attempt_list shows it from there. A job row keeps `worker`, its last
-- holder, after the attempt ends (onceq shows no holder for a pending job). Records
-- opened at claim by an older onceq are closed by the same statements (ON CONFLICT).
-- The version bump also makes an older onceq refuse this database instead of writing
-- records that the statements above would not expect.
--
-- A job row changes versions at claim and at its end; every version went into the
-- unique index on `key` too, NULL keys included. A partial index holds only the keys.
ALTER TABLE onceq_jobs DROP CONSTRAINT onceq_jobs_key_key;
CREATE UNIQUE INDEX onceq_jobs_key ON onceq_jobs (key) WHERE key IS NOT NULL;

-- An attempt whose worker was stopped by a shutdown while its handler ran (its grace ran
-- out, or a second signal): given back, not a failure of the job.
ALTER TABLE onceq_attempts DROP CONSTRAINT onceq_attempts_outcome_check;
ALTER TABLE onceq_attempts ADD CONSTRAINT onceq_attempts_outcome_check
    CHECK (outcome IS NULL OR outcome IN (
        'succeeded', 'failed', 'retried', 'lease_expired', 'released', 'worker_died',
        'cancelled', 'stopped'));
