"""/metrics: Prometheus's own parser reads it, its labels stay bounded, and its counters
move as jobs succeed, fail, lose their leases and have stale writes refused — the same
numbers from any process, before and after a restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from onceq import App
from onceq.models import NewJob
from onceq.store import open_store
from tests.web.conftest import client_for, task

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
LABELS = {"queue", "task", "status", "write", "cause", "le"}


def scrape(store: object) -> Samples:
    with client_for(store) as client:  # type: ignore[arg-type]
        answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for s in family.samples:
            assert set(s.labels) <= LABELS, s  # no hostname, attempt, worker… labels
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


OK = {"queue": "default", "task": "tests.web.apps.ok"}
BOOM = {"queue": "default", "task": "tests.web.apps.boom"}
STURDY = {"queue": "default", "task": "tests.web.apps.sturdy"}


def test_counters_move_with_what_happens(app: App) -> None:
    store = app.store
    before = scrape(store)
    for n in range(3):
        task(app, "ok").enqueue(n=n)
    for n in range(2):
        task(app, "boom").enqueue(n=n)
    app.worker(concurrency=2).run(burst=True)  # a real worker: three succeed, two fail
    after = scrape(store)
    assert (
        value(after, "onceq_jobs_enqueued_total", **OK)
        - value(before, "onceq_jobs_enqueued_total", **OK)
        == 3
    )
    assert value(after, "onceq_jobs_succeeded_total", **OK) == 3
    assert value(after, "onceq_jobs_failed_total", **BOOM) == 2
    assert value(after, "onceq_jobs", queue="default", status="succeeded") == 3
    assert value(after, "onceq_job_duration_seconds_count", **OK) == 3
    assert value(after, "onceq_job_duration_seconds_bucket", **OK, le="+Inf") == 3
    assert value(after, "onceq_job_wait_seconds_count", **OK) == 3
    assert value(after, "onceq_lease_losses_total", **OK) == 0

    # A lease lost: its worker "died" (rescued), then its late completion is refused.
    job = task(app, "sturdy").enqueue(n=9)
    (lease,) = store.job_claim("doomed", None, 1, 30)
    assert lease.job_id == job.id
    store.job_rescue_worker("doomed", "killed")
    assert not store.job_complete(lease, {"n": 9})  # its real, now stale, token
    # Another given up by its own worker.
    task(app, "sturdy").enqueue(n=10)
    (second,) = store.job_claim("stuck", None, 1, 30)
    store.job_give_up([second], "no heartbeat got through")
    app.worker(concurrency=2).run(burst=True)  # both run again, and succeed
    lost = scrape(store)
    assert value(lost, "onceq_lease_losses_total", **STURDY) == 2
    assert value(lost, "onceq_rescues_total", **STURDY) == 1
    assert value(lost, "onceq_stale_writes_refused_total", **STURDY, write="complete") == 1
    assert value(lost, "onceq_reruns_explained_total", **STURDY, cause="lease_lost") == 2
    assert value(lost, "onceq_reruns_unexplained_total", **STURDY) == 0
    assert value(lost, "onceq_jobs_succeeded_total", **STURDY) == 2
    assert value(lost, "onceq_jobs_succeeded_total", **OK) == 3  # the others unchanged

    # Any process reads the same; a restart loses nothing.
    other = open_store(app.url)
    try:
        again = scrape(other)
    finally:
        other.close()
    counters = {k: v for k, v in lost.items() if k[0].endswith(("_total", "_count", "_bucket"))}
    assert {k: again[k] for k in counters} == counters


def test_the_oldest_runnable_age_counts_runnable_jobs_only(app: App) -> None:
    store = app.store
    past = datetime.now(UTC) - timedelta(minutes=5)
    store.job_insert(NewJob("tests.web.apps.ok", {"n": 1}, queue="late", run_at=past))
    store.job_insert(NewJob("tests.web.apps.ok", {"n": 2}, queue="later", delay=3600))
    (held,) = store.job_claim("w", ["late"], 1, 30)  # running now: not runnable
    store.job_insert(NewJob("tests.web.apps.ok", {"n": 3}, queue="late", run_at=past))
    samples = scrape(store)
    assert value(samples, "onceq_oldest_runnable_job_age_seconds", queue="late") >= 299
    assert value(samples, "onceq_oldest_runnable_job_age_seconds", queue="later") == 0
    assert value(samples, "onceq_jobs", queue="later", status="pending") == 1
    store.job_complete(held, None)
