"""What one completion of a fan-out item reads does not grow with the fan-out.

Each completion used to read the step's whole item list and the run's whole input (and
decode them): 7 ms per completion at 500 items, 42 ms at 8,000, hours for a step of
100,000. Counted here in bytes read from the database, which does not depend on the
machine's speed: the same for 40 items as for 4,000.
"""

from __future__ import annotations

from typing import Any

import pytest

from onceq import App, Workflow
from onceq.store import postgres, sqlite


def _bytes_read_by_one_completion(app: App, items: int, monkeypatch: pytest.MonkeyPatch) -> int:
    wf = Workflow("wide", input=["items", "tag"]).step(
        "fan", "item", with_items="$input.items", args={"n": "$item", "tag": "$input.tag"},
        concurrency=1, next=["after"],
    ).step("after", "item", args={"n": -1, "tag": "done"})  # fmt: skip
    app.default_queue = queue = f"wide-{items}"  # the steps' queue: one per run here
    run_id = app.run_workflow(wf, {"items": [f"item-{i:06d}" for i in range(items)], "tag": "t"})
    (lease,) = app.store.job_claim("w", [queue], 1, 30.0)
    read = [0]
    with monkeypatch.context() as patch:
        for tx in (sqlite._SqliteTx, postgres._PgTx):
            for method in ("all", "one"):
                real = getattr(tx, method)

                def counting(self: Any, name: str, params: Any, _real: Any = real) -> Any:
                    found = _real(self, name, params)
                    for row in found if isinstance(found, list) else [found]:
                        if row is not None:
                            values = row.values() if isinstance(row, dict) else tuple(row)
                            read[0] += sum(len(str(v)) for v in values)
                    return found

                patch.setattr(tx, method, counting)
        assert app.store.job_complete(lease, 0)  # ...and dispatches the next item
    assert len(app.store.job_list(run_id=run_id, status="pending")) == 1
    return read[0]


def test_a_completion_reads_as_much_at_4000_items_as_at_40(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.task(name="item")
    def item(n: Any, tag: str) -> Any:
        return n

    small = _bytes_read_by_one_completion(app, 40, monkeypatch)
    large = _bytes_read_by_one_completion(app, 4000, monkeypatch)
    assert large <= small + 64, (small, large)  # a few more digits in the ids, no more


def test_sqlite_keeps_the_large_values_of_runs_and_steps_last(sqlite_url: str) -> None:
    """SQLite keeps a row's columns in line, in order: reading a column after a large
    value walks its overflow pages. Every completion reads a run's status and its steps'
    later columns, so a run's input and a step's list (which may hold a whole fan-out)
    come last — else a completion costs more as the list grows, in pages, not bytes."""
    from onceq.store import open_store
    from tests.helpers import sql_rows

    open_store(sqlite_url).close()
    for table, large in (("onceq_runs", {"definition", "input"}), ("onceq_steps", {"items"})):
        columns = [row[1] for row in sql_rows(sqlite_url, f"PRAGMA table_info({table})")]
        assert set(columns[-len(large) :]) == large, (table, columns)
