"""Problem 4 of issue 14: a shutdown is not a failure. A job still running when
`onceq worker`'s --grace ends, or when a second signal stops it at once, is put back
with its attempt given back (the history says why), never failed — even with no retry
left."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.app.cli import APP, environment, onceq, start
from tests.helpers import eventually


@pytest.mark.parametrize("how", ["grace ends", "second signal"])
def test_jobs_running_at_shutdown_are_put_back_not_failed(
    store_url: str, tmp_path: Path, how: str
) -> None:
    env = environment(ONCEQ_URL=store_url)
    marker = tmp_path / "running"
    enqueued = onceq("enqueue", "--app", APP, "tests.app.apps.hold", "--json",
                     json.dumps({"marker": str(marker)}), cwd=tmp_path, env=env)  # fmt: skip
    job_id = int(enqueued.stdout)
    grace = "0.2" if how == "grace ends" else "60"
    log = tmp_path / "worker.log"
    worker = start("worker", "--app", APP, "--grace", grace, cwd=tmp_path, env=env, log=log)
    try:
        eventually(marker.exists, timeout=60)  # the handler runs (no retry left: 1 attempt)
        worker.send_signal(signal.SIGTERM)
        if how == "second signal":
            eventually(lambda: "supervisor.draining" in log.read_text(), timeout=30)
            worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        marker.unlink(missing_ok=True)
    shown = json.loads(onceq("job", str(job_id), "--json", cwd=tmp_path, env=env).stdout)
    assert shown["job"]["status"] == "pending", shown
    assert shown["job"]["attempts"] == 0  # the attempt was given back
    [attempt] = shown["attempts"]
    assert attempt["outcome"] == "stopped"
    assert "during a shutdown" in attempt["error"]
