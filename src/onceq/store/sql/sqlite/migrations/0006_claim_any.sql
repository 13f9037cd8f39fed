-- Schema v6: the index of claims from any queue holds only the queues such a claim may
-- take (not onceq.*: see the PostgreSQL file). SQLite uses a partial index only for a
-- query whose WHERE has its terms, as job_claim's does.
DROP INDEX onceq_jobs_claim_any;
CREATE INDEX onceq_jobs_claim_any ON onceq_jobs (priority DESC, run_at, id)
    WHERE status = 'pending' AND substr(queue, 1, 6) <> 'onceq.';
