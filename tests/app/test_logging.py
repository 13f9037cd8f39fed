"""Problem 5 of issue 14: logging the standard way. Under `onceq worker` an app's own
`log.info` inside a handler is shown, with the time and the job it ran for; a failed
job's traceback is logged; `--log-format json` gives one JSON object per line; and an
app that configures logging itself keeps its configuration."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.app.cli import APP, environment, onceq


def _enqueue_and_run(tmp_path: Path, *worker_args: str, **env: str) -> tuple[int, int, str]:
    environ = environment(ONCEQ_URL=f"sqlite:///{tmp_path}/s.db", **env)
    jobs = (("tests.app.apps.greet", '{"name": "world"}'),
            ("tests.app.apps.explode", '{"why": "on purpose"}'))  # fmt: skip
    ids = []
    for task, payload in jobs:
        enqueued = onceq(
            "enqueue", "--app", APP, task, "--json", payload, cwd=tmp_path, env=environ
        )
        ids.append(int(enqueued.stdout))
    worker = onceq("worker", "--app", APP, "--burst", *worker_args, cwd=tmp_path, env=environ)
    assert worker.returncode == 0, worker.stderr
    return ids[0], ids[1], worker.stderr


def test_a_handlers_own_logs_show_with_time_and_job(tmp_path: Path) -> None:
    greet, explode, stderr = _enqueue_and_run(tmp_path)
    [line] = [x for x in stderr.splitlines() if "greeting world" in x]
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO tests\.app\.handlers: ", line)
    assert line.endswith(f"[job={greet} task=tests.app.apps.greet attempt=1/1]")
    failed = stderr[stderr.index("job.failed") :]
    assert f"job={explode}" in failed.splitlines()[0]
    assert "Traceback (most recent call last)" in failed
    assert "RuntimeError: exploded: on purpose" in failed


def test_log_format_json_is_one_object_per_line(tmp_path: Path) -> None:
    greet, explode, stderr = _enqueue_and_run(tmp_path, "--log-format", "json")
    records = [json.loads(line) for line in stderr.splitlines()]
    [mine] = [r for r in records if r["message"] == "greeting world"]
    assert (mine["logger"], mine["level"]) == ("tests.app.handlers", "INFO")
    assert (mine["job_id"], mine["job_task"], mine["job_attempt"]) == (
        greet, "tests.app.apps.greet", "1/1")  # fmt: skip
    [failed] = [r for r in records if r.get("event") == "job.failed"]
    assert failed["fields"]["job"] == explode
    assert "RuntimeError: exploded: on purpose" in failed["traceback"]


def test_the_apps_own_logging_configuration_wins(tmp_path: Path) -> None:
    own = tmp_path / "app.log"
    _, _, stderr = _enqueue_and_run(tmp_path, ONCEQ_TEST_APP_LOGGING=str(own))
    assert "greeting world" not in stderr  # onceq installed no handler of its own
    lines = own.read_text().splitlines()
    assert "APPFMT INFO tests.app.handlers greeting world" in lines
    assert any(x.startswith("APPFMT ERROR onceq.worker job.failed") for x in lines)
