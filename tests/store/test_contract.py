"""The store contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from onceq.errors import InvalidTransition, JobNotFound, PayloadError
from onceq.models import Failure, NewJob
from onceq.store import Store
from tests.helpers import eventually, sql_rows

LEASE = 30.0


def test_enqueue_returns_a_committed_pending_job(store: Store) -> None:
    job = store.job_insert(NewJob(task="t.add", args={"a": 1, "b": [2, 3]}, queue="q", priority=5))
    assert job.status == "pending"
    assert (job.task, job.args, job.queue, job.priority) == ("t.add", {"a": 1, "b": [2, 3]}, "q", 5)
    assert job.attempts == 0 and job.lease_token == 0 and job.worker is None
    assert store.job_get(job.id) == job


def test_key_makes_enqueue_idempotent(store: Store) -> None:
    first = store.job_insert(NewJob(task="t", args={"n": 1}, key="k"))
    again = store.job_insert(NewJob(task="t", args={"n": 2}, key="k"))
    assert again.id == first.id and again.args == {"n": 1}
    ids = store.job_insert_many(
        [
            NewJob(task="t", key="k"),
            NewJob(task="t", key="j"),
            NewJob(task="t", key="j"),
            NewJob(task="t"),
        ]
    )
    assert ids[0] == first.id and ids[1] == ids[2] and len(set(ids)) == 3
    assert len(store.job_list()) == 3


def test_batch_insert_keeps_input_order(store: Store) -> None:
    ids = store.job_insert_many([NewJob(task=f"t{i}", args={"i": i}) for i in range(50)])
    assert len(set(ids)) == 50
    for i, job_id in enumerate(ids):
        assert store.job_get(job_id).args == {"i": i}


def test_non_json_payload_is_refused_naming_the_value(store: Store) -> None:
    with pytest.raises(PayloadError, match=r"payload of t\.x\.when is not JSON-serializable: set"):
        store.job_insert(NewJob(task="t.x", args={"when": {1, 2}}))
    with pytest.raises(PayloadError, match="nan"):
        store.job_insert(NewJob(task="t.x", args={"v": float("nan")}))
    with pytest.raises(PayloadError):
        store.job_insert_many([NewJob(task="ok"), NewJob(task="bad", args={"o": object()})])
    assert store.job_list() == []  # nothing partially written


def test_claim_order_is_priority_then_run_at_then_id(store: Store) -> None:
    past = datetime.now(UTC) - timedelta(seconds=10)
    low = store.job_insert(NewJob(task="low", priority=0))
    high_late = store.job_insert(NewJob(task="high_late", priority=9))
    high_early = store.job_insert(NewJob(task="high_early", priority=9, run_at=past))
    low2 = store.job_insert(NewJob(task="low2", priority=0))
    leases = store.job_claim("w", None, 10, LEASE)
    assert [x.job_id for x in leases] == [high_early.id, high_late.id, low.id, low2.id]


def test_claim_never_returns_more_than_asked(store: Store) -> None:
    store.job_insert_many([NewJob(task="t") for _ in range(25)])
    sizes = [len(store.job_claim("w", None, 7, LEASE)) for _ in range(5)]
    assert sizes == [7, 7, 7, 4, 0]


def test_claim_skips_future_jobs_and_other_queues(store: Store) -> None:
    store.job_insert(NewJob(task="later", delay=3600))
    other = store.job_insert(NewJob(task="other", queue="other"))
    mine = store.job_insert(NewJob(task="mine", queue="mine"))
    assert [x.job_id for x in store.job_claim("w", ["mine"], 10, LEASE)] == [mine.id]
    assert [x.job_id for x in store.job_claim("w", None, 10, LEASE)] == [other.id]
    assert store.job_claim("w", None, 10, LEASE) == []


def test_claim_starts_an_attempt_with_a_fresh_token(store: Store) -> None:
    job = store.job_insert(NewJob(task="t", max_attempts=3))
    (first,) = store.job_claim("w1", None, 1, LEASE)
    assert store.job_fail(Failure(first, "boom", retry_in=0)) == "pending"
    (second,) = store.job_claim("w2", None, 1, LEASE)
    assert second.token > first.token and second.attempts == 2
    running = store.job_get(job.id)
    assert running.status == "running" and running.worker == "w2"
    assert running.lease_expires_at is not None
    history = store.attempt_list(job.id)
    assert [(a.attempt, a.token, a.worker, a.outcome) for a in history] == [
        (1, first.token, "w1", "retried"),
        (2, second.token, "w2", None),
    ]
    assert history[0].error == "boom"


def test_complete_records_the_result_once(store: Store) -> None:
    job = store.job_insert(NewJob(task="t"))
    (lease,) = store.job_claim("w", None, 1, LEASE)
    assert store.job_complete(lease, {"answer": 42}) is True
    done = store.job_get(job.id)
    assert done.status == "succeeded" and done.result == {"answer": 42}
    assert done.finished_at is not None and done.lease_expires_at is None
    # The same completion sent again (its first answer was lost) is already recorded:
    # answered as such, changing nothing, and not noted as a stale write.
    assert store.job_complete(lease, {"answer": 0}) is True
    assert store.job_get(job.id).result == {"answer": 42}
    (attempt,) = store.attempt_list(job.id)
    assert attempt.outcome == "succeeded" and attempt.rejected is None


def test_a_completion_under_a_lease_that_ended_otherwise_is_refused(store: Store) -> None:
    job = store.job_insert(NewJob(task="t", max_attempts=2))
    (lease,) = store.job_claim("w", None, 1, LEASE)
    assert store.job_fail(Failure(lease, "boom", retry_in=0)) == "pending"
    assert store.job_complete(lease, "late") is False  # its attempt ended `retried`
    assert store.job_fail(Failure(lease, "boom", retry_in=0)) == "pending"  # sent again
    (again,) = store.job_claim("w", None, 1, LEASE)
    assert store.job_cancel(job.id) == "running"
    assert store.job_complete(again, "late") is False
    assert store.job_release_many([again]) == set()
    first, second = store.attempt_list(job.id)
    assert (first.outcome, first.rejected) == ("retried", "complete")
    assert (second.outcome, second.rejected) == ("cancelled", "complete,release")


def test_complete_many_records_only_held_leases(store: Store) -> None:
    store.job_insert_many([NewJob(task="t") for _ in range(4)])
    leases = store.job_claim("w", None, 4, LEASE)
    assert store.job_cancel(leases[1].job_id) == "running"
    done = store.job_complete_many([(x, f'{{"i":{x.job_id}}}') for x in leases])
    assert done == {(x.job_id, x.token) for x in (leases[0], leases[2], leases[3])}
    assert store.job_get(leases[1].job_id).status == "cancelled"
    assert store.job_get(leases[2].job_id).result == {"i": leases[2].job_id}


def test_complete_many_tells_an_old_lease_from_a_new_one_of_the_same_job(store: Store) -> None:
    """Answers are per lease, not per job: a stale lease in a batch that also holds the
    job's current lease must not pass for a success."""
    job = store.job_insert(NewJob(task="t", max_attempts=2))
    (old,) = store.job_claim("w", None, 1, 0.0)
    assert [r.job_id for r in eventually(store.job_rescue)] == [job.id]
    (new,) = store.job_claim("w", None, 1, LEASE)
    done = store.job_complete_many([(old, '"old"'), (new, '"new"')])
    assert done == {(job.id, new.token)}
    assert store.job_get(job.id).result == "new"


def test_results_of_every_json_type_round_trip(store: Store) -> None:
    values = [None, 0, -1.5, "text", 'quote" and \\ and \u0000 and ü', [1, [2]], {"k": {"v": True}}]
    store.job_insert_many([NewJob(task="t") for _ in values])
    leases = store.job_claim("w", None, len(values), LEASE)
    for lease, value in zip(leases, values, strict=True):
        assert store.job_complete(lease, value)
        assert store.job_get(lease.job_id).result == value


def test_fail_retries_while_attempts_remain_then_fails(store: Store) -> None:
    job = store.job_insert(NewJob(task="t", max_attempts=2))
    (a,) = store.job_claim("w", None, 1, LEASE)
    assert store.job_fail(Failure(a, "first", "tb1", retry_in=0)) == "pending"
    (b,) = store.job_claim("w", None, 1, LEASE)
    assert store.job_fail(Failure(b, "second", "tb2", retry_in=0)) == "failed"
    failed = store.job_get(job.id)
    assert (failed.status, failed.attempts, failed.last_error, failed.last_traceback) == (
        "failed",
        2,
        "second",
        "tb2",
    )
    # Sent again under the same lease (its answer lost): already recorded, nothing new.
    assert store.job_fail(Failure(b, "second", "tb2", retry_in=0)) == "failed"
    assert store.job_fail(Failure(a, "first", "tb1", retry_in=0)) == "pending"
    assert [x.rejected for x in store.attempt_list(job.id)] == [None, None]
    # Another failure under a lease that already failed (a timed-out thread's late one)
    # is not the same write: refused, and the first error is kept.
    assert store.job_fail(Failure(b, "late", retry_in=0)) is None
    assert store.job_get(job.id).last_error == "second"
    assert [x.rejected for x in store.attempt_list(job.id)] == [None, "fail"]


def test_fail_with_delay_schedules_the_retry(store: Store) -> None:
    store.job_insert(NewJob(task="t", max_attempts=2))
    (a,) = store.job_claim("w", None, 1, LEASE)
    assert store.job_fail(Failure(a, "later", retry_in=3600)) == "pending"
    assert store.job_claim("w", None, 1, LEASE) == []


def test_final_failure_without_retry_ignores_remaining_attempts(store: Store) -> None:
    job = store.job_insert(NewJob(task="t", max_attempts=5))
    (a,) = store.job_claim("w", None, 1, LEASE)
    assert store.job_fail(Failure(a, "fatal")) == "failed"
    assert store.job_get(job.id).status == "failed"


def test_heartbeat_extends_held_leases_and_reports_lost_ones(store: Store) -> None:
    store.job_insert_many([NewJob(task="t") for _ in range(3)])
    leases = store.job_claim("w", None, 3, 1.0)
    before = {x.job_id: store.job_get(x.job_id).lease_expires_at for x in leases}
    store.job_cancel(leases[0].job_id)
    kept = store.job_heartbeat(leases, 60.0)
    assert kept == {(x.job_id, x.token) for x in leases[1:]}
    for x in leases[1:]:
        after = store.job_get(x.job_id).lease_expires_at
        assert after is not None and after > before[x.job_id] + timedelta(seconds=30)
    assert store.attempt_list(leases[0].job_id)[0].rejected == "heartbeat"


def test_release_hands_back_the_attempt(store: Store) -> None:
    job = store.job_insert(NewJob(task="t"))
    (a,) = store.job_claim("w", None, 1, LEASE)
    assert store.job_release_many([a]) == {(job.id, a.token)}
    back = store.job_get(job.id)
    assert (back.status, back.attempts, back.worker) == ("pending", 0, None)
    (b,) = store.job_claim("w", None, 1, LEASE)
    assert b.token > a.token and b.attempts == 1
    assert store.job_complete(a, 1) is False and store.job_complete(b, 2) is True
    outcomes = [(x.outcome, x.rejected) for x in store.attempt_list(job.id)]
    assert outcomes == [("released", "complete"), ("succeeded", None)]


def test_rescue_requeues_expired_leases_and_spends_the_attempt(store: Store) -> None:
    job = store.job_insert(NewJob(task="t", max_attempts=2))
    store.job_insert(NewJob(task="held"))
    (a,) = store.job_claim("w", ["default"], 1, 0.05)
    held = store.job_claim("w", None, 1, LEASE)
    rescued = eventually(store.job_rescue)
    assert [(r.job_id, r.status) for r in rescued] == [(job.id, "pending")]
    assert store.job_rescue() == []
    assert store.job_get(held[0].job_id).status == "running"
    (b,) = store.job_claim("w2", None, 1, 0.05)
    assert b.attempts == 2
    rescued = eventually(store.job_rescue)
    assert [(r.job_id, r.status) for r in rescued] == [(job.id, "failed")]
    gone = store.job_get(job.id)
    assert gone.status == "failed" and "lease expired" in (gone.last_error or "")
    assert [x.outcome for x in store.attempt_list(job.id)] == ["lease_expired", "lease_expired"]
    assert store.job_complete(a, 1) is False


def test_rescue_worker_requeues_everything_a_dead_worker_held(store: Store) -> None:
    store.job_insert_many([NewJob(task="t", max_attempts=2) for _ in range(3)])
    mine = store.job_claim("dead", None, 2, LEASE)
    other = store.job_claim("alive", None, 1, LEASE)
    rescued = store.job_rescue_worker("dead", "exit code -9")
    assert sorted(r.job_id for r in rescued) == sorted(x.job_id for x in mine)
    assert all(r.status == "pending" for r in rescued)
    assert store.job_get(other[0].job_id).status == "running"
    assert store.attempt_list(mine[0].job_id)[0].outcome == "worker_died"


def test_cancel_and_retry(store: Store) -> None:
    pending = store.job_insert(NewJob(task="t"))
    assert store.job_cancel(pending.id) == "pending"
    assert store.job_cancel(pending.id) == "cancelled"
    retried = store.job_retry(pending.id)
    assert retried.status == "pending" and retried.max_attempts >= retried.attempts + 1
    with pytest.raises(InvalidTransition, match="only failed or cancelled"):
        store.job_retry(pending.id)
    with pytest.raises(JobNotFound):
        store.job_cancel(10**9)
    with pytest.raises(JobNotFound):
        store.job_get(10**9)


def test_retry_of_a_failed_job_gives_it_another_attempt(store: Store) -> None:
    job = store.job_insert(NewJob(task="t"))
    (a,) = store.job_claim("w", None, 1, LEASE)
    store.job_fail(Failure(a, "boom"))
    store.job_retry(job.id, extra_attempts=2)
    (b,) = store.job_claim("w", None, 1, LEASE)
    assert store.job_fail(Failure(b, "boom", retry_in=0)) == "pending"
    (c,) = store.job_claim("w", None, 1, LEASE)
    assert store.job_fail(Failure(c, "boom", retry_in=0)) == "failed"
    assert store.job_get(job.id).attempts == 3


def test_cancel_of_a_finished_job_reports_it(store: Store) -> None:
    job = store.job_insert(NewJob(task="t"))
    (a,) = store.job_claim("w", None, 1, LEASE)
    store.job_complete(a, None)
    assert store.job_cancel(job.id) == "succeeded"
    assert store.job_get(job.id).status == "succeeded"


def test_list_filters_and_pages(store: Store) -> None:
    store.job_insert_many([NewJob(task="a", queue="q1") for _ in range(5)])
    store.job_insert_many([NewJob(task="b", queue="q2") for _ in range(3)])
    store.job_claim("w", ["q2"], 1, LEASE)
    assert len(store.job_list(queue="q1")) == 5
    assert len(store.job_list(task="b", status="pending")) == 2
    page1 = store.job_list(limit=3)
    page2 = store.job_list(limit=3, offset=3)
    assert [j.id for j in page1] == sorted((j.id for j in page1), reverse=True)
    assert not {j.id for j in page1} & {j.id for j in page2}
    assert sorted(store.job_counts()) == [
        ("q1", "pending", 5),
        ("q2", "pending", 2),
        ("q2", "running", 1),
    ]


def test_migrate_twice_changes_nothing(store: Store) -> None:
    version = store.schema_version()
    assert version >= 1
    assert store.migrate() == []
    assert store.schema_version() == version


def test_payloads_round_trip_byte_exact_one_by_one_and_in_batches(store: Store) -> None:
    tricky = {"nul": "a\u0000b", "quote": "\"'", "slash": "\\", "emoji": "🚀", "k\u0000": 1}
    single = store.job_insert(NewJob(task="t", args=tricky))
    (batched,) = store.job_insert_many([NewJob(task="t", args=tricky)])
    assert store.job_get(single.id).args == tricky
    assert store.job_get(batched).args == tricky


def test_reserved_queues_are_served_only_when_named(store: Store) -> None:
    tool = store.job_insert(NewJob(task="probe", queue="onceq.diagnose.x"))
    user = store.job_insert(NewJob(task="t"))
    assert [x.job_id for x in store.job_claim("w", None, 10, LEASE)] == [user.id]
    assert not store.job_pending_exists(None)
    assert store.job_pending_exists(["onceq.diagnose.x"])
    assert [x.job_id for x in store.job_claim("w", ["onceq.diagnose.x"], 10, LEASE)] == [tool.id]


def test_queue_purge_removes_a_queues_jobs_and_attempts(store: Store) -> None:
    store.job_insert_many([NewJob(task="t", queue="gone") for _ in range(3)])
    kept = store.job_insert(NewJob(task="t"))
    store.job_claim("w", ["gone"], 1, LEASE)
    assert store.queue_purge("gone") == 3
    assert [j.id for j in store.job_list()] == [kept.id]


def test_a_lease_given_up_by_its_worker_goes_back_as_a_lost_one(store: Store) -> None:
    job = store.job_insert(NewJob(task="t", max_attempts=2))
    (lease,) = store.job_claim("w", None, 1, LEASE)
    assert store.job_give_up([lease], "given up") == {(job.id, lease.token)}
    back = store.job_get(job.id)
    assert (back.status, back.attempts, back.last_error) == ("pending", 1, "given up")
    assert store.job_give_up([lease], "given up") == {(job.id, lease.token)}  # sent again
    assert store.job_complete(lease, "late") is False
    (again,) = store.job_claim("w", None, 1, LEASE)
    assert store.job_cancel(job.id) == "running"
    assert store.job_give_up([again], "given up") == set()  # it ended otherwise
    first, second = store.attempt_list(job.id)
    assert (first.outcome, first.error, first.rejected) == ("lease_expired", "given up", "complete")
    assert (second.outcome, second.rejected) == ("cancelled", "give_up")


def test_an_attempt_is_recorded_once_when_it_ends(store: Store, store_url: str) -> None:
    """Schema v4: a claim writes no attempt record (the running attempt is the job row's,
    and attempt_list shows it from there); the attempt's end writes its one record."""
    job = store.job_insert(NewJob(task="t", max_attempts=2))
    (first,) = store.job_claim("w1", None, 1, LEASE)
    records = "SELECT token, worker, outcome FROM onceq_attempts WHERE job_id = ?"
    assert sql_rows(store_url, records, (job.id,)) == []
    (running,) = store.attempt_list(job.id)
    assert (running.token, running.worker, running.attempt, running.outcome) == (
        first.token, "w1", 1, None
    )  # fmt: skip
    assert store.job_fail(Failure(first, "boom", retry_in=0)) == "pending"
    (second,) = store.job_claim("w2", None, 1, LEASE)
    assert store.job_complete(second, 1) is True
    assert sql_rows(store_url, records + " ORDER BY token", (job.id,)) == [
        (first.token, "w1", "retried"),
        (second.token, "w2", "succeeded"),
    ]
    # the row keeps its last holder; a pending job is shown with none
    assert store.job_get(job.id).worker == "w2"


def test_an_attempt_opened_by_an_older_onceq_is_closed_not_recorded_twice(
    store: Store, store_url: str
) -> None:
    """Before schema v4 a claim opened the attempt's record: a job claimed by such a
    worker and ended by this one gets that record closed."""
    store.job_insert_many([NewJob(task="t") for _ in range(3)])
    leases = store.job_claim("old", None, 3, LEASE)
    for x in leases:
        sql_rows(
            store_url,
            "INSERT INTO onceq_attempts (job_id, token, attempt, worker, started_at) "
            "SELECT id, lease_token, attempts, worker, started_at FROM onceq_jobs WHERE id = ?",
            (x.job_id,),
        )
    assert store.job_complete(leases[0], "ok") is True
    assert store.job_fail(Failure(leases[1], "boom")) == "failed"
    assert store.job_cancel(leases[2].job_id) == "running"
    ended = sql_rows(store_url, "SELECT outcome FROM onceq_attempts ORDER BY job_id")
    assert ended == [("succeeded",), ("failed",), ("cancelled",)]
    assert [len(store.attempt_list(x.job_id)) for x in leases] == [1, 1, 1]


def test_results_and_the_next_claim_in_one_call(store: Store) -> None:
    """A worker's cycle: results recorded (stale ones refused and noted), then a claim for
    the slots they free (one statement on PostgreSQL)."""
    store.job_insert_many([NewJob(task="t", args={"i": i}) for i in range(5)])
    first = store.job_claim("w", None, 2, LEASE)
    store.job_cancel(first[1].job_id)
    done, claimed = store.job_complete_and_claim(
        [(first[0], '{"r": 0}'), (first[1], '"late"')], "w", None, 2, LEASE
    )
    assert done == {(first[0].job_id, first[0].token)}
    assert [x.args for x in claimed] == ['{"i":2}', '{"i":3}']  # JSON text, as stored
    assert store.job_get(first[0].job_id).result == {"r": 0}
    (cancelled,) = store.attempt_list(first[1].job_id)
    assert (cancelled.outcome, cancelled.rejected) == ("cancelled", "complete")
    # sent again after a lost answer: already recorded, and nothing more is claimed twice
    again, more = store.job_complete_and_claim([(first[0], '{"r": 9}')], "w", None, 5, LEASE)
    assert again == {(first[0].job_id, first[0].token)} and [x.args for x in more] == ['{"i":4}']
    assert store.job_get(first[0].job_id).result == {"r": 0}
