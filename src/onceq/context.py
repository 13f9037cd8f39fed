"""What a running handler can know about its job: `onceq.current_job()`."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class JobContext:
    """The job a handler is running.

    `should_stop()` turns True once this attempt's lease is lost: a heartbeat was
    refused (the job was rescued or cancelled), no heartbeat got through for a whole
    lease length (the worker gives the lease up itself), or a thread handler ran past
    its timeout and was abandoned. Whatever the handler returns afterwards is refused by
    the store; a long handler should check it and stop early. Async handlers are
    cancelled instead; subprocess handlers killed.
    """

    job_id: int
    task: str
    attempt: int
    max_attempts: int
    worker: str
    token: int
    run_id: int | None = None
    step: str | None = None
    item: int | None = None
    # A plain flag, set once by the heartbeat thread: an Event per job costs a lock and
    # a condition on the hot path, and nothing waits on it.
    lost: bool = False

    def should_stop(self) -> bool:
        """True once this attempt's result can no longer be recorded."""
        return self.lost


_current: ContextVar[JobContext | None] = ContextVar("onceq_current_job", default=None)


def current_job() -> JobContext:
    """The job the calling handler is running; RuntimeError outside a handler."""
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("current_job() is only available inside a running onceq task")
    return ctx
