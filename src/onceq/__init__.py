"""onceq: a durable task queue and workflow engine for Python, backed by SQL.

from onceq import App

app = App()                     # ONCEQ_URL, else sqlite:///onceq.db

@app.task(retries=3, timeout=30)
def resize(image_id: int, width: int = 800) -> dict: ...

job = resize.enqueue(image_id=7)
app.worker(concurrency=8).run(burst=True)
"""

from __future__ import annotations

from onceq.app import App
from onceq.context import JobContext, current_job
from onceq.errors import (
    ConfigError,
    InvalidTransition,
    JobNotFound,
    JobTimeout,
    LeaseLost,
    OnceqError,
    OutcomeUnknown,
    PayloadError,
    SchemaError,
    StoreUnavailable,
    UnknownTask,
    WorkflowError,
)
from onceq.models import Attempt, Job, JobStatus, Run, StepState
from onceq.task import Call, Task
from onceq.version import __version__
from onceq.worker import Worker
from onceq.workflow import Workflow

__all__ = [
    "App",
    "Attempt",
    "Call",
    "ConfigError",
    "InvalidTransition",
    "Job",
    "JobContext",
    "JobNotFound",
    "JobStatus",
    "JobTimeout",
    "LeaseLost",
    "OnceqError",
    "OutcomeUnknown",
    "PayloadError",
    "Run",
    "SchemaError",
    "StepState",
    "StoreUnavailable",
    "Task",
    "UnknownTask",
    "Worker",
    "Workflow",
    "WorkflowError",
    "__version__",
    "current_job",
]
