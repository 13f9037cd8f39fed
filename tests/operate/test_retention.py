"""Retention: finished jobs (with their attempts) and ended runs (with their jobs, steps
and items) older than the limit go, in small batches, and nothing else; workers do it
by themselves, one at a time, while they run; `onceq prune`."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from typing import Any

import pytest

from onceq import App, Workflow
from onceq.schedule.retention import Pruner
from onceq.store.retention import PruneKey
from onceq.store.urls import parse_url
from tests.helpers import app_with_tasks, eventually, sql_rows
from tests.operate import apps
from tests.operate.conftest import onceq

HOUR = 3600.0


@pytest.fixture
def app(store_url: str) -> Iterator[App]:
    a = app_with_tasks(store_url, apps.app)
    yield a
    a.close()


def backdate(url: str, table: str, hours: float = 2, where: str = "1 = 1") -> None:
    """Move the times of rows back, as if they were that old."""
    columns = ("created_at", "finished_at")
    if parse_url(url).dialect == "sqlite":
        sets = ", ".join(f"{c} = {c} - {hours * HOUR}" for c in columns)
    else:
        sets = ", ".join(f"{c} = {c} - interval '{hours} hours'" for c in columns)
    sql_rows(url, f"UPDATE {table} SET {sets} WHERE {where}")


def column(url: str, query: str) -> set[Any]:
    return {r[0] if len(r) == 1 else r for r in sql_rows(url, query)}


def populate(app: App, bulk: int = 0) -> dict[str, set[int]]:
    """A store holding one of everything, old and new: what must go and what must stay.
    `bulk` more old succeeded jobs (written as such, without attempts)."""
    noop, later = app.tasks["tests.operate.apps.noop"], app.tasks["tests.operate.apps.later"]
    url, store = app.url, app.store
    app.retention = None  # its own workers below do not prune
    fan = Workflow("fan", input=["xs"])
    fan.step("each", noop, args={"n": "$item"}, with_items="$input.xs")
    ended = app.run_workflow(fan, {"xs": list(range(12))})
    running = app.run_workflow(Workflow("two").step("a", noop, next=["b"]).step("b", later), {})
    cancelled = app.run_workflow(Workflow("one").step("x", later), {})
    gone = {noop.enqueue(n=n).id for n in range(25)} | {noop.enqueue(key="k-old").id}
    gone.add(app.tasks["tests.operate.apps.boom"].enqueue().id)
    app.worker(concurrency=4, queues=["default"], handle_signals=False).run(burst=True)
    held = {x.job_id for x in store.job_claim("by-hand", ["slow"], 10, HOUR)}  # x, and b
    app.cancel_run(cancelled)  # ended, with its x still running
    cancel = later.enqueue().id
    store.job_cancel(cancel)
    gone.add(cancel)
    waiting = {later.enqueue(n=n).id for n in range(3)}
    if bulk:
        first = noop.enqueue_many([{"n": n} for n in range(bulk)])
        sql_rows(url, "UPDATE onceq_jobs SET status = 'succeeded', finished_at = created_at "
                      f"WHERE id >= {min(first)}")  # fmt: skip
        gone |= set(first)
    backdate(url, "onceq_jobs")  # all of it two hours old
    backdate(url, "onceq_runs")
    recent = {noop.enqueue(n=n).id for n in range(5)}
    app.worker(concurrency=2, queues=["default"], handle_signals=False).run(burst=True)
    every = column(url, "SELECT id FROM onceq_jobs")
    gone |= {j.id for j in store.job_list(run_id=ended, limit=100)}
    assert len(gone & every) == len(gone) and held and waiting <= every - gone
    return {
        "gone": gone, "kept": every - gone, "gone_runs": {ended},
        "kept_runs": {running, cancelled}, "recent": recent,
    }  # fmt: skip


def assert_pruned_exactly(app: App, plan: dict[str, set[int]]) -> None:
    url = app.url
    assert column(url, "SELECT id FROM onceq_jobs") == plan["kept"]
    assert column(url, "SELECT id FROM onceq_runs") == plan["kept_runs"]
    assert column(url, "SELECT DISTINCT job_id FROM onceq_attempts") <= plan["kept"]
    assert column(url, "SELECT DISTINCT run_id FROM onceq_steps") == plan["kept_runs"]
    assert column(url, "SELECT DISTINCT run_id FROM onceq_step_items") <= plan["kept_runs"]


def test_pruning_deletes_what_is_old_and_finished_and_nothing_else(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = populate(app)
    attempts_before = column(app.url, "SELECT job_id, token FROM onceq_attempts")
    folded: dict[PruneKey, int] = {}

    def fold(tx: object, jobs: dict[PruneKey, int]) -> None:  # the counters' seam
        for key, n in jobs.items():
            folded[key] = folded.get(key, 0) + n

    monkeypatch.setattr(app.store, "_pruned", fold)
    batches = []
    while True:  # small batches: each one transaction of at most 7 rows of a kind
        batches.append(app.store.prune_batch(HOUR, limit=7))
        if batches[-1].done:
            break
    assert len(batches) >= len(plan["gone"]) // 7
    assert all(b.job_count <= 7 for b in batches)
    assert_pruned_exactly(app, plan)
    assert sum(b.job_count for b in batches) == sum(folded.values()) == len(plan["gone"])
    assert sum(b.runs for b in batches) == 1 and sum(b.items for b in batches) == 12
    by_status = {
        s: sum(n for (_, _, st), n in folded.items() if st == s) for s in ("failed", "cancelled")
    }
    assert by_status == {"failed": 1, "cancelled": 1}
    kept_attempts = {(j, t) for j, t in attempts_before if j in plan["kept"]}
    assert column(app.url, "SELECT job_id, token FROM onceq_attempts") == kept_attempts
    # A pruned job's key is free again: the same key makes a new job.
    again = app.tasks["tests.operate.apps.noop"].enqueue(key="k-old")
    assert again.id not in plan["gone"] | plan["kept"] and again.status == "pending"
    assert app.store.prune_batch(HOUR).job_count == 0  # nothing more is old enough


def test_one_worker_at_a_time_holds_a_pass(app: App) -> None:
    noop = app.tasks["tests.operate.apps.noop"]
    old = noop.enqueue_many([{"n": n} for n in range(30)])
    sql_rows(app.url, "UPDATE onceq_jobs SET status = 'succeeded', finished_at = created_at")
    backdate(app.url, "onceq_jobs")
    one, two = (Pruner(app.store, name, HOUR, batch=10, check_every=0) for name in "ab")
    one.run_once(0.0)
    assert one.holding  # took the pass: one batch of 10
    assert two.run_once(0.0) == 0.0 and not two.holding  # held: it does nothing
    while one.holding:
        one.run_once(0.0)
    assert column(app.url, "SELECT id FROM onceq_jobs") == set()
    assert two.run_once(0.0) == 0.0 and not two.holding  # not due again for `every`
    assert len(old) == 30


def test_workers_prune_while_they_run(app: App) -> None:
    """Two worker processes with a retention of an hour, pruning a backlog of old jobs
    (and the rest of `populate`) while a stream of new jobs runs through them."""
    plan = populate(app, bulk=1200)
    ctx = multiprocessing.get_context("spawn")
    options = {"concurrency": 2, "queues": ["default"], "lease": 5.0, "prune_every": 0.2,
               "handle_signals": False}  # fmt: skip
    workers = [ctx.Process(target=apps.run_worker, args=(app.url, options, HOUR)) for _ in "ab"]
    for w in workers:
        w.start()
    noop = app.tasks["tests.operate.apps.noop"]
    stream: list[int] = []
    try:

        def pruned() -> bool:
            stream.extend(noop.enqueue_many([{"n": n} for n in range(5)]))
            left = column(app.url, "SELECT id FROM onceq_jobs") & plan["gone"]
            return not left and column(app.url, "SELECT id FROM onceq_runs") == plan["kept_runs"]

        eventually(pruned, timeout=180, every=0.1)
        eventually(lambda: all(app.get_job(j).status == "succeeded" for j in stream), timeout=120)
    finally:
        for w in workers:
            w.terminate()
            w.join(30)
    plan["kept"] |= set(stream)
    assert_pruned_exactly(app, plan)


def test_onceq_prune_on_the_command_line(sqlite_url: str) -> None:
    app = app_with_tasks(sqlite_url, apps.app)
    plan = populate(app)
    app.close()
    bad = onceq(sqlite_url, "prune", "--older-than", "7x")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "bad duration '7x'" in bad.stderr
    assert column(sqlite_url, "SELECT id FROM onceq_jobs") == plan["gone"] | plan["kept"]
    done = onceq(sqlite_url, "prune", "--older-than", "1h", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["jobs"], report["runs"], report["older_than"]) == (len(plan["gone"]), 1, HOUR)
    assert column(sqlite_url, "SELECT id FROM onceq_jobs") == plan["kept"]
    again = onceq(sqlite_url, "prune", "--older-than", "1h")
    assert "deleted 0 job(s)" in again.stdout


def test_retention_folds_only_the_history_old_enough_to_prune(app: App) -> None:
    """Retention folds the totals only while a job old enough to go is not folded: a
    fleet finishing jobs at full speed kept it folding the newest history without end
    (a write transaction at retention's full share of the time: a third of a SQLite
    fleet's throughput)."""
    noop = app.tasks["tests.operate.apps.noop"]
    app.retention = None
    ids = [noop.enqueue(n=n).id for n in range(5)]
    app.worker(concurrency=2, handle_signals=False).run(burst=True)
    mark = "SELECT folded_to FROM onceq_stats_mark"
    assert app.store.prune_batch(HOUR).done
    assert column(app.url, mark) == {0}  # nothing old enough: nothing folded
    backdate(app.url, "onceq_jobs", where=f"id <= {ids[2]}")
    assert app.store.prune_batch(HOUR).job_count == 3  # folded, then deleted, at once
    assert column(app.url, "SELECT id FROM onceq_jobs") == set(ids[3:])
    assert sum(t.succeeded for t in app.store.stats_read().tasks) == 5  # each once
