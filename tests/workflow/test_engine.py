"""Workflow semantics: joins, failures, on_failure, empty and bad fan-outs, cancellation."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from onceq import App, Workflow, current_job
from tests.helpers import eventually
from tests.worker.conftest import run_in_thread


def _run(app: App, workflow: Workflow, data: dict[str, Any] | None = None) -> int:
    run_id = app.run_workflow(workflow, data or {})
    run_in_thread(app.worker(concurrency=4, lease=10)).join(60)
    return run_id


@pytest.fixture
def steps(app: App) -> dict[str, Any]:
    """Tasks recording the order they ran in."""
    order: list[str] = []
    lock = threading.Lock()

    @app.task(name="step")
    def step(name: str, inputs: Any = None) -> dict[str, Any]:
        with lock:
            order.append(name)
        return {"name": name, "inputs": inputs}

    @app.task(name="fails")
    def fails(n: int) -> int:
        if n == 3:
            raise ValueError(f"item {n} is bad")
        return n

    return {"order": order}


def test_a_diamond_runs_its_join_once_after_both_branches(app: App, steps: dict[str, Any]) -> None:
    wf = (
        Workflow("diamond")
        .step("a", "step", args={"name": "a"}, next=["b", "c"])
        .step("b", "step", args={"name": "b", "inputs": "$steps.a.result.name"}, next=["d"])
        .step("c", "step", args={"name": "c"}, next=["d"])
        .step("d", "step",
              args={"name": "d", "inputs": ["$steps.b.result", "$steps.c.result.name"]})
    )  # fmt: skip
    run_id = _run(app, wf)
    run = app.get_run(run_id)
    assert run.status == "succeeded"
    order = steps["order"]
    assert order.count("d") == 1 and order.index("d") == 3 and order[0] == "a"
    assert app.store.run_results(run_id, "d") == [{
        "name": "d", "inputs": [{"name": "b", "inputs": "a"}, "c"]}]  # fmt: skip


def test_a_failed_item_stops_new_items_runs_on_failure_and_fails_the_run(
    app: App, steps: dict[str, Any]
) -> None:
    wf = (
        Workflow("failing", input=["items"])
        .step("fan", "fails", with_items="$input.items", args={"n": "$item"}, concurrency=2,
              next=["after"], on_failure=["report"])
        .step("after", "step", args={"name": "after"})
        .step("report", "step", args={"name": "report"})
    )  # fmt: skip
    run_id = _run(app, wf, {"items": list(range(10))})
    run = app.get_run(run_id)
    assert run.status == "failed"
    assert run.error is not None and "item 3 is bad" in run.error
    fan, after, report = run.steps
    assert fan.status == "failed" and fan.dispatched < 10  # no new items after the failure
    assert fan.counts.get("pending", 0) == fan.counts.get("running", 0) == 0
    assert (after.status, after.dispatched) == ("skipped", 0)
    assert (report.status, report.dispatched) == ("succeeded", 1)
    assert steps["order"] == ["report"]


def test_an_empty_fan_out_succeeds_at_once_with_an_empty_list(
    app: App, steps: dict[str, Any]
) -> None:
    wf = (
        Workflow("empty", input=["items"])
        .step("fan", "step", with_items="$input.items", args={"name": "$item"}, next=["join"])
        .step("join", "step", args={"name": "join", "inputs": "$steps.fan.results"})
    )  # fmt: skip
    run_id = _run(app, wf, {"items": []})
    run = app.get_run(run_id)
    assert run.status == "succeeded"
    assert [(s.name, s.status, s.total, s.dispatched) for s in run.steps] == [
        ("fan", "succeeded", 0, 0),
        ("join", "succeeded", 1, 1),
    ]
    assert app.store.run_results(run_id, "join") == [{"name": "join", "inputs": []}]


def test_with_items_that_is_not_a_list_fails_the_run_clearly(
    app: App, steps: dict[str, Any]
) -> None:
    wf = (
        Workflow("notalist", input=["items"])
        .step("fan", "step", with_items="$input.items", args={"name": "$item"}, next=["join"])
        .step("join", "step", args={"name": "join"})
    )  # fmt: skip
    run_id = app.run_workflow(wf, {"items": {"a": 1}})
    run = app.get_run(run_id)  # failed at once: nothing to run
    assert run.status == "failed"
    assert run.error == (
        "step 'fan' failed: with_items '$input.items' of step 'fan' is not "
        'a list (got dict {"a": 1})'
    )
    assert app.store.job_list(run_id=run_id) == []


def test_a_reference_into_missing_data_fails_the_step(app: App, steps: dict[str, Any]) -> None:
    wf = Workflow("missing", input=["items"]).step(
        "fan", "step", with_items="$input.items", args={"name": "$item.name"}
    )
    run_id = _run(app, wf, {"items": [{"name": "x"}, {"title": "no name"}]})
    run = app.get_run(run_id)
    assert run.status == "failed"
    assert "reference '$item.name': nothing at 'name'" in (run.error or "")


def test_literals_escapes_and_nested_references(app: App, steps: dict[str, Any]) -> None:
    wf = Workflow("refs", input=["who", "list"]).step("only", "step", args={
        "name": "$$not a reference",
        "inputs": {"who": "$input.who", "first": "$input.list.0", "plain": "text", "n": 3,
                   "nested": [{"deep": "$input.who"}]},
    })  # fmt: skip
    run_id = _run(app, wf, {"who": "ada", "list": ["x", "y"]})
    assert app.store.run_results(run_id, "only") == [{
        "name": "$not a reference",
        "inputs": {"who": "ada", "first": "x", "plain": "text", "n": 3,
                   "nested": [{"deep": "ada"}]},
    }]  # fmt: skip


def test_cancelling_a_run_cancels_pending_jobs_and_advances_nothing(app: App) -> None:
    started, release = threading.Event(), threading.Event()

    @app.task(name="slow")
    def slow(n: int) -> int:
        started.set()
        release.wait(30)
        return n

    @app.task(name="after")
    def after() -> None: ...

    wf = (
        Workflow("cancel", input=["items"])
        .step("fan", "slow", with_items="$input.items", args={"n": "$item"}, concurrency=1,
              next=["after"])
        .step("after", "after")
    )  # fmt: skip
    run_id = app.run_workflow(wf, {"items": [1, 2, 3]})
    thread = run_in_thread(app.worker(concurrency=2, lease=10), burst=True)
    assert started.wait(10)
    assert app.cancel_run(run_id) == "running"
    assert app.cancel_run(run_id) == "cancelled"
    release.set()
    thread.join(30)
    run = app.get_run(run_id)
    assert run.status == "cancelled"
    fan, after_step = run.steps
    assert fan.counts == {"succeeded": 1}  # the running one finished; nothing new started
    assert (after_step.status, after_step.dispatched) == ("cancelled", 0)


def test_cancelling_an_item_job_fails_its_step(app: App) -> None:
    @app.task(name="item")
    def item(n: int) -> int:
        return n

    @app.task(name="handler")
    def handler() -> str:
        return "handled"

    wf = Workflow("op", input=["items"]).step(
        "fan", "item", with_items="$input.items", args={"n": "$item"}, on_failure=["handler"]
    ).step("handler", "handler")  # fmt: skip
    run_id = app.run_workflow(wf, {"items": [1, 2]})
    first = min(j.id for j in app.store.job_list(run_id=run_id))
    assert app.store.job_cancel(first) == "pending"
    run_in_thread(app.worker(concurrency=2)).join(30)
    run = app.get_run(run_id)
    assert run.status == "failed" and "cancelled" in (run.error or "")
    assert run.steps[1].status == "succeeded"


def test_retried_items_continue_the_same_run_without_duplicates(app: App) -> None:
    @app.task(name="flaky", retries=2, retry_backoff=0)
    def flaky(n: int) -> int:
        if current_job().attempt == 1:
            raise ConnectionError("once")
        return n

    @app.task(name="sum")
    def total(values: list[int]) -> int:
        return sum(values)

    wf = (
        Workflow("retries", input=["items"])
        .step("fan", "flaky", with_items="$input.items", args={"n": "$item"}, concurrency=2,
              next=["sum"])
        .step("sum", "sum", args={"values": "$steps.fan.results"})
    )  # fmt: skip
    run_id = _run(app, wf, {"items": [1, 2, 3, 4]})
    run = app.get_run(run_id)
    assert run.status == "succeeded"
    assert [s.dispatched for s in run.steps] == [4, 1]
    assert all(j.attempts == 2 for j in app.store.job_list(run_id=run_id) if j.step == "fan")
    assert app.store.run_results(run_id, "sum") == [10]


def test_workflow_jobs_cannot_be_retried_by_hand(app: App) -> None:
    from onceq.errors import InvalidTransition

    @app.task(name="boom")
    def boom() -> None:
        raise RuntimeError("no")

    run_id = _run(app, Workflow("w").step("only", "boom"))
    (job,) = app.store.job_list(run_id=run_id)
    with pytest.raises(InvalidTransition, match="re-run the workflow"):
        app.store.job_retry(job.id)
    eventually(lambda: app.get_run(run_id).status == "failed")


def test_a_running_item_of_a_cancelled_run_is_not_retried(app: App) -> None:
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []

    @app.task(name="fails_later", retries=3, retry_backoff=0)
    def fails_later() -> None:
        runs.append(current_job().attempt)
        started.set()
        release.wait(30)
        raise ConnectionError("would be retried, but the run is cancelled")

    wf = Workflow("c").step("only", "fails_later")
    run_id = app.run_workflow(wf)
    thread = run_in_thread(app.worker(concurrency=1), burst=True)
    assert started.wait(10)
    assert app.cancel_run(run_id) == "running"
    release.set()
    thread.join(30)
    assert runs == [1]
    run = app.get_run(run_id)
    assert run.status == "cancelled"
    assert [(s.status, s.counts) for s in run.steps] == [("cancelled", {"cancelled": 1})]
