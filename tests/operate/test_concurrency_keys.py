"""Concurrency limits per key: never more than N running jobs with one key across every
worker, enforced inside the claim; a full key holds up no other; a slot is free again
when its job's lease ends, however it ends."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from onceq import App, PayloadError
from onceq.models import Failure, Lease, NewJob
from onceq.store import Store, base, open_store
from tests.helpers import eventually, sql_rows


@pytest.fixture
def app(store_url: str) -> Iterator[App]:
    a = App(store_url, retention=None)
    yield a
    a.close()


def keyed_job(key: str, limit: int = 2, priority: int = 0) -> NewJob:
    return NewJob(task="t", concurrency_key=key, concurrency_limit=limit, priority=priority,
                  max_attempts=5)  # fmt: skip


def running_per_key(store: Store) -> Counter[str]:
    rows = sql_rows(
        store.url,
        "SELECT concurrency_key FROM onceq_jobs "
        "WHERE status = 'running' AND concurrency_key IS NOT NULL",
    )
    return Counter(str(r[0]) for r in rows)


def test_racing_claims_admit_no_more_than_the_limit(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight claimers at once, each with its own connection, 16 jobs of one key with one
    slot (a count-then-claim admits all of them): exactly one is admitted, every round.
    Each claimer looks at one candidate only, so on PostgreSQL each locks another job and
    all of them try to insert slot 0 of the key at once."""
    monkeypatch.setattr(base, "KEYED_SCAN", 1)
    monkeypatch.setattr(base, "KEYED_SCAN_MORE", 0)
    claimers = [open_store(store.url) for _ in range(8)]
    try:
        for round_ in range(4):
            store.job_insert_many([keyed_job(f"k{round_}", limit=1) for _ in range(16)])
            gate = threading.Barrier(len(claimers))
            got: list[int] = []

            def claim(s: Store, name: str, gate: threading.Barrier, got: list[int]) -> None:
                gate.wait()
                got.extend(x.job_id for x in s.job_claim(name, None, 1, 60, keyed=True))

            threads = [threading.Thread(target=claim, args=(s, f"w{i}", gate, got))
                       for i, s in enumerate(claimers)]  # fmt: skip
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert len(got) == 1, got
        assert running_per_key(store) == Counter({f"k{r}": 1 for r in range(4)})
    finally:
        for s in claimers:
            s.close()


def test_a_full_key_holds_up_no_other_and_plain_claims_take_no_keyed_job(store: Store) -> None:
    store.job_insert_many([keyed_job("hot", priority=5) for _ in range(40)])  # first in line
    store.job_insert_many([keyed_job(k) for k in ("a", "b", "a", "b", "a")])
    plain = store.job_insert(NewJob(task="p"))
    assert [x.job_id for x in store.job_claim("w", None, 10, 60)] == [plain.id]
    first = store.job_claim("w", None, 10, 60, keyed=True)
    assert running_per_key(store) == Counter({"hot": 2, "a": 2, "b": 2})
    assert len(first) == 6
    assert store.job_claim("w", None, 10, 60, keyed=True) == []  # every key at its limit


ENDS = ["completes", "fails", "is released", "is given up", "is cancelled", "expires", "is rescued"]


def test_a_slot_is_free_again_however_its_job_s_lease_ends(store: Store) -> None:
    store.job_insert_many([keyed_job("k", limit=1) for _ in range(10)])

    def claim(before: str | None) -> list[Lease]:
        lease = 0.05 if before == "expires" else 60  # the next end: an expired lease
        got = store.job_claim("w", None, 5, lease, keyed=True)
        assert running_per_key(store)["k"] <= 1
        return got

    (held,) = claim(ENDS[0])
    for i, end in enumerate(ENDS):
        assert claim(None) == []  # the key is at its limit
        if end == "completes":
            store.job_complete(held, None)
        elif end == "fails":
            store.job_fail(Failure(held, "boom", retry_in=0.0))  # pending again
        elif end == "is released":
            store.job_release_many([held])
        elif end == "is given up":
            store.job_give_up([held], "no heartbeat got through")
        elif end == "is cancelled":
            store.job_cancel(held.job_id)
        elif end == "expires":
            eventually(store.job_rescue, timeout=10)
        else:
            store.job_rescue_worker("w", "its process died")
        (held,) = claim(ENDS[i + 1] if i + 1 < len(ENDS) else None)  # its slot came back
    store.prune_batch(0)  # retention also clears slots no claim came back to
    assert sql_rows(store.url, "SELECT count(*) FROM onceq_concurrency_slots") == [(1,)]


def test_bad_keys_are_refused_in_one_line(app: App) -> None:
    def serve(customer_id: int, region: str = "eu") -> None: ...

    for options, message in [
        ({"concurrency_key": "c:{customer_id}"}, "concurrency_key needs concurrency=N"),
        ({"concurrency": 0}, "concurrency must be a whole number from 1"),
        ({"concurrency": 2**31}, "concurrency must be a whole number from 1"),
        ({"concurrency": 2, "concurrency_key": "c:{nobody}"}, "'nobody' is not one"),
        ({"concurrency": 2, "concurrency_key": "c:{customer_id.real}"}, "is not one"),
        ({"concurrency": 2, "concurrency_key": "c:{customer_id"}, "bad concurrency_key"),
    ]:
        with pytest.raises(ValueError, match=message):
            app.task(name=f"t{len(app.tasks)}", **options)(serve)
    limited = app.task(concurrency=2, concurrency_key="c:{customer_id}:{region}")(serve)
    assert limited.enqueue(customer_id=7).concurrency_key == "c:7:eu"  # a default counts
    assert limited.enqueue(customer_id="8", region="us").concurrency_key == "c:8:us"
    whole = app.task(name="whole", concurrency=3)(serve)  # no key: the task as a whole
    assert whole.enqueue(customer_id=1).concurrency_key == "whole"
    long = app.task(name="long", concurrency=1, concurrency_key="{region}")(serve)
    with pytest.raises(PayloadError, match=r"concurrency key 'xx.*is 2000 bytes"):
        long.enqueue(customer_id=1, region="x" * 2000)


class _RolledBack(Exception):
    pass


def _claim_work(store: Store, key: str, limit: int) -> int:
    """The work of a keyed claim of 3 jobs of `key`: SQLite's VM steps (in hundreds), or
    the rows PostgreSQL's slot numbers came to (EXPLAIN ANALYZE, rolled back)."""
    store.job_insert_many([keyed_job(key, limit=limit) for _ in range(3)])
    if store.dialect == "sqlite":
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0

        conn = store._conn  # type: ignore[attr-defined]
        conn.set_progress_handler(count, 100)
        try:
            assert len(store.job_claim("w", None, 3, 60, keyed=True)) == 3
        finally:
            conn.set_progress_handler(None, 0)
        return steps[0]
    found: list[int] = []

    def explain(tx: Any) -> None:
        tx.cur.execute(b"EXPLAIN (ANALYZE, FORMAT JSON) " + tx.q["job_claim_keyed"],
                       {**tx.base, "worker": "w", "queues": None, "limit": 3, "scan": 28,
                        "lease": 60.0, "claim": 1})  # fmt: skip
        plan = tx.cur.fetchone()["QUERY PLAN"]
        nodes = [json.loads(plan) if isinstance(plan, str) else plan]
        while nodes:
            node = nodes.pop()
            if isinstance(node, dict):
                if node.get("Function Name") == "generate_series":
                    found.append(node["Actual Rows"] * node["Actual Loops"])
                nodes.extend(node.values())
            elif isinstance(node, list):
                nodes.extend(node)
        raise _RolledBack

    with pytest.raises(_RolledBack):
        store._in_tx(explain)  # type: ignore[attr-defined]
    return sum(found)


def test_a_claim_costs_no_more_for_a_key_with_a_huge_limit(store: Store) -> None:
    # The free slot numbers were made from 0 to the key's limit at every claim: with
    # concurrency=1_000_000, a million numbers per claim (seconds, under SQLite's write
    # lock); the first free ones are below the slots held plus the candidates.
    small, huge = _claim_work(store, "small", 3), _claim_work(store, "huge", 1_000_000)
    assert 0 < huge <= 2 * small, (small, huge)
