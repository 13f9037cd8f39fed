"""Scenario 6, handlers that misbehave, all at once among many normal jobs, under the
supervisor (`onceq worker --processes`): they raise (retryable or not), hang past their
timeout (thread, async, subprocess), return what is not JSON, kill their subprocess or
their own worker process. Each ends with its exact attempt count, nothing loops, and the
normal jobs keep flowing."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from onceq import App
from tests.chaos.harness import Chaos, all_finished, soak, wait_for

pytestmark = pytest.mark.chaos


@dataclass(frozen=True)
class Expect:
    args: dict[str, object]
    status: str
    outcomes: tuple[str, ...]
    error: str | None  # last_error prefix


EXPECT = {
    "chaos.raise_retry": Expect(
        {}, "failed", ("retried", "retried", "failed"), "RuntimeError: attempt 3"
    ),
    "chaos.raise_fatal": Expect({}, "failed", ("failed",), "ValueError: not worth a retry"),
    "chaos.flaky": Expect({}, "succeeded", ("retried", "retried", "succeeded"), None),
    "chaos.hang_thread": Expect(
        {"seconds": 3.0},
        "failed",
        ("retried", "failed"),
        "JobTimeout: timed out after 0.5s: the thread was abandoned",
    ),
    "chaos.hang_async": Expect(
        {}, "failed", ("retried", "failed"), "JobTimeout: timed out after 0.5s: the coroutine"
    ),
    "chaos.hang_subprocess": Expect(
        {}, "failed", ("retried", "failed"), "JobTimeout: timed out after 0.5s: the subprocess"
    ),
    "chaos.exit_subprocess": Expect(
        {}, "failed", ("retried", "failed"), "SubprocessDied: the subprocess died with exit code 7"
    ),
    "chaos.raise_subprocess": Expect(
        {}, "failed", ("failed",), "SubprocessError: ValueError: raised in the subprocess"
    ),
    "chaos.bad_result": Expect(
        {}, "failed", ("failed",), "PayloadError: result of chaos.bad_result cannot be stored"
    ),
    "chaos.exit_worker": Expect({}, "failed", ("worker_died", "worker_died"), "worker "),
}


def test_misbehaving_handlers_end_with_exact_attempts_and_normal_jobs_flow(
    chaos: Chaos, app: App
) -> None:
    copies, normal = soak(2, 10), soak(200, 2000)
    plan = [(task, e.args) for task, e in EXPECT.items() for _ in range(copies)]
    plan += [("chaos.short", {"n": n, "sleep": random.choice([0, 0.01])}) for n in range(normal)]
    plan += [("chaos.short_poison_queue", {"n": n}) for n in range(20)]
    random.shuffle(plan)
    jobs = [(task, app.enqueue(task, args).id) for task, args in plan]

    main = chaos.supervisor(
        "main",
        *("--processes", "2", "--concurrency", "4", "--queue", "default", "--lease", "30"),
    )
    # The handler that kills its own worker has a process (one slot) of its own: with
    # no neighbour to take down, every attempt count below is exact.
    poison = chaos.supervisor(
        "poison",
        *("--processes", "1", "--concurrency", "1", "--queue", "poison", "--lease", "30"),
    )
    wait_for(lambda: all_finished(chaos.url, len(jobs)), timeout=180)

    def late_results_refused() -> bool:  # the abandoned threads return after 3 s
        return all(
            a.rejected == "complete"
            for task, job_id in jobs
            if task == "chaos.hang_thread"
            for a in app.store.attempt_list(job_id)
        )

    wait_for(late_results_refused, timeout=60)
    assert chaos.terminate(main) == 0
    assert chaos.terminate(poison) == 0

    for task, job_id in jobs:
        job = app.get_job(job_id)
        outcomes = tuple(a.outcome for a in app.store.attempt_list(job_id))
        if task in EXPECT:
            expect = EXPECT[task]
            assert (job.status, outcomes) == (expect.status, expect.outcomes), (task, job)
            assert job.attempts == len(expect.outcomes)
            if expect.error:
                assert (job.last_error or "").startswith(expect.error), (task, job.last_error)
        else:
            assert (job.status, outcomes) == ("succeeded", ("succeeded",)), (task, job)
    exits = [app.get_job(i).last_error for t, i in jobs if t == "chaos.exit_worker"]
    assert all("died: exit code 3" in (e or "") for e in exits), exits
    main_exits = [x for x in chaos.log("main").read_text().splitlines() if "worker.exited" in x]
    assert all('reason="exit code 0"' in x for x in main_exits), main_exits  # at SIGTERM only

    figures = chaos.check()
    deaths = chaos.log("poison").read_text().count('reason="exit code 3"')
    chaos.report(
        figures,
        misbehaving=copies * len(EXPECT),
        worker_deaths=deaths,
        timeouts=3 * 2 * copies,
    )
    figures.assert_clean()
    assert figures.reruns_lease_loss == copies  # exit_worker's second attempt, only
    assert figures.rejected - figures.rejected_self_race == 2 * copies  # the late threads
    assert deaths == 2 * copies
