"""8 processes claim and complete 20,000 jobs on one database: each job exactly once.

The attempt history is the proof: one attempt per job, every job succeeded, and the
leases each process reports holding are disjoint.
"""

from __future__ import annotations

import multiprocessing
import os

from onceq.models import NewJob
from onceq.store import Store, open_store
from tests.helpers import assert_no_overlapping_leases, sql_rows

JOBS = int(os.environ.get("ONCEQ_STRESS_JOBS", "20000"))
PROCESSES = 8


def _claim_and_complete(url: str, worker: str, batch: int) -> list[tuple[int, int]]:
    store = open_store(url)
    held: list[tuple[int, int]] = []
    try:
        while leases := store.job_claim(worker, None, batch, 120):
            held += [(x.job_id, x.token) for x in leases]
            done = store.job_complete_many([(x, str(x.job_id)) for x in leases])
            assert done == {(x.job_id, x.token) for x in leases}
    finally:
        store.close()
    return held


def test_eight_processes_claim_every_job_exactly_once(store: Store, store_url: str) -> None:
    claim_every_job_once(store, store_url, JOBS)


def claim_every_job_once(store: Store, store_url: str, jobs: int) -> None:
    """`jobs` jobs, claimed and completed by eight processes at once: each exactly once."""
    for start in range(0, jobs, 5000):
        store.job_insert_many(
            [NewJob(task="t", args={"n": n}) for n in range(start, min(start + 5000, jobs))]
        )
    ctx = multiprocessing.get_context("spawn")
    # Mixed batch sizes, so single claims and batches contend with each other.
    work = [(store_url, f"w{w}", 1 + 3 * w) for w in range(PROCESSES)]
    with ctx.Pool(PROCESSES) as pool:
        per_worker = pool.starmap(_claim_and_complete, work)

    held = [pair for worker in per_worker for pair in worker]
    assert len(held) == jobs
    assert len({job_id for job_id, _ in held}) == jobs
    assert sum(1 for worker in per_worker if worker) >= 2  # the processes really competed
    assert store.job_counts() == [("default", "succeeded", jobs)]
    assert (
        sql_rows(store_url, "SELECT job_id FROM onceq_attempts GROUP BY job_id HAVING count(*) > 1")
        == []
    )
    assert assert_no_overlapping_leases(store_url) == jobs
    assert sql_rows(
        store_url, "SELECT count(*) FROM onceq_jobs WHERE result IS NULL OR attempts <> 1"
    ) == [(0,)]
