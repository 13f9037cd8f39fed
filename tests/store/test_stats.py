"""The totals behind the dashboard and /metrics (store/stats.py): exact, whatever has been
folded, monotonic, kept through deletions, and on PostgreSQL not fooled by ids that
commit out of order."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from onceq.models import Failure, Lease, NewJob, Stats
from onceq.store import Store, open_store
from onceq.store.urls import parse_url
from tests.helpers import sql_rows


def totals(stats: Stats) -> dict[tuple[str, str], dict[str, Any]]:
    """Every total of a Stats record, comparable."""
    return {
        (t.queue, t.task): {
            "enqueued": t.enqueued, "succeeded": t.succeeded, "failed": t.failed,
            "cancelled": t.cancelled, "retried": t.retried, "lease_losses": t.lease_losses,
            "rescues": t.rescues, "stale": dict(t.stale_writes), "reruns": dict(t.reruns),
            "unexplained": t.reruns_unexplained, "durations": t.duration.count,
            "waits": t.wait.count,
        }
        for t in stats.tasks
    }  # fmt: skip


def gauge(stats: Stats) -> dict[tuple[str, str], int]:
    return {(q, s): n for q, counts in stats.jobs.items() for s, n in counts.items() if n}


def rows_gauge(url: str) -> dict[tuple[str, str], int]:
    found = sql_rows(url, "SELECT queue, status, count(*) FROM onceq_jobs GROUP BY queue, status")
    return {(str(q), str(s)): int(str(n)) for q, s, n in found}


def check(store: Store, url: str) -> Stats:
    """Read without folding, fold everything, read again: the same numbers, and a gauge
    equal to the rows'."""
    before = store.stats_read(fold=False)
    while store.stats_fold(limit=3):
        pass
    after = store.stats_read(fold=False)
    assert totals(after) == totals(before)
    assert gauge(after) == gauge(before) == rows_gauge(url)
    return after


def test_a_scripted_history_counts_exactly(store: Store, store_url: str) -> None:
    ids = store.job_insert_many([NewJob("t.a", {"i": i}, queue="q1", max_attempts=2)
                                 for i in range(6)])  # fmt: skip
    store.job_insert_many([NewJob("t.b", {"i": i}, queue="q2") for i in range(2)])
    a = {x.job_id: x for x in store.job_claim("w1", ["q1"], 10, 30)}
    assert sorted(a) == ids
    store.job_complete_many([(a[i], "1") for i in ids[:3]])
    store.job_fail(Failure(a[ids[3]], "boom", retry_in=0))  # retried
    store.job_fail(Failure(a[ids[4]], "boom"))  # failed, for good
    assert [r.job_id for r in store.job_rescue_worker("w1", "killed")] == [ids[5]]
    assert not store.job_complete(a[ids[5]], 1)  # a stale write, refused and counted
    check(store, store_url)

    again = {x.job_id: x for x in store.job_claim("w2", ["q1"], 10, 30)}
    assert sorted(again) == [ids[3], ids[5]]
    store.job_complete_many([(x, "2") for x in again.values()])
    store.job_retry(ids[4])  # an operator's retry of a failed job, folded or not
    (last,) = store.job_claim("w3", ["q1"], 10, 30)
    store.job_complete(last, 3)

    b = store.job_list(queue="q2")
    store.job_cancel(b[0].id)
    (lease,) = store.job_claim("w4", ["q2"], 1, 30)
    assert store.job_give_up([lease], "gave up") == {(lease.job_id, lease.token)}
    stats = check(store, store_url)

    assert totals(stats) == {
        ("q1", "t.a"): {
            "enqueued": 6, "succeeded": 6, "failed": 1, "cancelled": 0, "retried": 1,
            "lease_losses": 1, "rescues": 1, "stale": {"complete": 1},
            "reruns": {"retry": 1, "lease_lost": 1, "operator": 1}, "unexplained": 0,
            "durations": 6, "waits": 6,
        },
        ("q2", "t.b"): {
            "enqueued": 2, "succeeded": 0, "failed": 1, "cancelled": 1, "retried": 0,
            "lease_losses": 1, "rescues": 0, "stale": {}, "reruns": {}, "unexplained": 0,
            "durations": 0, "waits": 0,
        },
    }  # fmt: skip
    assert gauge(stats) == {("q1", "succeeded"): 6, ("q2", "cancelled"): 1, ("q2", "failed"): 1}
    # Each finish once: six successes, the failure an operator retried, q2's two.
    assert sum(s + f + c for _, s, f, c in stats.minutes) == 6 + 1 + 2


def test_deleted_jobs_stay_counted(store: Store, store_url: str) -> None:
    store.job_insert_many([NewJob("t.x", {}, queue="gone") for _ in range(3)])
    leases = store.job_claim("w", ["gone"], 2, 30)
    store.job_complete_many([(x, "1") for x in leases])  # one stays pending
    store.stats_read()  # folded: two finished, one open
    store.job_insert(NewJob("t.x", {}, queue="gone"))  # and one above the mark
    assert store.queue_purge("gone") == 4
    stats = check(store, store_url)
    assert totals(stats)[("gone", "t.x")]["enqueued"] == 4
    assert totals(stats)[("gone", "t.x")]["succeeded"] == 2
    assert gauge(stats) == {}


def test_a_failure_retried_before_it_is_folded_stays_counted(store: Store, store_url: str) -> None:
    """Three failed jobs an operator retries: one folded already, one above the mark,
    and one whose part was folded while it still ran (open): each failure counts once."""
    ids = store.job_insert_many([NewJob("t.f", {"i": i}) for i in range(2)])
    leases = {x.job_id: x for x in store.job_claim("w", None, 2, 30)}
    store.job_fail(Failure(leases[ids[0]], "boom"))
    store.stats_read()  # ids[0] folded as failed; ids[1], running, is open
    store.job_fail(Failure(leases[ids[1]], "boom"))
    third = store.job_insert(NewJob("t.f", {"i": 2}))  # above the mark
    (lease,) = store.job_claim("w", None, 1, 30)
    store.job_fail(Failure(lease, "boom"))
    for job_id in (*ids, third.id):
        store.job_retry(job_id)
    stats = check(store, store_url)
    assert totals(stats)[("default", "t.f")]["failed"] == 3
    assert gauge(stats) == {("default", "pending"): 3}


def test_totals_survive_retention(store: Store, store_url: str) -> None:
    """Retention (issue 12's prune) deletes only jobs the totals have folded: each batch
    folds first, and its `_pruned` seam corrects the gauge; nothing is lost."""
    from onceq.schedule.retention import prune

    store.job_insert_many([NewJob("t.r", {"i": i}, max_attempts=2) for i in range(4)])
    leases = store.job_claim("w", None, 4, 30)
    store.job_complete_many([(x, "1") for x in leases[:2]])
    store.job_fail(Failure(leases[2], "boom"))  # failed; leases[3] keeps running
    before = totals(store.stats_read(fold=False))  # nothing folded yet
    unfolded = store._in_tx(lambda tx: tx.all("job_prune", {"older_than": 0.0, "limit": 10}))
    assert unfolded == []  # the statement alone leaves what is not counted yet
    assert prune(store, 0.0).job_count == 3  # folds, then deletes the three finished
    stats = check(store, store_url)
    assert totals(stats) == before
    assert gauge(stats) == {("default", "running"): 1}


def test_a_stale_completion_sent_with_the_next_claim_is_counted(
    store: Store, store_url: str
) -> None:
    """The worker's usual cycle (results, then a claim: one statement on PostgreSQL) with
    leases its worker lost: refused, and counted."""
    store.job_insert_many([NewJob("t.c", {}) for _ in range(2)])
    first, second = store.job_claim("w", None, 2, 30)
    store.job_rescue_worker("w", "gone")
    done, claimed = store.job_complete_and_claim([(first, "1"), (second, "2")], "w2", None, 2, 30)
    assert done == set() and claimed == []
    t = totals(check(store, store_url))[("default", "t.c")]
    assert t["stale"] == {"complete": 2} and t["lease_losses"] == 2


def test_a_rerun_after_a_shutdown_is_explained_by_it(store: Store, store_url: str) -> None:
    store.job_insert(NewJob("t.s", {}))
    store.job_claim("w", None, 1, 30)
    store.job_rescue_stopped("w", "its grace ran out")  # put back, its attempt given back
    (again,) = store.job_claim("w2", None, 1, 30)
    store.job_complete(again, 1)
    t = totals(check(store, store_url))[("default", "t.s")]
    assert t["reruns"] == {"shutdown": 1} and t["unexplained"] == 0 and t["lease_losses"] == 0


def test_an_unexplained_rerun_is_seen(store: Store, store_url: str) -> None:
    """A job run again after it succeeded — what onceq makes impossible — written around
    onceq: the counter that must stay 0 does not."""
    job = store.job_insert(NewJob("t.y", {}))
    (lease,) = store.job_claim("w", None, 1, 30)
    store.job_complete(lease, 1)
    sql_rows(store_url, "UPDATE onceq_jobs SET status = 'pending', finished_at = NULL, "
                        "lease_expires_at = NULL WHERE id = ?", (job.id,))  # fmt: skip
    (again,) = store.job_claim("w", None, 1, 30)
    store.job_complete(again, 2)
    assert totals(check(store, store_url))[("default", "t.y")]["unexplained"] == 1


# -- a random walk against a model ------------------------------------------------------


RERUN_KIND = {
    "retried": "retry",
    "lease_expired": "lease_lost",
    "worker_died": "lease_lost",
    "failed": "operator",
    "cancelled": "operator",
    "stopped": "shutdown",
}


@dataclass
class Model:
    """What each operation should add, counted in Python as it happens."""

    totals: dict[tuple[str, str], Counter[str]] = field(default_factory=dict)
    attempts: dict[int, list[str | None]] = field(default_factory=dict)  # outcomes, in order
    labels: dict[int, tuple[str, str]] = field(default_factory=dict)

    def add(self, job_id: int, name: str, n: int = 1) -> None:
        self.totals.setdefault(self.labels[job_id], Counter())[name] += n

    def claimed(self, job_id: int) -> None:
        self.attempts.setdefault(job_id, []).append(None)

    def ended(self, job_id: int, outcome: str) -> None:
        runs = self.attempts[job_id]
        runs[-1] = outcome
        if outcome == "released":
            runs.pop()
            return
        if outcome == "retried":
            self.add(job_id, "retried")
        if len(runs) > 1:
            kind = RERUN_KIND[runs[-2] or ""]
            self.add(job_id, f"rerun_{kind}")

    def expected(self) -> dict[tuple[str, str], dict[str, Any]]:
        out = {}
        for key, c in self.totals.items():
            out[key] = {
                "enqueued": c["enqueued"], "succeeded": c["succeeded"], "failed": c["failed"],
                "cancelled": c["cancelled"], "retried": c["retried"],
                "lease_losses": c["lease_lost"], "rescues": c["rescued"],
                "stale": {k[6:]: v for k, v in sorted(c.items()) if k.startswith("stale_") and v},
                "reruns": {k[6:]: v for k, v in sorted(c.items()) if k.startswith("rerun_") and v},
                "unexplained": 0, "durations": c["succeeded"], "waits": c["succeeded"],
            }  # fmt: skip
        return out


def walk(store: Store, url: str, seed: int, steps: int) -> None:
    rnd = random.Random(seed)
    model = Model()
    held: dict[int, Lease] = {}  # job id -> the live lease
    dead: list[Lease] = []  # leases taken away: their writes must be refused
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    queues, tasks = ["a", "b"], ["t.one", "t.two"]
    for step in range(steps):
        op = rnd.choice(["enqueue", "enqueue", "claim", "complete", "fail", "fail_retry",
                         "rescue", "give_up", "stale", "retry", "cancel", "bulk", "fold",
                         "release"])  # fmt: skip
        if op == "enqueue":
            news = [
                NewJob(rnd.choice(tasks), {"n": step}, queue=rnd.choice(queues),
                       max_attempts=rnd.randint(1, 3))
                for _ in range(rnd.randint(1, 4))
            ]  # fmt: skip
            for new, job_id in zip(news, store.job_insert_many(news), strict=True):
                model.labels[job_id] = (new.queue, new.task)
                model.add(job_id, "enqueued")
        elif op == "claim":
            for lease in store.job_claim(f"w{step}", None, rnd.randint(1, 3), 30):
                held[lease.job_id] = lease
                model.claimed(lease.job_id)
        elif op in ("complete", "fail", "fail_retry", "release") and held:
            lease = held.pop(rnd.choice(sorted(held)))
            if op == "complete":
                assert store.job_complete(lease, step)
                model.ended(lease.job_id, "succeeded")
                model.add(lease.job_id, "succeeded")
            elif op == "release":
                store.job_release_many([lease])
                model.ended(lease.job_id, "released")
            else:
                status = store.job_fail(
                    Failure(lease, "boom", retry_in=0 if op == "fail_retry" else None)
                )
                model.ended(lease.job_id, "retried" if status == "pending" else "failed")
                if status == "failed":
                    model.add(lease.job_id, "failed")
        elif op in ("rescue", "give_up") and held:
            lease = held.pop(rnd.choice(sorted(held)))
            if op == "rescue":
                sql_rows(url, "UPDATE onceq_jobs SET worker = 'doomed' WHERE id = ?",
                         (lease.job_id,))  # fmt: skip
                (rescued,) = store.job_rescue_worker("doomed", "killed")
                model.ended(lease.job_id, "worker_died")
                model.add(lease.job_id, "rescued")
                status = rescued.status
            else:
                store.job_give_up([lease], "gave up")
                model.ended(lease.job_id, "lease_expired")
                status = store.job_get(lease.job_id).status
            model.add(lease.job_id, "lease_lost")
            if status == "failed":
                model.add(lease.job_id, "failed")
            dead.append(lease)
        elif op == "stale" and dead:
            lease = rnd.choice(dead)
            assert not store.job_complete_many([(lease, "0")])
            model.add(lease.job_id, "stale_complete")
        elif op in ("retry", "cancel") and model.labels:
            job = store.job_get(rnd.choice(sorted(model.labels)))
            if op == "retry" and job.status in ("failed", "cancelled"):
                store.job_retry(job.id)
            elif op == "cancel" and job.status in ("pending", "running"):
                store.job_cancel(job.id)
                model.add(job.id, "cancelled")
                if job.id in held:
                    model.ended(job.id, "cancelled")
                    dead.append(held.pop(job.id))
        elif op == "bulk":
            from onceq.models import JobFilter

            f = JobFilter(queue=rnd.choice(queues))
            _, upto = store.job_match_count(f, "retry")
            store.job_bulk_retry(f, upto)
        elif op == "fold":
            store.stats_fold(limit=rnd.randint(1, 5))
        stats = store.stats_read(fold=False)
        now = totals(stats)
        assert now == model.expected(), f"step {step}: {op}"
        finishes = sum(c[k] for c in model.totals.values() for k in ("succeeded", "failed",
                                                                      "cancelled"))  # fmt: skip
        assert sum(s + f + c for _, s, f, c in stats.minutes) == finishes, f"step {step}: {op}"
        assert gauge(stats) == rows_gauge(url), f"step {step}: {op}"
        for key, values in now.items():  # totals never go down
            for name, value in values.items():
                if isinstance(value, int):
                    assert value >= seen.get(key, {}).get(name, 0), (step, op, key, name)
        seen = now
    check(store, url)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_histories_match_a_model_on_sqlite(sqlite_url: str, seed: int) -> None:
    store = open_store(sqlite_url)
    try:
        walk(store, sqlite_url, seed, 120)
    finally:
        store.close()


@pytest.mark.postgres
def test_random_history_matches_a_model_on_postgres(pg_url: str) -> None:
    store = open_store(pg_url)
    try:
        walk(store, pg_url, 4, 80)
    finally:
        store.close()


# -- PostgreSQL: ids that commit out of order -------------------------------------------


@pytest.fixture
def pg_conn(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    parsed = parse_url(pg_url)
    options = f"-c search_path={parsed.options['schema']}"
    with psycopg.connect(parsed.target, options=options) as conn:
        yield conn


@pytest.mark.postgres
def test_a_job_that_commits_after_a_higher_id_is_counted(
    pg_url: str, pg_conn: psycopg.Connection[Any]
) -> None:
    """A transaction inserts a job (id n) and stays open while a later job (id n+1)
    commits and the history is folded past both: n is kept as a gap, and its job is
    counted once it commits (folded past it without that, it would never be)."""
    store = open_store(pg_url)
    try:
        pg_conn.execute(
            "INSERT INTO onceq_jobs (queue, task, args) VALUES ('late', 't.late', '{}')"
        )  # left uncommitted
        store.job_insert(NewJob("t.early", {}, queue="late"))
        for _ in range(5):
            store.stats_fold()
        live = totals(store.stats_read(fold=False))
        assert {k: v["enqueued"] for k, v in live.items()} == {("late", "t.early"): 1}
        pg_conn.commit()
        for _ in range(5):
            store.stats_fold()
        stats = check(store, pg_url)
        assert {k: v["enqueued"] for k, v in totals(stats).items()} == {
            ("late", "t.late"): 1,
            ("late", "t.early"): 1,
        }
        assert sql_rows(pg_url, "SELECT folded_to FROM onceq_stats_mark") == [(2,)]
        # Both still pending: open, to be counted when they finish.
        assert sorted(sql_rows(pg_url, "SELECT job_id FROM onceq_stats_open")) == [(1,), (2,)]
    finally:
        store.close()
