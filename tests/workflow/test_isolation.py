"""The fan-in under a database whose default isolation is REPEATABLE READ or SERIALIZABLE.

Under REPEATABLE READ a transaction reads one snapshot, taken by its first statement.
Two items finishing together each wrote their own completion under a snapshot that did
not have the other's; once they had the run's lock, each counted the other as still
running, so the step never finished and the join was never dispatched — silently. The
store now pins READ COMMITTED on its transactions, whatever the database's default.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from onceq import App, Workflow
from onceq.store import postgres

pytestmark = pytest.mark.postgres


@pytest.fixture
def app(pg_isolation_url: str) -> Iterator[App]:
    a = App(pg_isolation_url)

    @a.task(name="item")
    def item(n: int) -> int:
        return n

    @a.task(name="join")
    def join(values: list[int]) -> list[int]:
        return values

    yield a
    a.close()


def test_two_items_finishing_together_dispatch_the_join_once(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    wf = (
        Workflow("together", input=["items"])
        .step("fan", "item", with_items="$input.items", args={"n": "$item"}, next=["join"])
        .step("join", "join", args={"values": "$steps.fan.results"})
    )
    run_id = app.run_workflow(wf, {"items": [1, 2]})
    first, second = app.store.job_claim("w", None, 2, 30.0)
    # Both completions have written their own row (and, under REPEATABLE READ, taken
    # their snapshot) before either goes on to lock the run.
    barrier = threading.Barrier(2, timeout=20)
    real = postgres._PgTx.all

    def all_(self: Any, name: str, params: dict[str, Any]) -> Any:
        rows = real(self, name, params)
        if name == "job_complete":
            barrier.wait()
        return rows

    monkeypatch.setattr(postgres._PgTx, "all", all_)
    others = [App(app.url), App(app.url)]  # one connection each
    errors: list[BaseException] = []

    def complete(store_app: App, lease: Any) -> None:
        try:
            assert store_app.store.job_complete(lease, lease.job_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=complete, args=(others[0], first)),
        threading.Thread(target=complete, args=(others[1], second)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    monkeypatch.undo()
    for a in others:
        a.close()
    assert not errors, errors
    run = app.get_run(run_id)
    steps = {s.name: s for s in run.steps}
    assert steps["fan"].status == "succeeded", steps
    joins = app.store.job_list(run_id=run_id, status="pending")
    assert [(j.step, j.args) for j in joins] == [("join", {"values": [1, 2]})]
