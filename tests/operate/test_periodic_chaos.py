"""Periodic ticks under SIGKILL: four worker processes enqueue the ticks of two every=1
tasks while their children are killed and restarted; every tick is enqueued exactly
once, and none is lost but by the catch-up rule. 15 s by default; 60 s with
ONCEQ_SOAK=1."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path

from onceq.store import open_store
from tests.helpers import eventually
from tests.operate import ticking
from tests.operate.conftest import fleet, onceq, parent_of

SOAK = os.environ.get("ONCEQ_SOAK") == "1"
CHAOS_SECONDS = 60.0 if SOAK else 15.0


def test_every_tick_is_enqueued_once_while_workers_are_killed(
    store_url: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    supervisor = fleet(store_url, tmp_path / "log", "--processes", "4", "--lease", "2",
                       "--concurrency", "2", env={"ONCEQ_TEST_LEDGER": str(ledger)},
                       app="tests.operate.ticking:app")  # fmt: skip
    store = open_store(store_url)
    rng = random.Random(12)
    kills = 0
    try:
        eventually(lambda: len(store.worker_list()) == 4, timeout=60)
        ends = time.monotonic() + CHAOS_SECONDS
        while time.monotonic() < ends:
            # A worker that has been up for a while (one killed young restarts slowly).
            now = datetime.now().astimezone()
            grown = [w.pid for w in store.worker_list()
                     if parent_of(w.pid) == supervisor.pid
                     and (now - w.started_at).total_seconds() > 2]  # fmt: skip
            if grown:
                os.kill(rng.choice(grown), signal.SIGKILL)
                kills += 1
            time.sleep(rng.uniform(0.3, 0.9))
        stopped = datetime.now().astimezone()

        def ticks(task: str) -> list[datetime]:  # in the order they were enqueued
            jobs = reversed(store.job_list(task=task, limit=100_000))
            return [datetime.fromisoformat(j.args["tick"]) for j in jobs]

        names = [t.name for t in (ticking.each_second, ticking.every_tick)]
        eventually(lambda: all(ticks(n) and ticks(n)[-1] > stopped + timedelta(seconds=2)
                               for n in names), timeout=60)  # fmt: skip
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(60)
    caught_up, every = ticks(names[0]), ticks(names[1])
    assert kills >= CHAOS_SECONDS / 2
    # Catching up everything: every tick from the first to the last, once each, in order.
    span = int((every[-1] - every[0]).total_seconds())
    assert every == [every[0] + timedelta(seconds=k) for k in range(span + 1)]
    assert span >= CHAOS_SECONDS
    # The default (catch_up=1): once each, in order; a gap only where no worker could
    # enqueue in time, and then only the latest tick.
    assert caught_up == sorted(set(caught_up))
    assert caught_up[0] <= every[0] + timedelta(seconds=1)
    missed = (caught_up[-1] - caught_up[0]).total_seconds() + 1 - len(caught_up)
    listed = json.loads(onceq(store_url, "periodic", "--json").stdout)["periodic"]
    assert {p["name"]: datetime.fromisoformat(p["last_tick"]) for p in listed} == {
        names[0]: caught_up[-1],
        names[1]: every[-1],
    }
    store.close()
    print(f"{kills} kills, {len(every)} ticks; catch_up=1 skipped {missed:.0f}")
