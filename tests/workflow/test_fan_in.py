"""Bug 2 of SPEC.md: a fan-out whose items finish together must start its join once."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

from onceq import App, Workflow
from onceq.models import NewJob
from onceq.store import Store, open_store
from tests.helpers import eventually
from tests.worker.apps import read_ledger
from tests.workflow.conftest import Spawn

RUNS = 200
AT_ONCE = 4  # runs in flight together: 3 items each must fit in the workers' 12 slots


def fan_in(app: App) -> Workflow:
    return (
        Workflow("fan-in", input=["items", "dir", "groups"])
        .step("fan", "tests.workflow.apps.meet", with_items="$input.items", concurrency=3,
              args={"n": "$item", "dir": "$input.dir", "groups": "$input.groups"},
              next=["validate"])
        .step("validate", "tests.workflow.apps.join", args={"values": "$steps.fan.results"})
    )  # fmt: skip


def test_the_interleaving_reproduces_bug_2_with_a_naive_fan_in(store: Store) -> None:
    """Control: two items complete at the same moment, then each counts its unfinished
    siblings in a transaction of its own (the original bug): both see none left and
    both dispatch the successor. The engine below must not."""
    store.job_insert_many([NewJob(task="item") for _ in range(2)])
    leases = store.job_claim("w", None, 2, 30)
    meet = threading.Barrier(2)
    dispatched: list[int] = []
    url = store.url

    def finish(index: int) -> None:
        own = open_store(url)
        meet.wait()
        own.job_complete(leases[index], index)
        meet.wait()  # both completions committed before either counts
        left = [j for j in own.job_list(task="item") if j.status != "succeeded"]
        if not left:
            dispatched.append(own.job_insert(NewJob(task="validate")).id)
        own.close()

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(dispatched) == 2  # the successor was dispatched twice


def test_items_finishing_together_start_the_join_exactly_once(
    app: App, workers: Spawn, ledger: Path, tmp_path: Path
) -> None:
    workers(concurrency=6, lease=30)
    workers(concurrency=6, lease=30)
    workflow = fan_in(app)
    # 5 items, concurrency 3: items 0-2 finish together, then items 3-4 finish together,
    # and those two completions race to start `validate`.
    data = {"items": list(range(5)), "dir": str(tmp_path / "barriers"), "groups": [3, 2]}
    run_ids: list[int] = []
    for _ in range(RUNS // AT_ONCE):
        batch = [app.run_workflow(workflow, data) for _ in range(AT_ONCE)]
        run_ids += batch
        for run_id in batch:
            eventually(lambda run_id=run_id: app.get_run(run_id).status != "running", timeout=60)

    assert len(run_ids) == RUNS
    for run_id in run_ids:
        run = app.get_run(run_id)
        assert run.status == "succeeded", (run_id, run.error)
        assert [s.dispatched for s in run.steps] == [5, 1]
        assert app.store.run_results(run_id, "validate") == [[0, 1, 2, 3, 4]]
    events = Counter(e for _, _, _, e in read_ledger(ledger))
    assert events["join"] == RUNS  # one join execution per run, over 200 races
    assert events["item:4"] == RUNS
    log = Path(f"{ledger}.log").read_text()
    assert "second dispatch refused" not in log  # the lock held; the index never had to


def test_a_thousand_item_fan_out_runs_each_item_once_and_joins_once(
    app: App, workers: Spawn, ledger: Path
) -> None:
    workers(concurrency=16)
    workers(concurrency=16)
    workflow = (
        Workflow("wide", input=["items"])
        .step("fan", "tests.workflow.apps.noop", with_items="$input.items",
              args={"n": "$item"}, next=["validate"])
        .step("validate", "tests.workflow.apps.join", args={"values": "$steps.fan.results"})
    )  # fmt: skip
    run_id = app.run_workflow(workflow, {"items": list(range(1000))})
    eventually(lambda: app.get_run(run_id).status != "running", timeout=180)
    run = app.get_run(run_id)
    assert run.status == "succeeded"
    assert [s.dispatched for s in run.steps] == [1000, 1]
    events = Counter(e for _, _, _, e in read_ledger(ledger))
    assert sum(1 for e in events if e.startswith("item:")) == 1000
    assert all(events[f"item:{n}"] == 1 for n in range(1000))
    assert events["join"] == 1
    assert app.store.run_results(run_id, "validate") == [list(range(1000))]


def test_the_concurrency_cap_is_never_exceeded(app: App, workers: Spawn, ledger: Path) -> None:
    workers(concurrency=8)
    workers(concurrency=8)  # 16 slots: only the cap of 3 can hold the items back
    workflow = Workflow("capped", input=["items"]).step(
        "fan", "tests.workflow.apps.timed", with_items="$input.items", concurrency=3,
        args={"n": "$item"})  # fmt: skip
    run_ids = [app.run_workflow(workflow, {"items": list(range(30))}) for _ in range(2)]
    for run_id in run_ids:
        eventually(lambda run_id=run_id: app.get_run(run_id).status == "succeeded", timeout=60)
    rows = read_ledger(ledger)
    for run_id in run_ids:
        jobs = {j.id for j in app.store.job_list(run_id=run_id, limit=100)}
        edges = []
        for job, _, _, event in rows:
            if job in jobs:
                kind, _, at = event.split(":")
                edges.append((float(at), 1 if kind == "start" else -1))
        edges.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
        running = peak = 0
        for _, delta in edges:
            running += delta
            peak = max(peak, running)
        assert len(edges) == 60
        assert peak == 3  # reached, never exceeded


def test_a_worker_killed_in_the_middle_of_a_fan_in_does_not_duplicate_the_join(
    app: App, workers: Spawn, ledger: Path
) -> None:
    first = workers(concurrency=6, lease=1.0)
    workflow = (
        Workflow("killed", input=["items"])
        .step("fan", "tests.workflow.apps.slow_once", with_items="$input.items",
              args={"n": "$item", "seconds": 30}, next=["validate"])
        .step("validate", "tests.workflow.apps.join", args={"values": "$steps.fan.results"})
    )  # fmt: skip
    run_id = app.run_workflow(workflow, {"items": list(range(6))})
    eventually(lambda: len(read_ledger(ledger)) == 6, timeout=30)  # all six items running
    first.kill()
    workers(concurrency=6, lease=1.0)
    eventually(lambda: app.get_run(run_id).status != "running", timeout=60)
    run = app.get_run(run_id)
    assert run.status == "succeeded"
    assert [s.dispatched for s in run.steps] == [6, 1]
    events = Counter(e for _, _, _, e in read_ledger(ledger))
    assert events["join"] == 1
    assert all(events[f"item:{n}"] == 2 for n in range(6))  # each re-run once, after the kill
    for job in app.store.job_list(run_id=run_id, limit=100):
        if job.step == "fan":
            assert [a.outcome for a in app.store.attempt_list(job.id)] == [
                "lease_expired",
                "succeeded",
            ]
