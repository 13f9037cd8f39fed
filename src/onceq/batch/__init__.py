"""Code-task batches: parallel code changes in a pool of git worktrees, verified and
merged exactly once (SPEC.md, "Code-task batches").

    spec = onceq.batch.load("batch.yaml")
    result = onceq.batch.run("batch.yaml", url="sqlite:///onceq.db")  # workers included

A batch's tasks are the jobs of one workflow run whose steps are the batch numbers in
order, so batch k+1 starts once every task of batch k is merged, dispatched once.
"""

from __future__ import annotations

from onceq.batch.control import Prepared, clean, preflight, run, submit
from onceq.batch.spec import BatchSpec, TaskSpec, load

__all__ = ["BatchSpec", "Prepared", "TaskSpec", "clean", "load", "preflight", "run", "submit"]
