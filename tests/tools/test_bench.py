"""`onceq bench` runs its scenarios and reports them (figures are not judged here:
speed is measured in benchmarks, never asserted in tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_URL

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_bench_quick_reports_every_scenario(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "postgres":
        request.getfixturevalue("pg_server")
    result = subprocess.run(
        [sys.executable, "-m", "onceq", "bench", "--quick", "--json", "--backend", backend,
         "--postgres-url", PG_URL],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=dict(os.environ),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    scenarios = [f["scenario"] for f in report["figures"]]
    assert scenarios == [
        "efficiency 2 x 0.2s / 2 workers", "efficiency 4 x 0.2s / 3 workers",
        "batch 2 tasks x 0.3s / 2 workers",
        "no-op throughput", "enqueue, one by one", "enqueue, batched",
        "latency p50", "latency p95", "latency p99", "fan-out of 100 to join",
    ]  # fmt: skip
    assert all(f["value"] > 0 and f["backend"] == backend for f in report["figures"])


def test_a_second_fleet_in_the_same_folder_waits_for_its_own_members(sqlite_url: str) -> None:
    """Bench runs fleets one after another in one folder. The ready flags of the first
    once passed for the second's, so `start` returned before its members could claim
    and their start-up (~0.5 s) counted against the efficiency scenarios."""
    from onceq.tools.fleet import Fleet

    folder = Path(sqlite_url.removeprefix("sqlite:///")).parent / "fleets"
    folder.mkdir()
    for expected in (2, 4):
        fleet = Fleet("onceq.tools.probe:app", sqlite_url, folder, queue="default")
        try:
            fleet.start(2)
            assert all(p.is_alive() for p in fleet.members)
            assert len(list(folder.glob("ready.*"))) == expected  # its members' own flags
        finally:
            fleet.stop()


def test_a_fleet_is_ready_once_its_members_are_registered(sqlite_url: str) -> None:
    """`start` returns when each member is about to claim (Worker.run's `ready`), not
    when its process exists: the registration and the wake-ups are in place by then."""
    from onceq.store import open_store
    from onceq.tools.fleet import Fleet

    folder = Path(sqlite_url.removeprefix("sqlite:///")).parent / "fleet"
    folder.mkdir()
    store = open_store(sqlite_url)
    fleet = Fleet("onceq.tools.probe:app", sqlite_url, folder, queue="default")
    try:
        fleet.start(3)
        assert len(store.worker_list()) == 3
    finally:
        fleet.stop()
        store.close()
