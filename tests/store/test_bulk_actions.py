"""Bulk actions act on what the filter asks for when they act, not on what a listing
saw a moment before: a worker may start a listed job in between."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from onceq.models import JobFilter, Lease, NewJob
from onceq.store import Store

LEASE = 30.0


def start_one_between_listing_and_acting(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> list[Lease]:
    """A worker claims a job after the bulk action listed its batch, before it acts."""
    started: list[Lease] = []
    listing = store._bulk

    def bulk(f: JobFilter, upto: int, action: str, act: Callable[[list[int]], int]) -> int:
        def claim_then_act(ids: list[int]) -> int:
            if not started:
                started.extend(store.job_claim("w", None, 1, LEASE))
            return act(ids)

        return listing(f, upto, action, claim_then_act)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "_bulk", bulk)
    return started


def test_a_bulk_cancel_of_pending_jobs_spares_one_a_worker_started_meanwhile(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = store.job_insert_many([NewJob(task="t", args={"i": i}) for i in range(3)])
    started = start_one_between_listing_and_acting(store, monkeypatch)
    assert store.job_bulk_cancel(JobFilter(status="pending"), max(ids)) == 2
    (lease,) = started
    assert store.job_get(lease.job_id).status == "running"
    assert store.job_complete(lease, '"kept"') is True  # its result is not thrown away
    others = sorted(set(ids) - {lease.job_id})
    assert [store.job_get(i).status for i in others] == ["cancelled", "cancelled"]


def test_a_bulk_cancel_of_any_open_job_takes_one_started_meanwhile_too(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = store.job_insert_many([NewJob(task="t", args={"i": i}) for i in range(3)])
    started = start_one_between_listing_and_acting(store, monkeypatch)
    assert store.job_bulk_cancel(JobFilter(), max(ids)) == 3
    assert store.job_get(started[0].job_id).status == "cancelled"
