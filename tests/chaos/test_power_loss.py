"""Scenario 15, power loss (SQLite): the whole process tree — producers enqueuing one job
at a time and the workers running them — SIGKILLed together, dozens of times, at random
moments. (A SIGKILL is not a power cut: the OS keeps what was written. The WAL's fsync at
each commit, synchronous=FULL, is what covers that part; what this checks is that no
moment of a process's death loses or corrupts anything.) After every round the file
passes `PRAGMA integrity_check`. At the end: every enqueue that returned an id is in the
store, every completion a worker was told of is still there and its job never ran
again, and the checker finds no broken guarantee."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import time
from pathlib import Path

import pytest

from onceq import App
from tests.chaos.harness import Chaos, all_finished, soak, sql, wait_for

pytestmark = pytest.mark.chaos

LEASE = 1.0  # the next round's workers take back the killed ones' jobs after this


def _kill_all(chaos: Chaos) -> None:
    for proc in chaos.procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def test_killing_every_process_at_once_loses_and_corrupts_nothing(
    sqlite_url: str, new_chaos: object
) -> None:
    chaos: Chaos = new_chaos(sqlite_url)  # type: ignore[operator]
    App(sqlite_url).store.close()  # the schema, before any process starts
    rounds = soak(24, 200)
    rng = random.Random()
    ids_file = chaos.tmp / "enqueued.txt"
    for r in range(rounds):
        for w in range(2):
            chaos.worker(f"r{r}w{w}", concurrency=4, lease=LEASE)
        chaos.enqueuer(f"r{r}p", 10_000, ids_file)  # far more than it gets to enqueue
        time.sleep(rng.uniform(0.3, 1.2))  # the fault schedule: a random moment
        _kill_all(chaos)
        assert sql(sqlite_url, "PRAGMA integrity_check") == [("ok",)], f"round {r}"
    workers = [chaos.worker(f"final{w}", concurrency=8, lease=LEASE)[0] for w in range(2)]
    enqueued = [int(line.split()[0]) for line in ids_file.read_text().splitlines() if line]
    wait_for(lambda: all_finished(chaos.url, len(set(enqueued))), timeout=240)
    for proc in workers:
        assert chaos.terminate(proc) == 0

    # The completions workers were told had committed (logged once the store answered).
    acked: dict[int, str] = {}
    for log in Path(chaos.tmp).glob("r*w*.log"):
        for job in re.findall(r"job\.succeeded job=(\d+)", log.read_text(errors="replace")):
            acked[int(job)] = log.stem
    assert acked, "no completion was acknowledged before a kill: the rounds are too short"
    status = dict(sql(sqlite_url, "SELECT id, status FROM onceq_jobs"))
    assert all(status[j] == "succeeded" for j in acked)
    figures = chaos.check(expected_ids=set(enqueued))
    # A job whose completion was acknowledged never started again afterwards.
    rerun_after_ack = sql(
        sqlite_url,
        "SELECT job_id FROM onceq_attempts a JOIN onceq_jobs j ON j.id = a.job_id "
        "WHERE a.token > (SELECT min(token) FROM onceq_attempts b WHERE b.job_id = a.job_id "
        "AND b.outcome = 'succeeded')",
    )
    assert rerun_after_ack == []
    chaos.report(figures, kill_rounds=rounds, acknowledged_enqueues=len(enqueued),
                 acknowledged_completions=len(acked), integrity="ok")  # fmt: skip
    chaos.finished_ok(figures)
    assert figures.reruns == figures.reruns_lease_loss
