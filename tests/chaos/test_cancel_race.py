"""Scenario 8, cancellation racing completion: round after round, `store.job_cancel`
lands right as the handler returns (a barrier lines them up, random injected delays on
both sides move the crossing point). Each round has one consistent outcome: the job is
`cancelled` and the late completion was refused, or it `succeeded` and job_cancel said so
("already finished") and changed nothing."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from onceq import App
from tests.chaos.harness import Chaos, ledger_write, read_ledger, soak, wait_for

pytestmark = pytest.mark.chaos


def test_cancel_racing_completion_has_one_consistent_outcome_per_round(
    store_url: str, new_chaos: Callable[[str], Chaos]
) -> None:
    chaos = new_chaos(store_url)
    app = App(store_url)
    barrier = threading.Barrier(2, timeout=60)

    @app.task(name="race.finish")
    def finish(n: int, delay: float) -> int:
        ledger_write("start")
        barrier.wait()
        time.sleep(delay)
        ledger_write("end")
        return n

    worker = app.worker(concurrency=1, lease=30, handle_signals=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    rng = random.Random()
    seen: Counter[str] = Counter()
    inconsistent: list[str] = []
    try:
        for n in range(soak(60, 600)):
            job = finish.enqueue(n=n, delay=rng.choice([0, 0, 0.0005, 0.002]))
            barrier.wait()  # the handler is about to return
            time.sleep(rng.choice([0, 0, 0.0005, 0.001, 0.003]))
            before = app.store.job_cancel(job.id)

            def settled(job_id: int = job.id) -> bool:
                done = app.get_job(job_id)
                (attempt,) = app.store.attempt_list(job_id)
                return done.status == "succeeded" or "complete" in (attempt.rejected or "")

            wait_for(settled, timeout=60)  # the worker has recorded (or tried to) its result
            done = app.get_job(job.id)
            (attempt,) = app.store.attempt_list(job.id)
            state = (before, done.status, done.result, attempt.outcome, attempt.rejected)
            if state[:4] == ("running", "cancelled", None, "cancelled") and "complete" in (
                attempt.rejected or ""
            ):
                seen["cancel_won"] += 1  # the late completion was refused
            elif state == ("succeeded", "succeeded", n, "succeeded", None):
                seen["completion_won"] += 1  # job_cancel: already finished
            else:
                inconsistent.append(f"round {n}: {state}")
    finally:
        barrier.abort()
        worker.stop()
        thread.join(30)
        app.close()

    figures = chaos.check(instrumented=lambda task: task == "race.finish")
    chaos.report(figures, rounds=sum(seen.values()) + len(inconsistent), **seen)
    assert inconsistent == [], inconsistent[:10]
    figures.assert_clean()
    starts = Counter(e.job for e in read_ledger(chaos.ledger) if e.event == "start")
    assert set(starts.values()) == {1}  # one execution per round, whoever won
    assert figures.reruns == 0
