"""A worker whose lease expired and whose job was re-claimed can record nothing."""

from __future__ import annotations

from onceq.models import Failure, NewJob
from onceq.store import Store, open_store
from tests.helpers import eventually


def test_stale_holder_is_fenced_out_and_the_new_holders_result_is_kept(
    store: Store, store_url: str
) -> None:
    worker_a, worker_b = store, open_store(store_url)
    try:
        job = worker_a.job_insert(NewJob(task="t", max_attempts=3))
        (lease_a,) = worker_a.job_claim("A", None, 1, 0.05)
        # A stalls past its lease; B's rescue pass takes the job back and B claims it.
        assert [r.job_id for r in eventually(worker_b.job_rescue)] == [job.id]
        (lease_b,) = worker_b.job_claim("B", None, 1, 30)
        assert lease_b.token > lease_a.token

        # A wakes up: every write it attempts is refused and changes nothing.
        assert worker_a.job_heartbeat([lease_a], 30) == set()
        assert worker_a.job_complete(lease_a, {"from": "A"}) is False
        assert worker_a.job_fail(Failure(lease_a, "A failed", retry_in=0)) is None
        assert worker_a.job_release_many([lease_a]) == set()
        current = worker_a.job_get(job.id)
        assert (current.status, current.worker, current.lease_token) == (
            "running",
            "B",
            lease_b.token,
        )

        assert worker_b.job_heartbeat([lease_b], 30) == {(job.id, lease_b.token)}
        assert worker_b.job_complete(lease_b, {"from": "B"}) is True
        done = worker_a.job_get(job.id)
        assert (done.status, done.result, done.attempts) == ("succeeded", {"from": "B"}, 2)

        a, b = worker_a.attempt_list(job.id)
        assert (a.worker, a.outcome, a.rejected) == (
            "A",
            "lease_expired",
            "heartbeat,complete,fail,release",
        )
        assert (b.worker, b.outcome, b.rejected) == ("B", "succeeded", None)
        assert a.ended_at is not None and a.ended_at <= b.started_at
    finally:
        worker_b.close()


def test_an_expired_lease_not_yet_rescued_still_belongs_to_its_holder(store: Store) -> None:
    """Expiry alone does not fence: the token does. Until someone rescues the job no other
    lease exists, so the holder's late heartbeat revives its lease and its result counts."""
    job = store.job_insert(NewJob(task="t"))
    (lease,) = store.job_claim("A", None, 1, 0.0)
    assert store.job_heartbeat([lease], 30) == {(job.id, lease.token)}
    assert store.job_rescue() == []
    assert store.job_complete(lease, "ok") is True
