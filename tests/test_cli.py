"""The `onceq` command end to end, as a user runs it (a real subprocess each time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = "tests.worker.apps:app"


def onceq(url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ONCEQ_URL": url, "COLUMNS": "200"}
    env.pop("ONCEQ_TEST_LEDGER", None)
    result = subprocess.run(
        [sys.executable, "-m", "onceq", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_enqueue_then_burst_workers_then_jobs(store_url: str) -> None:
    ids = [
        int(
            onceq(
                store_url,
                "enqueue",
                "--app",
                APP,
                "tests.worker.apps.record",
                "--json",
                json.dumps({"n": n}),
            ).stdout
        )
        for n in range(10)
    ]
    keyed = onceq(
        store_url,
        "enqueue",
        "--app",
        APP,
        "tests.worker.apps.record",
        "--json",
        '{"n": 99}',
        "--key",
        "once",
    )
    again = onceq(
        store_url,
        "enqueue",
        "--app",
        APP,
        "tests.worker.apps.record",
        "--json",
        '{"n": 100}',
        "--key",
        "once",
    )
    assert keyed.stdout == again.stdout
    onceq(store_url, "worker", "--app", APP, "--burst", "--processes", "2", "--concurrency", "3")
    listing = json.loads(onceq(store_url, "jobs", "--json").stdout)
    results = {j["id"]: (j["status"], j["result"], j["attempts"]) for j in listing["jobs"]}
    assert {i: results[i] for i in ids} == {i: ("succeeded", n, 1) for n, i in enumerate(ids)}
    assert listing["counts"] == [{"queue": "default", "status": "succeeded", "count": 11}]
    shown = json.loads(onceq(store_url, "job", str(ids[0]), "--json").stdout)
    assert shown["job"]["result"] == 0
    assert [a["outcome"] for a in shown["attempts"]] == ["succeeded"]
    assert "succeeded" in onceq(store_url, "jobs").stdout


def test_cancel_and_retry_from_the_command_line(store_url: str) -> None:
    job_id = onceq(
        store_url, "enqueue", "--app", APP, "tests.worker.apps.record", "--json", '{"n": 1}'
    ).stdout.strip()
    assert "cancelled (was pending)" in onceq(store_url, "cancel", job_id).stdout
    refused = onceq(store_url, "cancel", job_id, check=False)
    assert refused.returncode == 1 and "already finished: it is cancelled" in refused.stderr
    assert "pending again" in onceq(store_url, "retry", job_id).stdout
    refused = onceq(store_url, "retry", job_id, check=False)
    assert refused.returncode == 1 and "only failed or cancelled" in refused.stderr


def test_migrate_is_idempotent(sqlite_url: str) -> None:
    assert "applied migration(s) 1" in onceq(sqlite_url, "migrate").stdout
    assert "nothing to do" in onceq(sqlite_url, "migrate").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["enqueue", "--app", APP, "tests.worker.apps.record", "--json", '{"n": "x"}'],
            "argument 'n': Input should be a valid integer",
        ),
        (["enqueue", "--app", APP, "no.such.task"], "unknown task 'no.such.task'"),
        (
            ["enqueue", "--app", APP, "tests.worker.apps.record", "--json", "{oops"],
            "--json is not valid JSON",
        ),
        (
            ["enqueue", "--app", APP, "tests.worker.apps.record", "--json", "[1]"],
            "--json must be a JSON object",
        ),
        (["enqueue", "--app", "tests.worker.apps:nothing", "x"], "is not an onceq App"),
        (["enqueue", "--app", "no_such_module:app", "x"], "cannot import 'no_such_module'"),
        (["worker", "--app", "missing-colon"], "expected module:attribute"),
        (["job", "123456"], "no job with id 123456"),
        (["jobs", "--status", "done"], "unknown status 'done'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(sqlite_url: str, args: list[str], message: str) -> None:
    onceq(sqlite_url, "migrate")
    result = onceq(sqlite_url, *args, check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert json.loads(onceq(sqlite_url, "jobs", "--json").stdout)["jobs"] == []


def test_a_bad_url_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = onceq("mysql://localhost/db", "jobs", check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: unknown store URL scheme 'mysql' in "
        "'mysql://localhost/db': expected sqlite or postgresql"
    )


FLOW = """
name: tiny
input: [items]
steps:
  fan:
    task: tests.workflow.apps.noop
    with_items: $input.items
    args: {n: $item}
    next: [join]
  join:
    task: tests.workflow.apps.join
    args: {values: $steps.fan.results}
"""


def test_workflow_run_show_and_bad_files(store_url: str, tmp_path: Path) -> None:
    flow = tmp_path / "tiny.yaml"
    flow.write_text(FLOW)
    wapp = "tests.workflow.apps:app"
    run_id = onceq(
        store_url, "workflow", "run", "--app", wapp, str(flow), "--input", '{"items": [1, 2, 3]}'
    ).stdout.strip()
    onceq(store_url, "worker", "--app", wapp, "--burst")
    shown = json.loads(onceq(store_url, "workflow", "show", run_id, "--json").stdout)
    assert shown["status"] == "succeeded"
    assert [(s["name"], s["dispatched"], s["results"]) for s in shown["steps"]] == [
        ("fan", 3, [1, 2, 3]),
        ("join", 1, [[1, 2, 3]]),
    ]
    assert "succeeded" in onceq(store_url, "workflow", "show", run_id).stdout

    flow.write_text(FLOW.replace("next: [join]", "next: [jion]"))
    bad = onceq(
        store_url, "workflow", "run", "--app", wapp, str(flow), "--input", "{}", check=False
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "error: workflow 'tiny', step 'fan': next names unknown step 'jion'"
    )
    flow.write_text("steps: [")
    bad = onceq(store_url, "workflow", "run", "--app", wapp, str(flow), check=False)
    assert bad.returncode == 2 and "invalid YAML at line 1" in bad.stderr
    missing = onceq(store_url, "workflow", "show", "999", check=False)
    assert missing.returncode == 2 and "no workflow run with id 999" in missing.stderr
    runs = json.loads(onceq(store_url, "workflow", "list", "--json").stdout)
    assert [r["id"] for r in runs] == [int(run_id)]  # the bad ones enqueued nothing


def test_the_demo_runs_and_proves_each_step_ran_once() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "onceq", "demo", "--pages", "8"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert result.returncode == 0, result.stderr
    assert "0 duplicate dispatches" in result.stdout
    assert "11 jobs for 11 (step, item) pairs" in result.stdout
    assert "'ok': True" in result.stdout
