"""`onceq diagnose` finds nothing wrong on a healthy store, and would find it if it were."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from onceq.models import Attempt, Job
from onceq.store import Store
from onceq.tools.diagnose import Diagnosis, Report

ROOT = Path(__file__).resolve().parents[2]


def _diagnose(url: str, *args: str) -> tuple[int, dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-m", "onceq", "diagnose", "--url", url, "--json", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=dict(os.environ),
    )  # fmt: skip
    return result.returncode, json.loads(result.stdout)


def test_diagnose_passes_every_scenario_and_cleans_up(store_url: str, store: Store) -> None:
    from onceq.models import NewJob

    mine = store.job_insert(NewJob(task="users.own.task"))  # must be left alone
    code, report = _diagnose(store_url, "--tasks", "300", "--workers", "3", "--chaos")
    assert code == 0, report
    scenarios = {s["scenario"]: s for s in report["scenarios"]}  # type: ignore[index]
    assert set(scenarios) == {
        "race 2 tasks / 2 workers", "race 4 tasks / 3 workers", "race 6 tasks / 3 workers",
        "300 tasks / 3 workers", "fan-in x20 (5 items, concurrency 3)",
        "300 tasks / 3 workers with kills",
    }  # fmt: skip
    for s in scenarios.values():
        assert (s["duplicates"], s["missing"], s["ok"]) == (0, 0, True)
        assert s["executions"] >= s["tasks"]
    assert scenarios["300 tasks / 3 workers with kills"]["kills"] >= 1
    assert [j.id for j in store.job_list()] == [mine.id]  # its own jobs purged, ours kept
    assert store.job_get(mine.id).status == "pending"
    assert store.run_list() == []


def _job(job_id: int, status: str = "succeeded", token: int = 1) -> Job:
    now = datetime.now(UTC)
    return Job(
        job_id,
        "q",
        "t",
        {},
        status,
        0,
        now,
        None,
        token,
        3,
        token,
        None,
        None,
        None,  # type: ignore[arg-type]
        None,
        None,
        now,
        now,
        now,
        None,
        None,
        None,
    )


class _Attempts:
    def __init__(self, outcomes: dict[int, list[str]]) -> None:
        self.outcomes = outcomes

    def attempt_list(self, job_id: int) -> list[Attempt]:
        now = datetime.now(UTC)
        return [Attempt(job_id, n + 1, n + 1, "w", now, now, outcome, None, None)
                for n, outcome in enumerate(self.outcomes.get(job_id, []))]  # fmt: skip


def test_the_checker_counts_duplicates_crash_reruns_and_missing_jobs() -> None:
    """The checker itself, on a made-up ledger with every kind of fault."""
    diagnosis = Diagnosis.__new__(Diagnosis)
    diagnosis.store = _Attempts({  # type: ignore[assignment]
        2: ["worker_died", "succeeded"],  # re-run after its worker was killed: allowed
        3: ["succeeded", "succeeded"],  # re-claimed without a lease loss: a duplicate
        7: ["lease_expired", "succeeded"],  # lease lost by a worker never killed: duplicate
    })  # fmt: skip
    report = Report("made up", 0, 1)
    jobs = [_job(1), _job(2, token=2), _job(3, token=2), _job(4, "failed"), _job(5), _job(6)]
    jobs.append(_job(7, token=2))
    ledger = [
        (1, 1, 100), (1, 1, 101),  # the same lease executed twice: a duplicate
        (2, 1, 666), (2, 2, 101),  # 666 is the pid the fleet killed
        (3, 1, 100), (3, 2, 101),
        (4, 1, 100),  # failed: missing
        (6, 1, 100),  # job 5 never executed: missing
        (7, 1, 100), (7, 2, 101),
    ]  # fmt: skip
    diagnosis._check(report, jobs, ledger, killed={666})
    assert (report.duplicates, report.crash_reruns, report.missing) == (3, 1, 2)
    assert any("job 7" in n and "its worker was not killed" in n for n in report.notes)
    assert not report.ok and report.executions == 10
