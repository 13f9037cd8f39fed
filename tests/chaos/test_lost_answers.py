"""Scenario 11, lost answers: a wire proxy between the workers and PostgreSQL lets a share
of every COMMIT reach the server and cuts the connection before the answer comes back.
Claims, completions, heartbeats, rescues: whichever transaction it was, it happened and
its worker does not know. Jobs have no retries, so one lost attempt would fail a job:
every job must succeed, none run twice, none fail without running."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from onceq import App
from tests.chaos.harness import Chaos, all_finished, soak, wait_for
from tests.chaos.proxy import PgProxy

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

WORKERS = 2
RATE = 0.05


@pytest.fixture
def proxy() -> Iterator[PgProxy]:
    with PgProxy(seed=11) as p:
        yield p


def test_commits_whose_answer_is_lost_neither_fail_nor_rerun_a_job(
    pg_url: str, new_chaos: object, proxy: PgProxy
) -> None:
    chaos: Chaos = new_chaos(pg_url)  # type: ignore[operator]
    jobs = soak(3000, 30000)
    app = App(pg_url)
    app.task(name="chaos.once")(lambda n, sleep=0.0: n)
    once = app.tasks["chaos.once"]
    ids = []
    for start in range(0, jobs, 1000):
        batch = range(start, min(jobs, start + 1000))
        ids += app.store.job_insert_many([once.new_job({"n": n}, {}) for n in batch])
    proxy.lose_commits(RATE)
    proxied = {"ONCEQ_URL": proxy.url(pg_url)}
    workers = [chaos.worker(env=proxied, concurrency=8, lease=10)[0] for _ in range(WORKERS)]
    wait_for(lambda: all_finished(chaos.url, jobs), timeout=600)
    proxy.lose_commits(0.0)  # the drain's own writes are not what is measured
    for proc in workers:
        assert chaos.terminate(proc) == 0
    app.close()

    logs = "".join(chaos.logs().values())
    stats = proxy.stats
    figures = chaos.check(expected_ids=ids)
    chaos.report(
        figures,
        commits=stats["commits_seen"],
        commits_lost=stats["commits_lost"],
        adopted=len(re.findall(r"job\.adopted ", logs)),
        replayed=len(re.findall(r"job\.write_replayed ", logs)),
        settled=logs.count("the answer to a COMMIT was lost"),
    )
    chaos.finished_ok(figures)  # every job succeeded, no guarantee broken
    assert stats["commits_lost"] >= 20, stats  # the faults really happened
    assert figures.reruns == 0, "a lost answer re-ran a job"
    assert figures.handler_starts == jobs
    assert figures.rejected == figures.rejected_self_race, figures.rejected_ops
