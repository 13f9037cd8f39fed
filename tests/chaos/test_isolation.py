"""Scenario 13, other isolation levels: a database whose default is REPEATABLE READ or
SERIALIZABLE (ALTER DATABASE … SET default_transaction_isolation). The stress test (eight
processes racing for every job) and the fan-in race (items of many runs finishing
together on worker processes) must come out as they do under READ COMMITTED: every job
once, one successor per run, no run left hanging."""

from __future__ import annotations

import time

import pytest

from onceq import Workflow
from onceq.store import open_store
from tests.chaos.conftest import fresh_app
from tests.chaos.harness import Chaos, read_ledger, soak, wait_for
from tests.store.test_stress import claim_every_job_once

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

ITEMS = 4


def test_the_stress_test_holds_whatever_the_default_isolation(pg_isolation_url: str) -> None:
    store = open_store(pg_isolation_url)
    try:
        claim_every_job_once(store, pg_isolation_url, soak(3000, 20000))
    finally:
        store.close()


def test_the_fan_in_race_holds_whatever_the_default_isolation(
    pg_isolation_url: str, new_chaos: object
) -> None:
    chaos: Chaos = new_chaos(pg_isolation_url)  # type: ignore[operator]
    app = fresh_app(pg_isolation_url)
    runs = soak(6, 40)
    workflow = (
        Workflow("fan", input=["key", "values"])
        .step("items", "chaos.item", with_items="$input.values",
              args={"key": "$input.key", "value": "$item"}, next=["join"])
        .step("join", "chaos.join", args={"key": "$input.key", "values": "$steps.items.results"})
    )  # fmt: skip
    slots = str(runs * ITEMS // 2 + 2)  # every item of every run can run at once
    items = chaos.supervisor("items", "--processes", "2", "--concurrency", slots,
                             "--queue", "items", "--lease", "30")  # fmt: skip
    joiner, _ = chaos.worker(name="joiner", queues=["join"], concurrency=2, lease=30)
    run_ids = {
        f"run{r}": app.run_workflow(workflow, {"key": f"run{r}", "values": list(range(ITEMS))})
        for r in range(runs)
    }
    started = lambda: len({e.job for e in read_ledger(chaos.ledger)})  # noqa: E731
    wait_for(lambda: started() >= runs * ITEMS, timeout=120)
    for key in run_ids:  # each run's items all finish at once
        (chaos.gates / key).touch()
        time.sleep(0.02)
    wait_for(lambda: all(app.get_run(r).status != "running" for r in run_ids.values()), 120)
    assert chaos.terminate(items) == 0 and chaos.terminate(joiner) == 0
    statuses = {app.get_run(r).status for r in run_ids.values()}
    app.close()
    figures = chaos.check(successor_steps={"join"})
    level = pg_isolation_url.split("onceq_test_")[1].split("?")[0]
    chaos.report(figures, default_isolation=level, runs=runs, items_per_run=ITEMS)
    chaos.finished_ok(figures)
    assert statuses == {"succeeded"}
    assert figures.runs == runs and figures.successor_executions == runs
