"""Scenario 16, disk full (SQLite): the store lives on a small tmpfs that fills up while
producers enqueue and workers complete. An enqueue that cannot be written fails with one
clear line (and writes nothing); nothing acknowledged before is lost; once space is
freed, every job runs and enqueues work again. Needs root to mount the tmpfs: where the
machine does not allow it, the test says so and skips."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from onceq import App
from onceq.errors import StoreUnavailable
from tests.chaos.conftest import fresh_app
from tests.chaos.harness import Chaos, all_finished, sql, wait_for

pytestmark = pytest.mark.chaos

SIZE = "16m"  # the whole file system
FILLER = 4 * 1024 * 1024  # bytes set aside, to be freed once the disk is full
PAYLOAD = 4000  # bytes per job: the disk fills after about a thousand


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}): needs root")
    try:
        yield mount
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def test_a_full_disk_fails_enqueues_clearly_loses_nothing_and_recovers(
    small_disk: Path, new_chaos: object
) -> None:
    url = f"sqlite:///{small_disk}/onceq.db"
    chaos: Chaos = new_chaos(url)  # type: ignore[operator]
    app: App = fresh_app(url)
    app.store  # noqa: B018 - the schema first
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * FILLER)
    workers = [chaos.worker(concurrency=4, lease=2.0)[0] for _ in range(2)]
    blob = app.tasks["chaos.blob"]
    acknowledged: list[int] = []
    refusal = None
    for n in range(100_000):
        if n == 20:  # the workers are at work before the disk fills
            wait_for(lambda: all_finished(chaos.url, 20), timeout=60)
        try:
            acknowledged.append(blob.enqueue(data=f"{n:06d}" + "x" * PAYLOAD).id)
        except StoreUnavailable as exc:
            refusal = str(exc)
            break
    assert refusal is not None, "the disk never filled"
    assert "disk is full" in refusal and "\n" not in refusal, refusal
    # Refused means not written: the job count is what was acknowledged.
    assert sql(url, "SELECT count(*) FROM onceq_jobs") == [(len(acknowledged),)]
    # The workers meet the full disk too: their completions wait (kept, not lost).
    wait_for(lambda: "disk is full" in "".join(chaos.logs().values()), timeout=60)
    time.sleep(2.0)  # the fault schedule: full for a whole lease, heartbeats failing too
    filler.unlink()  # space again
    acknowledged.append(blob.enqueue(data="after").id)
    wait_for(lambda: all_finished(chaos.url, len(acknowledged)), timeout=180)
    for proc in workers:
        assert chaos.terminate(proc) == 0
    logs = "".join(chaos.logs().values())
    app.close()
    assert sql(url, "PRAGMA integrity_check") == [("ok",)]
    figures = chaos.check(expected_ids=acknowledged)
    chaos.report(figures, disk=SIZE, acknowledged=len(acknowledged),
                 worker_errors_while_full=logs.count("disk is full"))  # fmt: skip
    chaos.finished_ok(figures)
    assert figures.reruns == figures.reruns_lease_loss
