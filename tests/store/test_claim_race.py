"""Bug 1 of SPEC.md: several workers see the same pending job at the same moment.

A barrier releases three claimers together, each on its own connection, round after
round. The naive claim (SELECT the pending row, then UPDATE it by id) is run through
the same harness first, to show the harness really produces the race: there, all
three "win". onceq's claim must give the job to exactly one of them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from onceq.models import Lease, NewJob
from onceq.store import Store, open_store
from onceq.store.urls import parse_url

WORKERS = 3
ROUNDS = 25


def _race(claim: Callable[[int, threading.Barrier], bool]) -> int:
    """One round: WORKERS claimers released together by a barrier; how many won."""
    barrier = threading.Barrier(WORKERS)
    with ThreadPoolExecutor(WORKERS) as pool:
        return sum(pool.map(lambda w: claim(w, barrier), range(WORKERS)))


def _naive_claim(url: str) -> Callable[[int, threading.Barrier], bool]:
    """The bug: read what is pending, then mark it taken without re-checking."""
    parsed = parse_url(url)
    if parsed.dialect == "sqlite":
        import sqlite3

        def claim(_: int, barrier: threading.Barrier) -> bool:
            conn = sqlite3.connect(parsed.target, isolation_level=None, timeout=10)
            row = conn.execute(
                "SELECT id FROM onceq_jobs WHERE status = 'pending' LIMIT 1"
            ).fetchone()
            barrier.wait()
            if row is None:
                return False
            changed = conn.execute(
                "UPDATE onceq_jobs SET status = 'running', lease_expires_at = 1e12 WHERE id = ?",
                row,
            ).rowcount
            conn.close()
            return changed == 1

        return claim

    schema = parsed.options["schema"]

    def pg_claim(_: int, barrier: threading.Barrier) -> bool:
        with psycopg.connect(
            parsed.target, autocommit=True, options=f"-c search_path={schema}"
        ) as conn:
            row = conn.execute(
                "SELECT id FROM onceq_jobs WHERE status = 'pending' LIMIT 1"
            ).fetchone()
            barrier.wait()
            if row is None:
                return False
            cur = conn.execute(
                "UPDATE onceq_jobs SET status = 'running', lease_expires_at = now() WHERE id = %s",
                row,
            )
            return cur.rowcount == 1

    return pg_claim


def test_the_harness_reproduces_bug_1_with_a_naive_claim(store: Store, store_url: str) -> None:
    store.job_insert(NewJob(task="t"))
    assert _race(_naive_claim(store_url)) == WORKERS  # all believed they acquired the job


def test_exactly_one_of_three_simultaneous_claimers_wins(store: Store, store_url: str) -> None:
    stores = [open_store(store_url) for _ in range(WORKERS)]
    try:
        for round_no in range(ROUNDS):
            job = store.job_insert(NewJob(task="t", args={"round": round_no}))
            won: list[Lease] = []

            def claim(w: int, barrier: threading.Barrier, won: list[Lease] = won) -> bool:
                barrier.wait()
                leases = stores[w].job_claim(f"w{w}", None, 1, 30)
                won.extend(leases)
                return bool(leases)

            winners = _race(claim)
            assert winners == 1, f"round {round_no}: {winners} workers acquired job {job.id}"
            assert [x.job_id for x in won] == [job.id]
            assert len(store.attempt_list(job.id)) == 1
            assert store.job_complete(won[0], round_no)
    finally:
        for s in stores:
            s.close()


@pytest.mark.parametrize("jobs", [2, 4, 6])
def test_few_jobs_many_claimers_each_job_claimed_once(
    store: Store, store_url: str, jobs: int
) -> None:
    """The 2/2, 4/3, 6/3 shapes where hand-rolled pools over-executed, with 6 claimers."""
    ids = store.job_insert_many([NewJob(task="t") for _ in range(jobs)])
    claimers = 6
    stores = [open_store(store_url) for _ in range(claimers)]
    barrier = threading.Barrier(claimers)

    def claim(w: int) -> list[int]:
        barrier.wait()
        return [x.job_id for x in stores[w].job_claim(f"w{w}", None, 2, 30)]

    try:
        with ThreadPoolExecutor(claimers) as pool:
            got = [job_id for ids in pool.map(claim, range(claimers)) for job_id in ids]
    finally:
        for s in stores:
            s.close()
    assert sorted(got) == sorted(ids)
