"""App: the task registry and the user-facing API."""

from __future__ import annotations

import asyncio
import difflib
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, overload

from onceq.durations import seconds
from onceq.errors import ConfigError, UnknownTask
from onceq.models import DEFAULT_QUEUE, Job, Run
from onceq.store import Store, open_store
from onceq.store.jsoncodec import DEFAULT_MAX_PAYLOAD
from onceq.store.urls import parse_url, resolve
from onceq.task import Task

DEFAULT_RETENTION = "7d"

if TYPE_CHECKING:
    from onceq.schedule.periodic import Periodic
    from onceq.worker import Worker
    from onceq.workflow import Workflow

P = ParamSpec("P")
R = TypeVar("R")


class _Register(Protocol):
    """What `@app.task(...)` returns: registers a handler, sync or async."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...


class App:
    """Tasks and where their jobs are stored.

    `App()` uses ONCEQ_URL, else `sqlite:///onceq.db`. The store opens on first use (so
    importing a module that creates an App touches no database), once per process.
    `max_payload` bounds a payload, a result or a workflow run's input, in bytes of JSON
    (default 1 MiB; None: no bound): a larger payload is refused at enqueue, a larger
    result fails its job, and nothing that large is stored. `retention` is how long
    finished jobs and workflow runs are kept (seconds, a timedelta or text like "7d";
    default 7 days): the app's workers delete older ones. None keeps everything.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        default_queue: str = DEFAULT_QUEUE,
        migrate: bool = True,
        max_payload: int | None = DEFAULT_MAX_PAYLOAD,
        retention: float | str | timedelta | None = DEFAULT_RETENTION,
    ) -> None:
        self._url = url
        parse_url(resolve(url))  # a bad URL fails here, not at first use
        self.default_queue = default_queue
        self.migrate = migrate
        self.tasks: dict[str, Task[..., Any]] = {}
        self.periodics: dict[str, Periodic] = {}
        self._store: Store | None = None
        self.max_payload = max_payload
        self.retention = None if retention is None else seconds(retention, "retention")
        self._store_pid = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The store URL in use."""
        return resolve(self._url)

    @property
    def configured_url(self) -> str | None:
        """The URL given to App(...) or use(), if any (the CLI's rule: --url, else
        ONCEQ_URL, else this, else sqlite:///onceq.db)."""
        return self._url

    @property
    def max_payload(self) -> int | None:
        """The largest payload, result or run input, in bytes of JSON (None: any)."""
        return self._max_payload

    @max_payload.setter
    def max_payload(self, value: int | None) -> None:
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"max_payload must be a positive number of bytes or None, "
                              f"got {value!r}")  # fmt: skip
        self._max_payload = value
        if self._store is not None:
            self._store.max_payload = value

    def use(self, url: str) -> None:
        """Point the app at another store (the CLI's --url); only before it is opened."""
        if self._store is not None and self._store_pid == os.getpid():
            raise RuntimeError("the app's store is already open")
        parse_url(url)
        self._url = url

    @property
    def store(self) -> Store:
        """The job store, opened (and migrated) on first use in this process."""
        if self._store is None or self._store_pid != os.getpid():
            with self._lock:
                if self._store is None or self._store_pid != os.getpid():
                    self._store = open_store(self.url, migrate=self.migrate)
                    self._store.max_payload = self.max_payload
                    self._store_pid = os.getpid()
        return self._store

    async def store_async(self) -> Store:
        """The store, opened without blocking the event loop on first use."""
        if self._store is not None and self._store_pid == os.getpid():
            return self._store
        return await asyncio.to_thread(lambda: self.store)

    def close(self) -> None:
        """Close the store's connections."""
        if self._store is not None and self._store_pid == os.getpid():
            self._store.close()
        self._store = None

    async def aclose(self) -> None:
        """Close the store's connections, the async ones of this event loop included
        (an async app's shutdown: FastAPI's lifespan, say)."""
        if self._store is not None and self._store_pid == os.getpid():
            await self._store.close_async()
        self.close()

    @contextmanager
    def using(self, connection: Any) -> Iterator[None]:
        """Enqueue inside the caller's own PostgreSQL transaction (the outbox pattern):
        within the block, this app's enqueues run on `connection` — a psycopg
        connection, a SQLAlchemy Connection or Session, or Django's connection — and the
        job exists if and only if that transaction commits. onceq neither commits nor
        rolls back: the caller does."""
        with self.store.using(connection):
            yield

    # -- tasks ---------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        retries: int = 0,
        retry_backoff: float = 1.0,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        timeout: float | None = None,
        subprocess: bool = False,
        concurrency: int | None = None,
        concurrency_key: str | None = None,
    ) -> _Register: ...

    def task(  # type: ignore[misc]  # one implementation behind the overloads
        self, fn: Callable[..., Any] | None = None, /, **options: Any
    ) -> Task[..., Any] | _Register:
        """Register a handler: `@app.task` or `@app.task(retries=3, timeout=30)`.

        The name defaults to module.function. `retries` more attempts follow a failure
        (exponential backoff from `retry_backoff` seconds, with jitter) when the error is
        one of `retry_on`. `timeout` bounds one attempt: async handlers are cancelled,
        `subprocess=True` handlers killed, thread handlers abandoned (their late result
        is refused). Plain functions run on threads, `async def` ones on an event loop.
        `concurrency=N` runs at most N of its jobs at once, across every worker; with
        `concurrency_key="customer:{customer_id}"`, at most N per key, the key made from
        the job's arguments (a job waiting for its key never holds up other keys).
        """

        def register(handler: Callable[..., Any]) -> Task[..., Any]:
            task: Task[..., Any] = Task(self, handler, **options)
            if task.name in self.tasks and self.tasks[task.name].fn is not handler:
                raise ValueError(f"task name {task.name!r} is registered twice")
            self.tasks[task.name] = task
            return task

        if fn is not None:
            return register(fn)
        return register  # type: ignore[return-value]  # one function behind both overloads

    def periodic(
        self,
        *,
        cron: str | None = None,
        timezone: str | None = None,
        every: float | None = None,
        catch_up: int = 1,
        **task_options: Any,
    ) -> Callable[[Callable[..., Any] | Task[..., Any]], Task[..., Any]]:
        """Run a task on a schedule: `@app.periodic(cron="*/5 * * * *",
        timezone="Europe/Paris")` or `@app.periodic(every=30)` (seconds), on a task or
        on a plain function (registered as a task with `task_options`).

        The app's workers enqueue each tick exactly once, whichever of them comes first;
        the handler may take `tick: datetime`, the tick's time. After downtime only the
        latest `catch_up` missed ticks are enqueued. A cron expression is read on the
        wall clock of `timezone` (UTC if None): a local time the clock skips is no
        tick, and one it repeats is one tick."""
        from onceq.schedule.periodic import Periodic

        def register(target: Callable[..., Any] | Task[..., Any]) -> Task[..., Any]:
            if isinstance(target, Task):
                if task_options:
                    given = ", ".join(sorted(task_options))
                    raise ConfigError(f"periodic task {target.name}: {given} go(es) on @app.task")
                if target.app is not self:
                    raise ConfigError(f"periodic task {target.name}: a task of another app")
                task = target
            else:
                task = self.task(**task_options)(target)
            self.periodics[task.name] = Periodic.make(
                task, cron=cron, timezone=timezone, every=every, catch_up=catch_up
            )
            return task

        return register

    def get_task(self, name: str) -> Task[..., Any]:
        """A registered task by name, or UnknownTask (with a guess for a near miss)."""
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTask(
                f"unknown task {name!r}: the app has no task of that name{self.guess(name)}"
            ) from None

    def guess(self, name: str) -> str:
        """` (did you mean 'x'?)` for a task name that nearly matches one, else nothing."""
        close = difflib.get_close_matches(name, list(self.tasks), n=1, cutoff=0.6)
        return f" (did you mean {close[0]!r}?)" if close else ""

    def enqueue(self, name: str, payload: dict[str, Any] | None = None, **options: Any) -> Job:
        """Enqueue a registered task by name, validating `payload` as task.enqueue does."""
        task = self.get_task(name)
        return task.configure(**options).enqueue(**(payload or {}))

    # -- jobs ----------------------------------------------------------------------

    def get_job(self, job_id: int) -> Job:
        """A job by id (JobNotFound if there is none)."""
        return self.store.job_get(job_id)

    @overload
    def wait(self, job: Job[R], timeout: float | None = None) -> Job[R]: ...

    @overload
    def wait(self, job: int, timeout: float | None = None) -> Job: ...

    def wait(self, job: Job[Any] | int, timeout: float | None = None) -> Job[Any]:
        """Wait until the job is succeeded, failed or cancelled; TimeoutError after
        `timeout` seconds. Given the Job an enqueue returned (not its id), the result
        comes back as the handler's return type. PostgreSQL wakes it by LISTEN/NOTIFY."""
        job_id = job if isinstance(job, int) else job.id
        return self._typed(self.store.job_wait(job_id, timeout), typed=not isinstance(job, int))

    @overload
    async def wait_async(self, job: Job[R], timeout: float | None = None) -> Job[R]: ...

    @overload
    async def wait_async(self, job: int, timeout: float | None = None) -> Job: ...

    async def wait_async(self, job: Job[Any] | int, timeout: float | None = None) -> Job[Any]:
        """wait() for async code, without blocking the event loop."""
        job_id = job if isinstance(job, int) else job.id
        store = await self.store_async()
        found = await store.job_wait_async(job_id, timeout)
        return self._typed(found, typed=not isinstance(job, int))

    def _typed(self, job: Job[Any], *, typed: bool) -> Job[Any]:
        task = self.tasks.get(job.task)
        if not typed or task is None or job.status != "succeeded":
            return job
        return replace(job, result=task.load_result(job.result))

    def run_until_idle(self, *, concurrency: int = 4, queues: list[str] | None = None) -> Worker:
        """Run every job enqueued — and what they enqueue, workflow successors included —
        in this process with a real worker (the real claim path), until none is left;
        the worker, whose `counts` say what it did. For tests and scripts."""
        worker = self.worker(concurrency=concurrency, queues=queues, handle_signals=False,
                             lease=30.0)  # fmt: skip
        worker.run(burst=True)
        return worker

    # -- workflows -----------------------------------------------------------------

    def run_workflow(self, workflow: Workflow, input: dict[str, Any] | None = None) -> int:
        """Check the workflow against this app's tasks and the input, then start a run
        (committed when this returns); its id. Nothing is enqueued if a check fails."""
        from onceq.workflow import start_run

        definition = workflow.definition.compile(self)
        data = definition.check_input({} if input is None else input)
        return start_run(self.store, definition, data)

    def get_run(self, run_id: int) -> Run:
        """A workflow run with its steps (RunNotFound if there is none)."""
        return self.store.run_get(run_id)

    def cancel_run(self, run_id: int) -> str:
        """Cancel a run: pending jobs are cancelled, running ones finish without
        advancing it. Returns the status it had."""
        return self.store.run_cancel(run_id)

    def wait_run(self, run_id: int, timeout: float | None = None) -> Run:
        """Wait until the run has ended; TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.005
        while True:
            run = self.store.run_get(run_id)
            if run.status != "running":
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"workflow run {run_id} still running after {timeout}s")
            time.sleep(pause)
            pause = min(pause * 1.5, 0.2)

    def worker(self, **options: Any) -> Worker:
        """A worker for this app's tasks (see onceq.worker.Worker for the options)."""
        from onceq.worker import Worker

        return Worker(self, **options)
