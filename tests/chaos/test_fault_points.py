"""Scenario 14, named fault points: at each of four places where a fault costs the most,
each of three faults, on both backends, for several seeds (onceq/faults.py):

- points: after a claim's COMMIT (`claim.committed`); before a completion's COMMIT
  (`complete.before_commit`); inside the rescue's transaction, once it has picked and
  written the expired leases (the rescue's read and write are one statement: there is no
  moment between them) and before its commit (`rescue.before_commit`); between a job's
  final status and its run's advance, in the same transaction (`advance.before`);
- faults: the worker process dies there (`crash`); the connection is lost there
  (`lost`: before a commit nothing is written, after one the answer never comes); the
  worker stalls there for longer than its lease (`delay`).

Plain jobs and workflow runs (a fan-out, then a join) flow through two supervised worker
processes with the rule in force. Whatever happens, the checker finds no broken
guarantee (every step dispatched once among them); a lost answer costs nothing at all
(no re-run, no failure, the join run once), and only a crash or a stall past the lease
may re-run a job — counted as a lease loss (at least once across crashes).
"""

from __future__ import annotations

import re
import time

import pytest

from onceq import App, Workflow
from tests.chaos.harness import LEASE_LOSS, SOAK, Chaos, all_finished, sql, wait_for

pytestmark = pytest.mark.chaos

POINTS = ("claim.committed", "complete.before_commit", "rescue.before_commit", "advance.before")
ACTIONS = ("crash", "lost", "delay")
# How often each fault fires where it is set. Rescues and run advances are passed less
# often than claims and completions, so they fire more often there; never always: a
# rescue or an advance that never got through would hold its jobs back for ever.
RATE = {
    "crash": {"claim.committed": 0.04, "complete.before_commit": 0.04,
              "rescue.before_commit": 0.15, "advance.before": 0.2},
    "lost": {"claim.committed": 0.25, "complete.before_commit": 0.25,
             "rescue.before_commit": 0.5, "advance.before": 0.25},
    "delay": {"claim.committed": 0.1, "complete.before_commit": 0.1,
              "rescue.before_commit": 0.3, "advance.before": 0.2},
}  # fmt: skip
LEASE = 1.5
JOBS, RUNS, ITEMS = 40, 3, 4


def _seeds() -> list[int]:
    return list(range(1, 11)) if SOAK else [1]


@pytest.mark.parametrize("seed", _seeds())
@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("point", POINTS)
def test_a_fault_at_a_named_point_breaks_no_guarantee(
    chaos: Chaos, app: App, point: str, action: str, seed: int
) -> None:
    rate = RATE[action][point]
    env = {
        "ONCEQ_FAULTS": f"{point}={action}@{rate}",
        "ONCEQ_FAULTS_SEED": str(seed),
        "ONCEQ_FAULTS_DELAY": str(LEASE * 1.5),
    }
    args = ("--processes", "2", "--concurrency", "4", "--lease", str(LEASE))
    workers = chaos.supervisor("workers", *args, env=env)
    short = app.tasks["chaos.short"]
    flow = (
        Workflow("faulty", input=["values"])
        .step("items", "chaos.short", with_items="$input.values", args={"n": "$item"},
              concurrency=2, next=["join"])
        .step("join", "chaos.short", args={"n": -1})
    )  # fmt: skip
    plain: list[int] = []
    runs: list[int] = []

    def feed() -> None:
        """Plain jobs, jobs whose (absent) worker's lease runs out — so rescues have
        something to do with or without faults — and workflow runs."""
        plain.extend(
            app.store.job_insert_many(
                [short.new_job({"n": n, "sleep": 0.01 * (n % 3)}, {}) for n in range(JOBS)]
            )
        )
        plain.extend(app.store.job_insert_many([short.new_job({"n": -n}, {}) for n in range(3)]))
        app.store.job_claim("nobody", None, 3, 0.0)  # claimed by a worker that is gone
        runs.extend(app.run_workflow(flow, {"values": list(range(ITEMS))}) for _ in range(RUNS))

    def hits() -> int:
        log = chaos.log("workers").read_text()
        return len(re.findall(rf"injected {action} at {re.escape(point)}", log))

    feed()
    deadline = time.monotonic() + 120
    while not hits() and time.monotonic() < deadline:  # until the fault has fired
        wait_for(lambda: hits() or all_finished(chaos.url), timeout=120)
        if not hits():
            time.sleep(0.5)  # the fault schedule: some idle passes (rescues), then more
            feed()

    assert hits(), f"{point} never fired in the workers"  # (their supervisor has none)

    def done() -> bool:
        ended = all(app.get_run(r).status != "running" for r in runs)
        return ended and all_finished(chaos.url, len(plain))

    wait_for(done, timeout=240)
    assert chaos.terminate(workers) == 0

    log = chaos.log("workers").read_text()
    # One join job per run always; run once too unless a crash or a stall took its lease.
    successors = {"join"} if action == "lost" else set()
    figures = chaos.check(expected_ids=plain, successor_steps=successors)
    chaos.report(figures, point=point, action=action, seed=seed, faults=hits())
    if action == "crash":
        # A crash spends an attempt of every job its process held: a job whose worker
        # died often enough ends failed, as promised (at least once, up to its retries).
        figures.assert_clean()
        spent = sql(chaos.url, "SELECT job_id, outcome FROM onceq_attempts WHERE job_id IN "
                               "(SELECT id FROM onceq_jobs WHERE status = 'failed')")  # fmt: skip
        assert all(outcome in LEASE_LOSS for _, outcome in spent), spent
        assert set(figures.statuses) <= {"succeeded", "failed"}, figures.statuses
        assert all(app.get_run(r).status in ("succeeded", "failed") for r in runs)
    else:
        chaos.finished_ok(figures)
        assert all(app.get_run(r).status == "succeeded" for r in runs)
    for r in runs:  # a join for each run that got that far, and only one
        joins = [j for j in app.store.job_list(run_id=r) if j.step == "join"]
        assert len(joins) == (app.get_run(r).status == "succeeded"), (r, joins)
    if action == "lost":
        assert figures.reruns == 0, "a lost answer re-ran a job"
        assert figures.successor_executions == len(runs)
    else:
        assert figures.reruns == figures.reruns_lease_loss
    if action != "crash":
        assert "injected crash" not in log
    assert hits() > 0, f"no {action} injected at {point} with seed {seed}"
