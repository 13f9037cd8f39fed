"""The worker registry: a row per live worker, kept by its heartbeat, gone on clean exit
or once it stops beating; `onceq workers`."""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime
from pathlib import Path

from onceq.models import WorkerRecord
from onceq.store import Store
from onceq.worker.presence import Presence
from tests.helpers import eventually
from tests.operate.conftest import fleet, onceq, parent_of


def record(name: str, queues: list[str] | None = None) -> WorkerRecord:
    now = datetime.now(UTC)
    return WorkerRecord(name, "host-a", 4242, queues, 3, "0.1.0", now, now)


def test_register_beat_list_expire_and_unregister(store: Store) -> None:
    store.worker_register(record("w1", ["mail", "pdf"]))
    store.worker_register(record("w2"), ttl=0.05)
    listed = {w.name: w for w in store.worker_list()}
    assert set(listed) == {"w1", "w2"}
    w1 = listed["w1"]
    assert (w1.host, w1.pid, w1.queues, w1.concurrency, w1.version) == (
        "host-a", 4242, ["mail", "pdf"], 3, "0.1.0",
    )  # fmt: skip
    assert listed["w2"].queues is None
    assert store.worker_seen(["w1", "nobody"]) == {"w1"}
    assert next(w.last_seen for w in store.worker_list() if w.name == "w1") >= w1.last_seen
    eventually(lambda: store.worker_expire() == ["w2"], timeout=10)  # stopped beating
    assert [w.name for w in store.worker_list()] == ["w1"]
    assert store.worker_seen(["w2"]) == set()  # its next beat finds no row: it registers again
    store.worker_register(record("w2"))
    assert store.worker_unregister("w1") and not store.worker_unregister("w1")
    assert [w.name for w in store.worker_list()] == ["w2"]


def test_a_worker_whose_row_expired_while_it_was_away_registers_again(store: Store) -> None:
    presence = Presence(store, "paused-worker", ["q"], 2, beat_every=0.01)
    presence.open()
    assert presence.ttl == 60.0  # a few beats, at least a minute
    store.worker_unregister("paused-worker")  # as an expiry by another worker would
    presence.run_once(0.0)
    assert [(w.name, w.queues, w.concurrency) for w in store.worker_list()] == [
        ("paused-worker", ["q"], 2)
    ]
    presence.close()
    assert store.worker_list() == []


def test_a_fleet_is_listed_kept_fresh_and_gone_after_a_clean_exit(
    store_url: str, tmp_path: Path
) -> None:
    supervisor = fleet(store_url, tmp_path / "log", "--processes", "2", "--lease", "1",
                       "--queue", "q1", "--concurrency", "3")  # fmt: skip

    def listed(made: bool = True) -> list[dict[str, object]]:
        result = onceq(store_url, "workers", "--json")
        if not made and result.stderr.startswith("error: no store at "):
            return []  # the fleet has not made its store yet (`workers` never makes one)
        assert result.returncode == 0, result.stderr
        found: list[dict[str, object]] = json.loads(result.stdout)["workers"]
        return found

    first = eventually(lambda: len(found := listed(made=False)) == 2 and found, timeout=60)
    assert {parent_of(int(str(w["pid"]))) for w in first} == {supervisor.pid}
    assert {(w["queues"] == ["q1"], w["concurrency"]) for w in first} == {(True, 3)}
    # Their heartbeats keep them fresh.
    eventually(lambda: all(w["last_seen"] > f["last_seen"]
                           for w, f in zip(listed(), first, strict=True)), timeout=30)  # fmt: skip

    # A child killed outright: the supervisor removes its row as it puts its jobs back,
    # and the child that replaces it registers.
    victim = int(str(first[0]["pid"]))
    os.kill(victim, signal.SIGKILL)
    eventually(lambda: victim not in {w["pid"] for w in listed()}
               and len(listed()) == 2, timeout=60)  # fmt: skip

    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(60) == 0
    assert listed() == []
    table = onceq(store_url, "workers")
    assert table.returncode == 0 and "0 worker(s)" in table.stdout
