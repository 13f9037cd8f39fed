-- Schema v6: the index of claims from any queue holds only the queues such a claim may
-- take (not onceq.*, which are served only when named). Before, a claim of one named
-- queue could walk it too: with statistics taken while few jobs were pending, the
-- planner saw no difference between it and the (queue, …) index, and a claim of queue A
-- behind 200,000 pending jobs of queue B read all of them (27 ms a claim). A claim of
-- one queue cannot prove this predicate, so it walks its own queue's index only.
DROP INDEX onceq_jobs_claim_any;
CREATE INDEX onceq_jobs_claim_any ON onceq_jobs (priority DESC, run_at, id)
    WHERE status = 'pending' AND left(queue, 6) <> 'onceq.';
