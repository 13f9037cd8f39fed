"""Prometheus metrics, computed from the store at scrape time.

Every number comes from the store (`Store.stats_read`), not from counters in a process:
any number of dashboards, or your own exporter, report the same values, and a restart
loses nothing. Labels are queue and task names only (plus a small fixed set: a job's
status, the kind of a refused write, the cause of a re-run), so series stay bounded.

To export them from a process of your own:

    from prometheus_client import REGISTRY
    from onceq.web.metrics import StoreCollector
    REGISTRY.register(StoreCollector(app.store.stats_read))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from onceq.models import HISTOGRAM_BOUNDS, JOB_STATUSES, Histogram, Stats, TaskStats

WRITES = ("complete", "fail", "release", "give_up")  # writes a stale lease may send
CAUSES = ("retry", "lease_lost", "operator", "shutdown")  # what explains a re-run

# (name, help, what it counts); every one labelled by queue and task.
COUNTERS: tuple[tuple[str, str, Callable[[TaskStats], int]], ...] = (
    ("onceq_jobs_enqueued", "Jobs enqueued.", lambda t: t.enqueued),
    ("onceq_jobs_succeeded", "Jobs that succeeded.", lambda t: t.succeeded),
    ("onceq_jobs_failed", "Times a job ended failed (retries spent, or a final error).",
     lambda t: t.failed),
    ("onceq_jobs_retried", "Failed attempts the task's retry policy sent back to pending.",
     lambda t: t.retried),
    ("onceq_lease_losses", "Leases lost: expired and rescued, given up by their worker, or "
     "held by a worker that died.", lambda t: t.lease_losses),
    ("onceq_rescues", "Jobs the rescuer put back (or failed) after a lease expired or its "
     "worker died.", lambda t: t.rescues),
    ("onceq_duplicate_dispatches_suppressed", "Workflow dispatches the (run, step, item) "
     "unique index refused: a second dispatch that never ran.",
     lambda t: t.duplicate_dispatches),
    ("onceq_reruns_unexplained", "Runs of a job after the first that nothing explains (it "
     "had succeeded, or its last run had not ended): must stay 0.",
     lambda t: t.reruns_unexplained),
)  # fmt: skip


HISTOGRAMS: tuple[tuple[str, str, Callable[[TaskStats], Histogram]], ...] = (
    ("onceq_job_duration_seconds", "Run time of succeeded jobs (start to finish of the "
     "attempt that succeeded).", lambda t: t.duration),
    ("onceq_job_wait_seconds", "Time succeeded jobs waited from due (enqueued, or their "
     "delay or backoff over) to the start of the attempt that succeeded.", lambda t: t.wait),
)  # fmt: skip


class StoreCollector(Collector):
    """A prometheus_client collector reading `read()` (a Stats) at every collection."""

    def __init__(self, read: Callable[[], Stats]) -> None:
        self.read = read

    def describe(self) -> list[Metric]:
        """Nothing: registering the collector must not read the store."""
        return []

    def collect(self) -> Iterator[Metric]:
        yield from families(self.read())


def families(stats: Stats) -> Iterator[Metric]:
    """Every metric family of one Stats record."""
    jobs = GaugeMetricFamily("onceq_jobs", "Jobs now, by queue and status.",
                             labels=["queue", "status"])  # fmt: skip
    for queue, counts in sorted(stats.jobs.items()):
        for status in JOB_STATUSES:
            jobs.add_metric([queue, status], counts.get(status, 0))
    yield jobs
    oldest = GaugeMetricFamily(
        "onceq_oldest_runnable_job_age_seconds",
        "How long the oldest runnable job (pending and due) of each queue has waited; 0 when "
        "none is waiting. Alert on this, not on queue depth.",
        labels=["queue"],
    )
    for queue in sorted(set(stats.jobs) | set(stats.oldest_runnable)):
        oldest.add_metric([queue], stats.oldest_runnable.get(queue, 0.0))
    yield oldest
    tasks = sorted(stats.tasks, key=lambda t: (t.queue, t.task))
    for name, doc, value in COUNTERS:
        family = CounterMetricFamily(name, doc, labels=["queue", "task"])
        for t in tasks:
            family.add_metric([t.queue, t.task], value(t))
        yield family
    stale = CounterMetricFamily(
        "onceq_stale_writes_refused",
        "Writes refused because their lease was no longer held (a worker that lost its "
        "job tried to record it), by kind of write.",
        labels=["queue", "task", "write"],
    )
    explained = CounterMetricFamily(
        "onceq_reruns_explained",
        "Runs of a job after the first, by what explains them: its retry policy, a lost "
        "lease, an operator's retry, or a shutdown that put it back while it ran.",
        labels=["queue", "task", "cause"],
    )
    for t in tasks:
        for write in WRITES:
            stale.add_metric([t.queue, t.task, write], t.stale_writes.get(write, 0))
        for cause in CAUSES:
            explained.add_metric([t.queue, t.task, cause], t.reruns.get(cause, 0))
    yield stale
    yield explained
    for name, doc, pick in HISTOGRAMS:
        histogram = HistogramMetricFamily(name, doc, labels=["queue", "task"])
        for t in tasks:
            h = pick(t)
            histogram.add_metric([t.queue, t.task], _cumulative(h), sum_value=h.total)
        yield histogram


def _cumulative(h: Histogram) -> list[tuple[str, float]]:
    out, total = [], 0
    for bound, n in zip((*map(str, HISTOGRAM_BOUNDS), "+Inf"), h.buckets, strict=True):
        total += n
        out.append((bound, float(total)))
    return out


def exposition(stats: Stats) -> bytes:
    """The text format of one Stats record."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(lambda: stats))
    return generate_latest(registry)
