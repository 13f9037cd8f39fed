"""Scenario 9, fan-in under simultaneous completions: each run's items wait at a gate and
finish together when it opens; right then a worker process holding items is SIGKILLed,
between the last item and the successor. Every run finishes, with exactly one successor
job and one successor execution."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from onceq import App, Workflow
from tests.chaos.harness import Chaos, alive, children, read_ledger, soak, wait_for

pytestmark = pytest.mark.chaos

ITEMS = 4
PROCESSES = 3


def test_one_successor_per_run_when_items_finish_together_and_a_worker_dies(
    chaos: Chaos, app: App
) -> None:
    runs = soak(4, 25)
    workflow = (
        Workflow("fan", input=["key", "values"])
        .step(
            "items",
            "chaos.item",
            with_items="$input.values",
            args={"key": "$input.key", "value": "$item"},
            next=["join"],
        )
        .step("join", "chaos.join", args={"key": "$input.key", "values": "$steps.items.results"})
    )
    slots = runs * ITEMS // PROCESSES + 2  # every item of every run can run at once
    items = chaos.supervisor(
        "items",
        *("--processes", str(PROCESSES), "--concurrency", str(slots), "--queue", "items"),
        *("--lease", "60"),
    )
    # The successor runs apart, on a worker that is never killed: one execution is owed.
    joiner, _ = chaos.worker(name="joiner", queues=["join"], concurrency=2, lease=30)
    run_ids = {
        f"run{r}": app.run_workflow(workflow, {"key": f"run{r}", "values": list(range(ITEMS))})
        for r in range(runs)
    }

    def item_starts() -> dict[int, int]:
        """Each item job's latest start: its pid."""
        return {e.job: e.pid for e in read_ledger(chaos.ledger) if e.event == "start"}

    wait_for(lambda: len(item_starts()) == runs * ITEMS, timeout=120)
    rng = random.Random()
    kills = 0
    for key, run_id in run_ids.items():
        (chaos.gates / key).touch()  # this run's items all finish now
        time.sleep(rng.uniform(0, 0.03))  # injected: the kill lands among the completions
        mine = {j.id for j in app.store.job_list(run_id=run_id) if j.step == "items"}

        def candidates(mine: set[int] = mine) -> list[int]:
            """A live process that ran this run's items; else any live item worker (the
            supervisor may be restarting the ones killed before)."""
            held = {pid for job, pid in item_starts().items() if job in mine and alive(pid)}
            return sorted(held) or children(items.pid)

        victim = rng.choice(wait_for(candidates, timeout=60))
        os.kill(victim, signal.SIGKILL)
        kills += 1
        wait_for(lambda v=victim: not alive(v))  # not picked twice
    wait_for(lambda: all(app.get_run(r).status != "running" for r in run_ids.values()), timeout=180)
    assert chaos.terminate(items) == 0
    assert chaos.terminate(joiner) == 0

    for key, run_id in run_ids.items():
        run = app.get_run(run_id)
        assert run.status == "succeeded", (run_id, run.error)
        (join,) = [j for j in app.store.job_list(run_id=run_id) if j.step == "join"]
        assert join.result == {"key": key, "sum": 10 * sum(range(ITEMS)), "count": ITEMS}
    figures = chaos.check(successor_steps={"join"})
    deaths = chaos.log("items").read_text().count("signal SIGKILL")
    chaos.report(figures, runs=runs, items_per_run=ITEMS, kills=kills, worker_deaths=deaths)
    chaos.finished_ok(figures)
    assert figures.runs == runs and figures.successor_executions == runs
    assert figures.reruns == figures.reruns_lease_loss  # items re-run only after a death
    assert deaths == kills
