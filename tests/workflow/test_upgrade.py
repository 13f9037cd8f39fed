"""Fan-outs across the move to schema v2 (one row per item, in onceq_step_items).

During an upgrade, workers of schema v1 may still run beside v2 ones: they read a step's
list from onceq_steps.items, which v2 still writes. And a step a v1 worker started has
no item rows: a v2 worker moves its list into them the first time it needs an item.
Long lists go in by parts, each statement well under a worker's statement bound.
"""

from __future__ import annotations

import json

import pytest

from onceq import App, Workflow
from onceq.workflow import engine
from tests.helpers import sql_rows
from tests.worker.conftest import run_in_thread


def _flow() -> Workflow:
    return Workflow("up", input=["items"]).step(
        "fan", "item", with_items="$input.items", args={"n": "$item"}, concurrency=2,
        next=["sum"],
    ).step("sum", "total", args={"values": "$steps.fan.results"})  # fmt: skip


@pytest.fixture
def tasks(app: App) -> App:
    app.task(name="item")(lambda n: n * 10)
    app.task(name="total")(lambda values: sum(values))
    return app


def test_a_v2_fan_out_keeps_the_list_v1_workers_read(tasks: App) -> None:
    run_id = tasks.run_workflow(_flow(), {"items": [1, 2, 3]})
    ((items,),) = sql_rows(tasks.url, "SELECT items FROM onceq_steps WHERE run_id = ? AND "
                                      "step = 'fan'", (run_id,))  # fmt: skip
    listed = json.loads(items) if isinstance(items, str) else items  # (psycopg decodes json)
    assert listed == [1, 2, 3]


def test_a_step_started_without_item_rows_is_dispatched_from_its_list(tasks: App) -> None:
    run_id = tasks.run_workflow(_flow(), {"items": [1, 2, 3, 4, 5]})
    sql_rows(tasks.url, "DELETE FROM onceq_step_items WHERE run_id = ?", (run_id,))  # as v1
    run_in_thread(tasks.worker(concurrency=4)).join(60)
    run = tasks.get_run(run_id)
    assert run.status == "succeeded", run.error
    assert tasks.store.run_results(run_id, "sum") == [150]
    assert len(tasks.store.job_list(run_id=run_id)) == 6  # each item once, and the join


def test_a_long_list_goes_in_by_parts(tasks: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "ITEMS_PER_STATEMENT", 3)
    run_id = tasks.run_workflow(_flow(), {"items": list(range(1, 9))})
    rows = sql_rows(tasks.url, "SELECT item FROM onceq_step_items WHERE run_id = ? "
                               "ORDER BY item", (run_id,))  # fmt: skip
    assert [r[0] for r in rows] == list(range(8))
    run_in_thread(tasks.worker(concurrency=4)).join(60)
    assert tasks.store.run_results(run_id, "sum") == [360]
