"""`onceq diagnose`: prove exactly-once on the configured store, under chaos if asked.

Each scenario runs in a queue of its own (`onceq.diagnose.<id>`, a reserved name that
workers serving "all queues" leave alone), with worker processes started here. Every
handler execution is written to an append-only file, not to the store; afterwards each
job's executions are checked against its attempt history:

- a re-run after a crash is allowed, and counted: the earlier execution ran in a worker
  process this tool SIGKILLed, and its attempt ended `lease_expired`/`worker_died`;
- anything else executed twice is a duplicate: a second execution under one lease, or
  a re-run whose earlier worker was not killed (even if its lease expired: a lease lost
  by a live worker is what exactly-once must survive without a second execution);
- a missing job is one that did not succeed, or that succeeded without an execution.

The scenarios' jobs, attempts and runs are deleted at the end.
"""

from __future__ import annotations

import itertools
import math
import random
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onceq.models import Job
from onceq.store import Store
from onceq.tools import probe
from onceq.tools.fleet import Fleet

PROBE_APP = "onceq.tools.probe:app"
CRASH = ("lease_expired", "worker_died")
CHAOS_SECONDS = 6.0
KILL_EVERY = (1.0, 2.5)  # seconds between kills, drawn uniformly
# Leases: short under chaos, so killed workers' jobs come back within seconds; roomy
# otherwise, so that a busy machine starving a heartbeat is not what the run measures.
CHAOS_LEASE, LEASE = 2.0, 10.0


@dataclass
class Report:
    """What one scenario found."""

    scenario: str
    tasks: int
    workers: int
    executions: int = 0
    duplicates: int = 0
    missing: int = 0
    crash_reruns: int = 0
    kills: int = 0
    seconds: float = 0.0
    ideal: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No duplicate and no missing execution."""
        return self.duplicates == 0 and self.missing == 0

    @property
    def efficiency(self) -> float | None:
        """Ideal makespan over measured makespan (for tasks of known duration)."""
        return None if self.ideal is None or not self.seconds else self.ideal / self.seconds

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "scenario": self.scenario, "tasks": self.tasks, "workers": self.workers,
            "executions": self.executions, "duplicates": self.duplicates,
            "missing": self.missing, "crash_reruns": self.crash_reruns, "kills": self.kills,
            "seconds": round(self.seconds, 3),
            "efficiency": None if self.efficiency is None else round(self.efficiency, 4),
            "ok": self.ok, "notes": self.notes,
        }  # fmt: skip


class Diagnosis:
    """The scenarios, against one store."""

    def __init__(self, store: Store, url: str, *, timeout: float = 300.0) -> None:
        self.store, self.url, self.timeout = store, url, timeout
        probe.app.use(url)

    def race(self, tasks: int, workers: int, seconds: float = 0.2) -> Report:
        """Few tasks, as many workers racing for them as possible."""
        report = Report(f"race {tasks} tasks / {workers} workers", tasks, workers,
                        ideal=math.ceil(tasks / workers) * seconds)  # fmt: skip
        return self._run(report, workers, 1, lambda: probe.run.enqueue_many(
            [{"seconds": seconds}] * tasks, queue=self._queue))  # fmt: skip

    def bulk(self, tasks: int, workers: int, *, chaos: bool = False) -> Report:
        """Many short tasks; with chaos, a random worker is SIGKILLed every 1-2.5 s and a
        new one started."""
        name = f"{tasks} tasks / {workers} workers" + (" with kills" if chaos else "")
        report = Report(name, tasks, workers)
        concurrency = 4
        # Under chaos the run should last ~CHAOS_SECONDS, so that several kills land
        # while jobs are in flight.
        seconds = min(max(CHAOS_SECONDS * workers * concurrency / tasks, 0.01), 1.0) if chaos else 0
        return self._run(report, workers, concurrency, lambda: probe.run.enqueue_many(
            [{"seconds": seconds}] * tasks, queue=self._queue), chaos=chaos)  # fmt: skip

    def fan_in(self, runs: int, workers: int) -> Report:
        """with_items fan-ins whose last items finish at the same moment (a barrier):
        each run's join must execute exactly once."""
        from onceq.workflow import Workflow, start_run

        report = Report(f"fan-in x{runs} (5 items, concurrency 3)", runs * 6, workers)
        folder = self._folder / "barriers"
        flow = (
            Workflow("onceq-diagnose-fan-in", input=["items", "folder", "groups"])
            .step("fan", probe.item, with_items="$input.items", concurrency=3, next=["join"],
                  args={"n": "$item", "folder": "$input.folder", "groups": "$input.groups"})
            .step("join", probe.join, args={"values": "$steps.fan.results"})
        )  # fmt: skip

        def start() -> None:
            data = {"items": list(range(5)), "folder": str(folder), "groups": [3, 2]}
            definition = flow.definition.compile(probe.app)
            for _ in range(runs):
                start_run(self.store, definition, data)

        return self._run(report, workers, 4, start)

    # -- one scenario --------------------------------------------------------------

    def _run(
        self,
        report: Report,
        workers: int,
        concurrency: int,
        enqueue: Callable[[], object],
        *,
        chaos: bool = False,
    ) -> Report:
        self._queue = f"onceq.diagnose.{uuid.uuid4().hex[:10]}"
        probe.app.default_queue = self._queue  # workflow steps take the app's queue
        self._folder = Path(tempfile.mkdtemp(prefix="onceq-diagnose-"))
        ledger = self._folder / "ledger"
        fleet = Fleet(PROBE_APP, self.url, self._folder, queue=self._queue,
                      concurrency=concurrency, lease=CHAOS_LEASE if chaos else LEASE,
                      env={"ONCEQ_PROBE_LEDGER": str(ledger)})  # fmt: skip
        try:
            try:
                fleet.start(workers)
                start = time.time()
                enqueue()
                jobs = self._wait(fleet if chaos else None)
            finally:
                fleet.stop()
            ends = [j.finished_at.timestamp() for j in jobs if j.finished_at]
            report.seconds = max(ends, default=start) - start
            report.kills = fleet.kills
            self._check(report, jobs, probe.read_ledger(ledger), fleet.killed)
        finally:
            self.store.queue_purge(self._queue)
            shutil.rmtree(self._folder, ignore_errors=True)
        return report

    def _wait(self, chaos: Fleet | None) -> list[Job]:
        deadline = time.monotonic() + self.timeout
        next_kill = time.monotonic() + random.uniform(*KILL_EVERY)
        while self.store.jobs_active([self._queue]):
            if time.monotonic() > deadline:
                break
            if chaos is not None and time.monotonic() > next_kill:
                chaos.kill_one()
                next_kill = time.monotonic() + random.uniform(*KILL_EVERY)
            time.sleep(0.05)
        return self.store.job_list(queue=self._queue, limit=10_000_000)

    def _check(
        self,
        report: Report,
        jobs: list[Job],
        ledger: list[tuple[int, int, int]],
        killed: set[int],
    ) -> None:
        runs = Counter((job_id, token) for job_id, token, _ in ledger)
        pids = {(job_id, token): pid for job_id, token, pid in ledger}
        tokens: dict[int, list[int]] = {}
        for job_id, token in runs:
            tokens.setdefault(job_id, []).append(token)
        report.executions = len(ledger)
        report.tasks = len(jobs)
        for job in jobs:
            executed = sorted(tokens.get(job.id, []))
            if job.status != "succeeded" or not executed:
                report.missing += 1
                report.notes.append(f"job {job.id} ended {job.status} after "
                                    f"{len(executed)} execution(s): {job.last_error}")  # fmt: skip
            report.duplicates += sum(runs[(job.id, t)] - 1 for t in executed)
            if len(executed) < 2:
                continue
            attempts = {a.token: a for a in self.store.attempt_list(job.id)}
            for before, token in itertools.pairwise(executed):
                lost = before in attempts and attempts[before].outcome in CRASH
                if lost and pids[(job.id, before)] in killed:
                    report.crash_reruns += 1
                else:
                    report.duplicates += 1
                    why = "its worker was not killed" if lost else "without a lease loss"
                    report.notes.append(f"job {job.id} ran again under lease {token}: "
                                        f"{why}")  # fmt: skip


def scenarios(tasks: int, workers: int, chaos: bool) -> list[Callable[[Diagnosis], Report]]:
    """The default set: races for few tasks, one large run, the fan-in race; and the large
    run again under kills with --chaos."""
    chosen: list[Callable[[Diagnosis], Report]] = [
        lambda d: d.race(2, 2),
        lambda d: d.race(4, 3),
        lambda d: d.race(6, 3),
        lambda d: d.bulk(tasks, workers),
        lambda d: d.fan_in(20, workers),
    ]
    if chaos:
        chosen.append(lambda d: d.bulk(tasks, workers, chaos=True))
    return chosen
