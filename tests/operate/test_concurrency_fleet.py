"""Concurrency limits per key on a real fleet: 100 jobs over 5 keys, limit 2, 8 worker
slots in 4 processes. The handlers' own ledger (wall-clock start and end of every
execution) shows at most 2 running per key at any moment, every job run once, and the
other keys never waiting behind the busy one; then the same while worker processes are
SIGKILLed (a dead worker's slots come back)."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from onceq import App
from onceq.store import open_store
from tests.helpers import eventually
from tests.operate import keyed
from tests.operate.conftest import fleet, parent_of

HOT = 0  # the key with most of the jobs, enqueued first


def enqueue(url: str, seconds: float) -> list[int]:
    app = App(url, retention=None)
    serve = app.task(concurrency=2, concurrency_key="customer:{customer_id}", retries=20,
                     retry_backoff=0, name=keyed.serve.name)(keyed.serve.fn)  # fmt: skip
    ids = [serve.enqueue(customer_id=HOT, seconds=seconds).id for _ in range(60)]
    ids += [
        serve.enqueue(customer_id=c, seconds=seconds).id for c in range(1, 5) for _ in range(10)
    ]
    app.close()
    return ids


def intervals(
    ledger: Path, killed: dict[int, float]
) -> tuple[dict[int, list[tuple[float, float]]], Counter[int], Counter[int]]:
    """Per key, the (start, end) of every execution: one whose process was killed ends
    when it was killed. Also the starts and ends per job."""
    began: dict[tuple[int, int], tuple[int, float]] = {}
    per_key: dict[int, list[tuple[float, float]]] = defaultdict(list)
    starts: Counter[int] = Counter()
    ends: Counter[int] = Counter()
    for event, customer, job, pid, at in keyed.read(ledger):
        if event == "start":
            began[(job, pid)] = (customer, at)
            starts[job] += 1
        else:
            customer, start = began.pop((job, pid))
            per_key[customer].append((start, at))
            ends[job] += 1
    for (job, pid), (customer, start) in began.items():  # never ended: killed
        assert pid in killed, f"job {job} started in {pid}, never ended, and was not killed"
        per_key[customer].append((start, killed[pid]))
    return per_key, starts, ends


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])  # ends first
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def run_fleet(
    url: str, tmp_path: Path, seconds: float, chaos: bool
) -> tuple[list[int], Path, dict[int, float]]:
    ledger = tmp_path / "ledger"
    ledger.touch()
    ids = enqueue(url, seconds)
    supervisor = fleet(url, tmp_path / "log", "--processes", "4", "--concurrency", "2",
                       "--lease", "2", env={"ONCEQ_TEST_LEDGER": str(ledger)},
                       app="tests.operate.keyed:app")  # fmt: skip
    store = open_store(url)
    killed: dict[int, float] = {}
    rng = random.Random(7)
    try:

        def done() -> bool:
            counts = dict((s, n) for _, s, n in store.job_counts())
            return counts.get("succeeded", 0) == len(ids)

        while chaos and not done():
            # A worker that has run a job (a start in the ledger) and is still up.
            running = {pid for _, _, _, pid, _ in keyed.read(ledger)} - set(killed)
            alive = [pid for pid in running if parent_of(pid) == supervisor.pid]
            if alive and len(killed) < 12:
                victim = rng.choice(alive)
                os.kill(victim, signal.SIGKILL)
                killed[victim] = time.time()
            time.sleep(rng.uniform(0.3, 0.7))
        eventually(done, timeout=180)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(60)
        store.close()
    return ids, ledger, killed


@pytest.mark.parametrize("chaos", [False, True], ids=["calm", "sigkill"])
def test_at_most_two_per_key_every_job_once_and_no_key_behind_a_full_one(
    store_url: str, tmp_path: Path, chaos: bool
) -> None:
    ids, ledger, killed = run_fleet(store_url, tmp_path, 0.1 if not chaos else 0.2, chaos)
    per_key, starts, ends = intervals(ledger, killed)
    assert set(per_key) == {0, 1, 2, 3, 4}
    assert {k: most_at_once(v) for k, v in per_key.items()}[HOT] == 2  # the limit, not less
    assert all(most_at_once(v) <= 2 for v in per_key.values())
    if not chaos:
        assert starts == ends == Counter({j: 1 for j in ids})  # every job ran once
        # The four other keys, enqueued after the hot key's 60 jobs, all finished before
        # its last job even started: none of them waited behind it.
        last_hot_start = max(s for s, _ in per_key[HOT])
        assert max(e for k in (1, 2, 3, 4) for _, e in per_key[k]) < last_hot_start
    else:
        assert len(killed) >= 3
        # Every job ran, and ran again only when the worker of its run before was killed
        # (it may have reached its end before its result was written: at-least-once).
        runs: dict[int, list[int]] = defaultdict(list)
        for event, _, job, pid, _ in keyed.read(ledger):
            if event == "start":
                runs[job].append(pid)
        assert set(runs) == set(ids)
        assert all(pid in killed for pids in runs.values() for pid in pids[:-1])
        assert any(len(pids) > 1 for pids in runs.values())  # the kills did hit jobs
