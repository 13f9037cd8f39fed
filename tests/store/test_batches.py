"""The store's batch verbs: every write fenced by the job's lease, worktree slots and
the merge turn held by leases (free again once the job no longer runs under them)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from onceq.errors import LeaseLost, OnceqError
from onceq.models import Lease, NewJob
from onceq.store import Store
from onceq.store.batches import NewBatch

STATE: dict[str, Any] = {"status": "in_progress", "rounds": 1, "worktree": None, "start": "abc",
                         "verified": None, "feedback": None, "error": None,
                         "merged_as": None}  # fmt: skip


def make_batch(store: Store, slots: int = 2) -> int | None:
    new = NewBatch(name="b", repo="/r", base="main", base_start="s0", definition=json.dumps({}),
                   tasks=[{"number": "1", "title": "t", "batch_no": 1, "position": 0,
                           "branch": "onceq/b/1"}],
                   slots=[(i, f"/r/slot-{i}") for i in range(slots)])  # fmt: skip

    def make_run(todo: dict[int, list[str]]) -> tuple[str, str, Any, list[str]]:
        assert todo == {1: ["1"]}
        definition = {"name": "batch:b", "input": [], "steps": {}}
        return "batch:b", json.dumps(definition), {}, []

    run_id, _ = store.batch_submit(new, make_run)
    return run_id


def leases(store: Store, n: int) -> list[Lease]:
    """Claimed jobs of the batch's run (only those may write for it)."""
    record = store.batch_get("b")
    assert record is not None
    start = len(store.job_list(run_id=record.run_id))
    store.job_insert_many([NewJob(task="t", queue="q", run_id=record.run_id, step="s", item=i)
                           for i in range(start, start + n)])  # fmt: skip
    return store.job_claim("w", ["q"], n, 30)


def key(lease: Lease) -> tuple[int, int]:
    return (lease.job_id, lease.token)


def test_a_task_write_needs_the_live_lease(store: Store) -> None:
    make_batch(store)
    (lease,) = leases(store, 1)
    store.batch_task_update("b", "1", key(lease), **STATE)
    record = store.batch_get("b")
    assert record is not None and record.task("1").status == "in_progress"
    store.job_complete(lease, None)  # the job ended: its lease holds nothing now
    with pytest.raises(LeaseLost):
        store.batch_task_update("b", "1", key(lease), **{**STATE, "status": "merged"})
    record = store.batch_get("b")
    assert record is not None and record.task("1").status == "in_progress"


def test_slots_go_to_one_lease_each_and_come_back_when_the_job_ends(store: Store) -> None:
    make_batch(store, slots=2)
    a, b, c = leases(store, 3)
    first = store.batch_slot_take("b", key(a))
    assert store.batch_slot_take("b", key(a)) == first  # the one it holds already
    second = store.batch_slot_take("b", key(b))
    assert first is not None and second is not None and first[0] != second[0]
    assert store.batch_slot_take("b", key(c)) is None  # every slot held
    store.job_complete(a, None)
    assert store.batch_slot_take("b", key(c)) == first  # a's job ended: its slot is free


def test_the_merge_turn_is_one_lease_at_a_time(store: Store) -> None:
    make_batch(store)
    a, b = leases(store, 2)
    assert store.batch_merge_take("b", key(a))
    assert store.batch_merge_take("b", key(a))  # held already
    assert not store.batch_merge_take("b", key(b))
    store.batch_merge_free("b", key(b))  # not b's to free: nothing changes
    assert not store.batch_merge_take("b", key(b))
    store.batch_merge_free("b", key(a))
    assert store.batch_merge_take("b", key(b))
    store.job_complete(b, None)  # b's job ended while holding the turn
    (c,) = leases(store, 1)
    assert store.batch_merge_take("b", key(c))


def test_a_stale_lease_cannot_take_a_slot_or_the_turn(store: Store) -> None:
    make_batch(store)
    (lease,) = leases(store, 1)
    store.job_complete(lease, None)
    with pytest.raises(LeaseLost):
        store.batch_slot_take("b", key(lease))
    with pytest.raises(LeaseLost):
        store.batch_merge_take("b", key(lease))


def test_a_job_of_another_run_cannot_write_for_the_batch(store: Store) -> None:
    make_batch(store)
    store.job_insert(NewJob(task="t", queue="q"))  # running, but of no run of this batch
    (stranger,) = store.job_claim("w", ["q"], 1, 30)
    with pytest.raises(LeaseLost):
        store.batch_task_update("b", "1", key(stranger), **STATE)
    with pytest.raises(LeaseLost):
        store.batch_slot_take("b", key(stranger))


def test_a_batch_name_is_for_one_repository(store: Store) -> None:
    make_batch(store)
    other = NewBatch(name="b", repo="/elsewhere", base="main", base_start="s0",
                     definition="{}", tasks=[], slots=[])  # fmt: skip
    with pytest.raises(OnceqError, match="exists for /r"):
        store.batch_submit(other, lambda todo: ("x", "{}", {}, []))


def test_delete_forgets_the_batch_and_list_counts_its_tasks(store: Store) -> None:
    make_batch(store)
    ((record, counts),) = store.batch_list()
    assert record.name == "b" and counts == {"pending": 1}
    assert store.batch_delete("b")
    assert store.batch_get("b") is None and store.batch_list() == []
    assert not store.batch_delete("b")
