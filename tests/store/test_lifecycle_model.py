"""Property test: no sequence of store operations reaches a state the model forbids.

A hypothesis state machine drives enqueue, claim, heartbeat, complete, fail, release,
rescue, cancel and retry in random order against the real store, and checks each
answer and every job's status, attempt count and token against a small model. A write
sent again under a lease whose attempt it already ended (as after a lost answer) is
answered as recorded and changes nothing; under a lease that ended otherwise, refused.
Leases are either long or zero-length: a zero lease has expired by the next statement,
which makes rescue deterministic on both backends without waiting.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from onceq.errors import InvalidTransition
from onceq.models import Failure, Lease, NewJob
from onceq.store import Store, open_store
from onceq.store.sqlite import SqliteStore
from onceq.store.urls import parse_url
from tests.helpers import sql_rows

LONG = 3600.0


@dataclass
class Model:
    status: str
    attempts: int
    max_attempts: int
    token: int = 0
    expired: bool = False


def _machine(store: Store) -> type[RuleBasedStateMachine]:
    class Lifecycle(RuleBasedStateMachine):
        leases = Bundle("leases")

        def __init__(self) -> None:
            super().__init__()
            for table in ("onceq_attempts", "onceq_jobs"):
                sql_rows(store.url, f"DELETE FROM {table}")
            self.jobs: dict[int, Model] = {}
            self.ended: dict[tuple[int, int], str] = {}  # how each lease's attempt ended

        def end(self, lease: Lease, outcome: str) -> None:
            self.ended[(lease.job_id, lease.token)] = outcome

        def ended_by(self, lease: Lease, *outcomes: str) -> str | None:
            outcome = self.ended.get((lease.job_id, lease.token))
            return outcome if outcome in outcomes else None

        def held(self, lease: Lease) -> bool:
            job = self.jobs[lease.job_id]
            return job.status == "running" and job.token == lease.token

        @rule(max_attempts=st.integers(1, 3))
        def enqueue(self, max_attempts: int) -> None:
            job = store.job_insert(NewJob(task="t", max_attempts=max_attempts))
            self.jobs[job.id] = Model("pending", 0, max_attempts)

        @rule(target=leases, limit=st.integers(1, 3), short=st.booleans())
        def claim(self, limit: int, short: bool):  # type: ignore[no-untyped-def]
            pending = {i for i, j in self.jobs.items() if j.status == "pending"}
            got = store.job_claim("w", None, limit, 0.0 if short else LONG)
            assert len(got) == min(limit, len(pending))
            for lease in got:
                assert lease.job_id in pending
                job = self.jobs[lease.job_id]
                assert lease.token > job.token
                job.status, job.token, job.expired = "running", lease.token, short
                job.attempts += 1
                assert lease.attempts == job.attempts
            return multiple(*got)

        @rule(lease=leases)
        def heartbeat(self, lease: Lease) -> None:
            expected = self.held(lease)
            assert ((lease.job_id, lease.token) in store.job_heartbeat([lease], LONG)) == expected
            if expected:
                self.jobs[lease.job_id].expired = False

        @rule(lease=leases)
        def complete(self, lease: Lease) -> None:
            held = self.held(lease)
            expected = held or self.ended_by(lease, "succeeded") is not None
            assert store.job_complete(lease, lease.token) == expected
            if held:
                self.jobs[lease.job_id].status = "succeeded"
                self.end(lease, "succeeded")

        @rule(lease=leases, retry=st.booleans())
        def fail(self, lease: Lease, retry: bool) -> None:
            expected = None
            if self.held(lease):
                job = self.jobs[lease.job_id]
                expected = "pending" if retry and job.attempts < job.max_attempts else "failed"
                job.status = expected
                self.end(lease, "retried" if expected == "pending" else "failed")
            elif earlier := self.ended_by(lease, "retried", "failed"):
                expected = "pending" if earlier == "retried" else "failed"
            got = store.job_fail(Failure(lease, "boom", retry_in=0 if retry else None))
            assert got == expected

        @rule(lease=leases)
        def release(self, lease: Lease) -> None:
            held = self.held(lease)
            expected = held or self.ended_by(lease, "released") is not None
            assert ((lease.job_id, lease.token) in store.job_release_many([lease])) == expected
            if held:
                job = self.jobs[lease.job_id]
                job.status, job.attempts = "pending", job.attempts - 1
                self.end(lease, "released")

        @rule()
        def rescue(self) -> None:
            expected = {}
            for i, job in self.jobs.items():
                if job.status == "running" and job.expired:
                    job.status = "pending" if job.attempts < job.max_attempts else "failed"
                    expected[i] = job.status
                    self.ended[(i, job.token)] = "lease_expired"
            got = store.job_rescue()
            assert {r.job_id: r.status for r in got} == expected

        @precondition(lambda self: self.jobs)
        @rule(data=st.data())
        def cancel(self, data: st.DataObject) -> None:
            job_id = data.draw(st.sampled_from(sorted(self.jobs)))
            job = self.jobs[job_id]
            assert store.job_cancel(job_id) == job.status
            if job.status == "running":
                self.ended[(job_id, job.token)] = "cancelled"
            if job.status in ("pending", "running"):
                job.status = "cancelled"

        @precondition(lambda self: self.jobs)
        @rule(data=st.data())
        def retry(self, data: st.DataObject) -> None:
            job_id = data.draw(st.sampled_from(sorted(self.jobs)))
            job = self.jobs[job_id]
            if job.status in ("failed", "cancelled"):
                assert store.job_retry(job_id).status == "pending"
                job.status = "pending"
                job.max_attempts = max(job.max_attempts, job.attempts + 1)
            else:
                with pytest.raises(InvalidTransition):
                    store.job_retry(job_id)

        @invariant()
        def store_matches_model(self) -> None:
            rows = {j.id: j for j in store.job_list(limit=1000)}
            assert set(rows) == set(self.jobs)
            for job_id, model in self.jobs.items():
                row = rows[job_id]
                assert (row.status, row.attempts, row.max_attempts) == (
                    model.status,
                    model.attempts,
                    model.max_attempts,
                ), job_id
                assert row.lease_token == model.token
                assert (row.lease_expires_at is not None) == (row.status == "running")

    return Lifecycle


def _ticking_clock() -> object:
    ticks = itertools.count()
    return lambda: 1_700_000_000.0 + next(ticks) * 0.001


def test_lifecycle_matches_the_model(store_url: str) -> None:
    parsed = parse_url(store_url)
    if parsed.dialect == "sqlite":
        # A clock that moves 1 ms per reading: a zero lease is expired by the next one.
        open_store(store_url).close()
        store: Store = SqliteStore(store_url, parsed, clock=_ticking_clock())  # type: ignore[arg-type]
        examples = 60
    else:
        store = open_store(store_url)
        examples = 20
    try:
        run_state_machine_as_test(
            _machine(store),
            settings=settings(
                max_examples=examples,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        store.close()
