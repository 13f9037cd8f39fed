"""`onceq bench`: throughput, latency and coordination efficiency, per backend.

Each backend gets a store of its own for the run, so the user's jobs are never
touched: a fresh SQLite file (in the system's temp folder), and a fresh schema in the
PostgreSQL database (dropped afterwards). Every figure is measured here, in one run,
on whatever machine runs it; the machine's load moves them, so compare figures taken
side by side, not across runs.

Scenarios:
- efficiency: tasks of known duration D on W workers (W processes, one slot each);
  efficiency = ceil(tasks / W) * D / measured makespan, the makespan counted from the
  enqueue to the last finish;
- batches: the same for code-task batches in real git worktrees, merges included
  (onceq.tools.batchbench);
- no-op throughput: N jobs enqueued first, then 2 worker processes;
- enqueue rate: one by one through task.enqueue, and batched through enqueue_many;
- latency: enqueue -> start (p50, p95, p99) of jobs enqueued 10 ms apart to an idle
  worker, measured on the store's own clock;
- fan-out: a 1,000-item with_items step and its join: run start to join finished.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onceq.models import Job
from onceq.store import Store, open_store
from onceq.tools import probe
from onceq.tools.fleet import Fleet

PROBE_APP = "onceq.tools.probe:app"


@dataclass
class Figure:
    """One measured figure."""

    backend: str
    scenario: str
    value: float
    unit: str
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "backend": self.backend, "scenario": self.scenario, "value": round(self.value, 4),
            "unit": self.unit, "detail": self.detail,
        }  # fmt: skip


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is (`quick` shrinks them for smoke tests)."""

    jobs: int = 20_000
    one_by_one: int = 2_000
    latency_jobs: int = 200
    fan_out: int = 1_000
    concurrency: int = 64
    efficiency: tuple[tuple[int, int, float], ...] = ((2, 2, 0.5), (4, 3, 0.5), (6, 3, 0.5),
                                                      (200, 8, 0.02))  # fmt: skip
    # code-task batches in git worktrees: (tasks, workers, agent seconds)
    batches: tuple[tuple[int, int, float], ...] = ((2, 2, 2.0), (4, 3, 2.0), (6, 3, 2.0))

    @classmethod
    def quick(cls) -> Sizes:
        """A few seconds per backend."""
        return cls(jobs=2_000, one_by_one=200, latency_jobs=40, fan_out=100,
                   efficiency=((2, 2, 0.2), (4, 3, 0.2)), batches=((2, 2, 0.3),))  # fmt: skip


@contextlib.contextmanager
def isolated(backend: str, postgres_url: str | None) -> Iterator[str]:
    """A store URL of its own for one backend; removed afterwards."""
    if backend == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="onceq-bench-"))
        try:
            yield f"sqlite:///{folder}/bench.db"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    assert postgres_url is not None
    schema = f"onceq_bench_{uuid.uuid4().hex[:10]}"
    url = f"{postgres_url}{'&' if '?' in postgres_url else '?'}schema={schema}"
    try:
        yield url
    finally:
        from psycopg import sql

        from onceq.store.postgres import PostgresStore
        from onceq.store.urls import parse_url

        store = PostgresStore(url, parse_url(url))
        try:
            with store.connect(autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(schema)))  # fmt: skip
        finally:
            store.close()


class Bench:
    """The scenarios on one store URL."""

    def __init__(self, backend: str, url: str, sizes: Sizes, log: Callable[[str], None]) -> None:
        self.backend, self.url, self.sizes, self.log = backend, url, sizes, log
        probe.app.close()
        probe.app.use(url)
        probe.app.default_queue = "default"
        # The enqueuing app connected, as an application that enqueues already is: the
        # first scenario's clock is for coordination, not for opening a connection.
        probe.app.store.job_pending_exists(["default"])
        self.store: Store = open_store(url)
        self.folder = Path(tempfile.mkdtemp(prefix="onceq-bench-workers-"))

    def close(self) -> None:
        """Close connections and remove the workers' folder."""
        self.store.close()
        probe.app.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def all(self) -> list[Figure]:
        """Every scenario, in order."""
        figures: list[Figure] = []
        for step in (self.efficiency, self.batches, self.throughput, self.enqueue_rate,
                     self.latency, self.fan_out):  # fmt: skip
            figures += step()
        return figures

    # -- scenarios -----------------------------------------------------------------

    def efficiency(self) -> list[Figure]:
        """Coordination efficiency for tasks of known duration."""
        out = []
        for tasks, workers, seconds in self.sizes.efficiency:
            self.log(
                f"{self.backend}: efficiency, {tasks} tasks of {seconds}s on {workers} workers"
            )
            with self._fleet(workers, 1) as _:
                start = time.time()
                probe.run.enqueue_many([{"seconds": seconds}] * tasks)
                jobs = self._wait_all()
            makespan = max(j.finished_at.timestamp() for j in jobs if j.finished_at) - start
            ideal = math.ceil(tasks / workers) * seconds
            out.append(Figure(self.backend, f"efficiency {tasks} x {seconds}s / {workers} workers",
                              100 * ideal / makespan, "%",
                              f"makespan {makespan:.3f}s, ideal {ideal:.3f}s"))  # fmt: skip
            self.store.queue_purge("default")
        return out

    def batches(self) -> list[Figure]:
        """Coordination efficiency of code-task batches in real git worktrees."""
        from onceq.tools import batchbench

        found = batchbench.run_all(self.backend, self.store, self.url, self.sizes.batches,
                                   self.log)  # fmt: skip
        return [Figure(self.backend, name, value, "%", detail) for name, value, detail in found]

    def throughput(self) -> list[Figure]:
        """No-op jobs per second, 2 worker processes, jobs enqueued beforehand."""
        n, c = self.sizes.jobs, self.sizes.concurrency
        self.log(f"{self.backend}: no-op throughput, {n} jobs, 2 processes x {c}")
        for start in range(0, n, 10_000):
            probe.noop.enqueue_many([{}] * min(10_000, n - start))
        with self._fleet(2, c):
            jobs = self._wait_all()
        first = min(j.started_at.timestamp() for j in jobs if j.started_at)
        last = max(j.finished_at.timestamp() for j in jobs if j.finished_at)
        self.store.queue_purge("default")
        return [Figure(self.backend, "no-op throughput", n / (last - first), "jobs/s",
                       f"{n} jobs, 2 processes, concurrency {c}")]  # fmt: skip

    def enqueue_rate(self) -> list[Figure]:
        """Enqueues per second: one by one (a commit each), and in batches."""
        self.log(f"{self.backend}: enqueue rate")
        n = self.sizes.one_by_one
        start = time.perf_counter()
        for _ in range(n):
            probe.noop.enqueue()
        single = n / (time.perf_counter() - start)
        batch, total = 5_000, self.sizes.jobs
        start = time.perf_counter()
        for offset in range(0, total, batch):
            probe.noop.enqueue_many([{}] * min(batch, total - offset))
        batched = total / (time.perf_counter() - start)
        self.store.queue_purge("default")
        return [
            Figure(self.backend, "enqueue, one by one", single, "jobs/s", f"{n} jobs"),
            Figure(self.backend, "enqueue, batched", batched, "jobs/s",
                   f"{total} jobs in batches of {batch}"),
        ]  # fmt: skip

    def latency(self) -> list[Figure]:
        """Enqueue -> start of jobs arriving 10 ms apart at an idle worker."""
        n = self.sizes.latency_jobs
        self.log(f"{self.backend}: latency, {n} jobs 10 ms apart to an idle worker")
        with self._fleet(1, 8):
            time.sleep(1.0)  # let the worker settle into its idle wait
            for _ in range(n):
                probe.noop.enqueue()
                time.sleep(0.01)
            jobs = self._wait_all()
        waits = sorted(1000 * (j.started_at - j.created_at).total_seconds()
                       for j in jobs if j.started_at)  # fmt: skip
        self.store.queue_purge("default")
        cuts = statistics.quantiles(waits, n=100, method="inclusive")
        return [Figure(self.backend, f"latency p{p}", cuts[p - 1], "ms", f"{n} jobs")
                for p in (50, 95, 99)]  # fmt: skip

    def fan_out(self) -> list[Figure]:
        """A with_items step of N items and its join: run start to join finished."""
        from onceq.workflow import Workflow

        n = self.sizes.fan_out
        self.log(f"{self.backend}: fan-out of {n} items and a join")
        flow = (
            Workflow("onceq-bench-fan-out", input=["items"])
            .step("fan", probe.run, with_items="$input.items", args={"seconds": 0},
                  next=["join"])
            .step("join", probe.join, args={"values": "$steps.fan.results"})
        )  # fmt: skip
        with self._fleet(2, 16):
            start = time.time()
            run_id = probe.app.run_workflow(flow, {"items": list(range(n))})
            jobs = self._wait_all()
        join = [j for j in jobs if j.run_id == run_id and j.step == "join"]
        assert len(join) == 1 and join[0].finished_at is not None
        self.store.queue_purge("default")
        return [Figure(self.backend, f"fan-out of {n} to join", join[0].finished_at.timestamp()
                       - start, "s", "2 processes x 16")]  # fmt: skip

    # -- helpers -------------------------------------------------------------------

    @contextlib.contextmanager
    def _fleet(self, workers: int, concurrency: int) -> Iterator[Fleet]:
        fleet = Fleet(PROBE_APP, self.url, self.folder, queue="default",
                      concurrency=concurrency, lease=30)  # fmt: skip
        try:
            fleet.start(workers)
            yield fleet
        finally:
            fleet.stop()

    def _wait_all(self, timeout: float = 600.0) -> list[Job]:
        deadline = time.monotonic() + timeout
        while self.store.jobs_active(["default"]):
            if time.monotonic() > deadline:
                raise TimeoutError("bench jobs did not finish in time")
            time.sleep(0.02)
        return self.store.job_list(queue="default", limit=10_000_000)
