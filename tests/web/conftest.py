"""Fixtures for the dashboard tests: an App on each backend with a history made by a
real worker (jobs that succeed, fail, are retried; a workflow run with a fan-out; a code
batch's rows), and the dashboard over it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.testclient import TestClient

from onceq import App, Workflow
from onceq.models import NewJob
from onceq.store import Store
from onceq.store.batches import NewBatch
from onceq.web import Credentials, Options, create_app
from tests.helpers import app_with_tasks
from tests.web import apps

BATCH_STATE: dict[str, Any] = {
    "status": "fixing",
    "rounds": 2,
    "worktree": "/tmp/wt/slot-0",
    "start": "abc",
    "verified": None,
    "feedback": "pytest: 1 failed <b>test_x</b>",
    "error": None,
    "merged_as": None,
}


@dataclass
class History:
    """What `populate` made: ids to look for on the pages."""

    ok: list[int]
    failed: list[int]
    flaky: list[int]
    hostile: int
    run_id: int
    lost: int  # lost its lease (its worker died), its late write refused, then ran again


def task(app: App, name: str) -> Any:
    return app.tasks[f"tests.web.apps.{name}"]


def populate(app: App) -> History:
    """A history made by a real worker (in this process, on threads)."""
    ok = [task(app, "ok").enqueue(n=n).id for n in range(6)]
    failed = [task(app, "boom").enqueue(n=n).id for n in range(3)]
    flaky = [task(app, "flaky").enqueue(n=n).id for n in range(2)]
    hostile = (
        app.tasks[apps.HOSTILE_TASK]
        .enqueue(
            payload={"<img src=x onerror=alert(1)>": "</pre><script>alert('payload')</script>"}
        )
        .id
    )
    wf = (
        Workflow("fanout")
        .step("split", "tests.web.apps.ok", args={"n": 0}, next=["each"])
        .step(
            "each",
            "tests.web.apps.ok",
            with_items="$input.items",
            args={"n": "$item"},
            concurrency=2,
            next=["sum"],
        )
        .step("sum", "tests.web.apps.total", args={"values": "$steps.each.results"})
    )
    run_id = app.run_workflow(wf, {"items": [1, 2, 3, 4]})
    lost = task(app, "sturdy").configure(queue="urgent").enqueue(n=99).id
    (lease,) = app.store.job_claim("host-a:4242:doomed", ["urgent"], 1, 30)
    app.store.job_rescue_worker("host-a:4242:doomed", "killed by the test")
    assert not app.store.job_complete(lease, 99)  # its late result: refused
    app.worker(concurrency=4).run(burst=True)
    make_batch(app.store)
    return History(ok, failed, flaky, hostile, run_id, lost)


def make_batch(store: Store) -> None:
    """A code batch's rows (no git: the dashboard only reads them), one task sent back."""
    new = NewBatch(
        name="refactor",
        repo="/src/repo",
        base="main",
        base_start="s0",
        definition=json.dumps({}),
        tasks=[
            {
                "number": n,
                "title": f"task {n}",
                "batch_no": 1,
                "position": i,
                "branch": f"onceq/refactor/{n}",
            }
            for i, n in enumerate(["1", "2"])
        ],
        slots=[(0, "/tmp/wt/slot-0")],
    )

    def make_run(todo: dict[int, list[str]]) -> tuple[str, str, Any, list[str]]:
        return "batch:refactor", json.dumps({"name": "batch:refactor", "steps": {}}), {}, []

    run_id, _ = store.batch_submit(new, make_run)
    store.job_insert(
        NewJob("batch.task", queue="onceq.batch.refactor", run_id=run_id, step="1", item=0)
    )
    (lease,) = store.job_claim("batcher", ["onceq.batch.refactor"], 1, 30)
    store.batch_task_update("refactor", "1", (lease.job_id, lease.token), **BATCH_STATE)
    store.job_cancel(lease.job_id)


@pytest.fixture
def app(store_url: str) -> Iterator[App]:
    a = app_with_tasks(store_url, apps.app)
    yield a
    a.close()


@pytest.fixture
def history(app: App) -> History:
    return populate(app)


def client_for(store: Store, **options: Any) -> TestClient:
    """The dashboard over `store`, without live updates (a test client has no server
    to stream them from) and without caching the totals."""
    opts = Options(live=False, stats_ttl=0, **options)
    return TestClient(create_app(store, opts), base_url="http://127.0.0.1:8400")


@pytest.fixture
def client(app: App, history: History) -> Iterator[TestClient]:
    with client_for(app.store) as c:
        yield c


CREDENTIALS = Credentials("admin", "s3cret:with:colons")
