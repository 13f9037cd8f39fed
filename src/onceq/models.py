"""Plain records passed between the store and the layers above it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Generic, Literal

from typing_extensions import TypeVar

R = TypeVar("R", default=Any)  # a job's result type: the handler's return annotation

JobStatus = Literal["pending", "running", "succeeded", "failed", "cancelled"]
JOB_STATUSES: Final = ("pending", "running", "succeeded", "failed", "cancelled")
FINISHED: Final = frozenset({"succeeded", "failed", "cancelled"})

RunStatus = Literal["running", "succeeded", "failed", "cancelled"]
StepStatus = Literal["waiting", "running", "succeeded", "failed", "cancelled", "skipped"]

DEFAULT_QUEUE: Final = "default"


def _jsonable(record: Any) -> dict[str, Any]:
    return {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name in record.__slots__
        for value in (getattr(record, name),)
    }


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to insert. `args` must be JSON-serializable (checked by the store)."""

    task: str
    args: dict[str, Any] = field(default_factory=dict)
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    delay: float = 0.0
    run_at: datetime | None = None
    max_attempts: int = 1
    key: str | None = None
    run_id: int | None = None
    step: str | None = None
    item: int | None = None
    # At most `concurrency_limit` jobs with this key run at once, across every worker.
    concurrency_key: str | None = None
    concurrency_limit: int | None = None


@dataclass(frozen=True, slots=True)
class Job(Generic[R]):
    """A job as stored; `worker` is who holds it (or last ran it). `result` is the
    decoded JSON; `app.wait(job)` (given the Job an enqueue returned) gives it back as
    the handler's return type, so a type checker knows it as `R`."""

    id: int
    queue: str
    task: str
    args: Any
    status: JobStatus
    priority: int
    run_at: datetime
    key: str | None
    attempts: int
    max_attempts: int
    lease_token: int
    lease_expires_at: datetime | None
    worker: str | None
    result: R | None
    last_error: str | None
    last_traceback: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    run_id: int | None
    step: str | None
    item: int | None
    concurrency_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601)."""
        return _jsonable(self)


@dataclass(frozen=True, slots=True)
class Lease:
    """A claimed job: what a worker needs to run it and to prove it holds it.

    `token` is the fencing token: every write about this attempt must carry it,
    and the store refuses any write whose token is no longer the job's current one.
    `args` is the raw JSON text, decoded by the worker so that one bad row fails
    one job instead of the whole claim.
    """

    job_id: int
    token: int
    task: str
    args: str
    queue: str
    attempts: int
    max_attempts: int
    run_id: int | None = None
    step: str | None = None
    item: int | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One claim of a job: who held it, when, and how it ended."""

    job_id: int
    attempt: int
    token: int
    worker: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None
    error: str | None
    rejected: str | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601)."""
        return _jsonable(self)


@dataclass(frozen=True, slots=True)
class Failure:
    """A handler's failure, to record against a lease.

    `retry_in` is None for a final failure; otherwise the store retries after
    that many seconds if the job has attempts left.
    """

    lease: Lease
    error: str
    traceback: str | None = None
    retry_in: float | None = None


@dataclass(frozen=True, slots=True)
class Rescued:
    """A job whose lease expired (or whose worker died), and where it went."""

    job_id: int
    token: int
    status: JobStatus


@dataclass(frozen=True, slots=True)
class StepState:
    """One step of a run: its status, and its jobs counted by status."""

    name: str
    status: StepStatus
    total: int | None
    counts: dict[str, int]
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def dispatched(self) -> int:
        """Jobs dispatched for this step (one per item; one for a plain step)."""
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601)."""
        return _jsonable(self) | {"dispatched": self.dispatched}


@dataclass(frozen=True, slots=True)
class Run:
    """A workflow run and its steps, in the definition's order."""

    id: int
    name: str
    status: RunStatus
    input: Any
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    steps: tuple[StepState, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601)."""
        return _jsonable(self) | {"steps": [s.to_json() for s in self.steps]}


BatchTaskStatus = Literal[
    "pending", "in_progress", "pr_created", "reviewing", "fixing", "approved", "merged", "failed"
]


@dataclass(frozen=True, slots=True)
class BatchTaskRecord:
    """Where one code task of a batch stands."""

    number: str
    title: str
    batch_no: int
    status: BatchTaskStatus
    rounds: int
    branch: str
    worktree: str | None
    start: str | None
    verified: str | None
    feedback: str | None
    error: str | None
    merged_as: str | None
    started_at: datetime | None
    merged_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A batch as stored: where it merges, its run, its pool and its tasks."""

    name: str
    repo: str
    base: str
    base_start: str
    definition: Any
    run_id: int | None
    run_status: str | None
    created_at: datetime
    worktrees: list[str]
    tasks: list[BatchTaskRecord]

    def task(self, number: str) -> BatchTaskRecord:
        return next(t for t in self.tasks if t.number == number)


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """A live worker process, as the worker registry (`onceq workers`) shows it.

    `queues` is None for a worker serving every unreserved queue. `started_at` is the
    worker's own clock (when its process started), `last_seen` the store's (its last
    heartbeat that got through)."""

    name: str
    host: str
    pid: int
    queues: list[str] | None
    concurrency: int
    version: str
    started_at: datetime
    last_seen: datetime

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601)."""
        return _jsonable(self)


@dataclass(frozen=True, slots=True)
class PeriodicRecord:
    """A periodic task as stored: its schedule, the latest tick enqueued and its job."""

    name: str
    spec: dict[str, Any]
    last_tick: datetime | None
    last_job: int | None
    last_status: JobStatus | None  # None once that job was pruned
    created_at: datetime
    seen_at: datetime

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601)."""
        return _jsonable(self)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What one SQLite WAL checkpoint did: `complete` when every page of the WAL is now
    in the database file (then the WAL can start over from its beginning)."""

    mode: str  # PASSIVE or TRUNCATE
    busy: bool  # it could not run to its end (others were writing or reading)
    wal_pages: int
    moved_pages: int
    wal_bytes: int  # the WAL file's size after it

    @property
    def complete(self) -> bool:
        return not self.busy and self.moved_pages >= self.wal_pages


# Seconds: the bucket bounds of both job histograms (run time and wait). The folded
# history keeps counts per bucket index, so changing these needs a migration.
HISTOGRAM_BOUNDS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Histogram:
    """Counts per bucket (not cumulative; the last one is above every bound) and the sum."""

    buckets: tuple[int, ...]
    total: float

    @property
    def count(self) -> int:
        return sum(self.buckets)


@dataclass(frozen=True, slots=True)
class TaskStats:
    """Every total onceq keeps for one task of one queue, since the store was created.

    Counts survive restarts and retention. `retried`: failed attempts sent back to
    pending by the task's retry policy. `reruns`: runs after the first, by what explains
    them (`retry`, `lease_lost`, `operator`, `shutdown`); `reruns_unexplained` must stay 0.
    `stale_writes`: writes refused because their lease was gone, by kind of write.
    `duration`/`wait`: succeeded jobs' run time and the time from due to start.
    """

    queue: str
    task: str
    enqueued: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    retried: int = 0
    lease_losses: int = 0
    rescues: int = 0
    duplicate_dispatches: int = 0
    stale_writes: dict[str, int] = field(default_factory=dict)
    reruns: dict[str, int] = field(default_factory=dict)
    reruns_unexplained: int = 0
    duration: Histogram = Histogram((0,) * (len(HISTOGRAM_BOUNDS) + 1), 0.0)
    wait: Histogram = Histogram((0,) * (len(HISTOGRAM_BOUNDS) + 1), 0.0)


@dataclass(frozen=True, slots=True)
class Stats:
    """What the dashboard and /metrics show, read from the store in one snapshot.

    `jobs`: queue → status → jobs now; `oldest_runnable`: queue → seconds its oldest
    pending, due job has waited (only queues that have one); `minutes`: the last hour,
    oldest first, as (minute start, succeeded, failed, cancelled)."""

    now: datetime
    tasks: tuple[TaskStats, ...]
    jobs: dict[str, dict[str, int]]
    oldest_runnable: dict[str, float]
    minutes: tuple[tuple[datetime, int, int, int], ...]


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs a dashboard page or bulk action means; None matches anything. `text`
    is found anywhere in the job's arguments (their JSON text); `since`/`until` bound
    its creation time."""

    queue: str | None = None
    task: str | None = None
    status: JobStatus | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None
    run_id: int | None = None


@dataclass(frozen=True, slots=True)
class StepItem:
    """One item of a fan-out: its arguments (or why they could not be resolved) and its
    job, once dispatched."""

    item: int
    args: Any
    error: str | None
    job_id: int | None
    status: JobStatus | None
