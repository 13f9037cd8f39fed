"""The batch runner's App: what `onceq batch run` starts its worker processes with
(`--app onceq.batch.worker:app`). One task: a code task of a batch, start to merge."""

from __future__ import annotations

from typing import Any

from onceq.app import App
from onceq.batch.git import GitError
from onceq.batch.runner import TaskFailed, TaskRun
from onceq.context import current_job
from onceq.errors import StoreUnavailable

app = App()
TASK = "onceq.batch.task"
ATTEMPTS = 4  # a task's job is re-run after a crash or a git failure, up to this


@app.task(name=TASK, retries=ATTEMPTS - 1, retry_backoff=0.2,
          retry_on=(GitError, OSError, StoreUnavailable))  # fmt: skip
def run_task(batch: str, number: str) -> dict[str, Any]:
    """Run one task of `batch` until it is merged (or fails)."""
    record = app.store.batch_get(batch)
    if record is None:
        raise TaskFailed(f"batch {batch!r} is not in the store any more")
    return TaskRun(app.store, current_job(), record, number).run()
