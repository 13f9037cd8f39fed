"""`onceq bench`'s batch scenarios: the seed pipeline's figures, as real batches.

Each scenario is a real batch on a real git repository made for it (in the system's
temp folder): T tasks on W workers, an agent that takes D seconds (a shell `sleep`,
then a one-line change to a file of its own), a verification step, the review, the
merge queue. The W worker processes are started and ready first (a warm fleet, as
`onceq batch run` keeps for a whole batch); the clock starts when the checked batch
is submitted and stops at the last merge, so worktree creation, commits, verification
and every merge are inside it.

    efficiency = ideal makespan / measured = ceil(T / W) * D / (last merge - submit)
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from onceq.batch import load, preflight, submit
from onceq.batch.control import WORKER_APP, queue_of
from onceq.store import Store
from onceq.tools.fleet import Fleet


def scenario(
    store: Store, url: str, tasks: int, workers: int, seconds: float
) -> tuple[float, float, str]:
    """Run one batch scenario: (efficiency %, measured makespan s, detail)."""
    folder = Path(tempfile.mkdtemp(prefix="onceq-bench-batch-"))
    try:
        file = _project(folder, tasks, workers, seconds)
        spec = load(file)
        fleet = Fleet(WORKER_APP, url, folder, queue=queue_of(spec.name), concurrency=1,
                      lease=30)  # fmt: skip
        try:
            fleet.start(workers)
            prepared = preflight(spec, file)
            start = time.time()
            run_id, _ = submit(store, prepared)
            assert run_id is not None
            while store.run_get(run_id).status == "running":
                time.sleep(0.01)
        finally:
            fleet.stop()
        record = store.batch_get(spec.name)
        assert record is not None
        merged = [t.merged_at.timestamp() for t in record.tasks if t.merged_at is not None]
        if len(merged) != tasks:
            raise RuntimeError(f"bench batch {spec.name}: {len(merged)} of {tasks} merged "
                               f"(see {folder})")  # fmt: skip
        makespan = max(merged) - start
        ideal = math.ceil(tasks / workers) * seconds
        return 100 * ideal / makespan, makespan, f"makespan {makespan:.3f}s, ideal {ideal:.3f}s"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _project(folder: Path, tasks: int, workers: int, seconds: float) -> Path:
    repo = folder / "repo"
    repo.mkdir()

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (repo / "README.md").write_text("bench\n")
    git("add", ".")
    git("-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "init")
    document: dict[str, Any] = {
        "name": f"bench-{uuid.uuid4().hex[:8]}",
        "repo": "repo",
        "base": "main",
        "workers": workers,
        "agent": f'sleep {seconds} && echo "$ONCEQ_TASK_TITLE" > "task-$ONCEQ_TASK_NUMBER.txt"',
        "verify": ["test -f README.md"],
        "fix_rounds": 0,
        "tasks": [{"number": str(i + 1), "title": f"task {i + 1}"} for i in range(tasks)],
    }
    file = folder / "batch.yaml"
    file.write_text(yaml.safe_dump(document, sort_keys=False))
    return file


def run_all(
    backend: str,
    store: Store,
    url: str,
    sizes: tuple[tuple[int, int, float], ...],
    log: Callable[[str], None],
) -> list[tuple[str, float, str]]:
    """Every batch scenario: (scenario name, efficiency %, detail)."""
    out = []
    for tasks, workers, seconds in sizes:
        log(f"{backend}: batch of {tasks} tasks ({seconds}s agent) on {workers} workers")
        efficiency, _, detail = scenario(store, url, tasks, workers, seconds)
        out.append((f"batch {tasks} tasks x {seconds}s / {workers} workers", efficiency, detail))
    return out
