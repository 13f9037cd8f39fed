"""App: the task registry and the user-facing API."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, overload

from onceq.errors import UnknownTask
from onceq.models import DEFAULT_QUEUE, FINISHED, Job, Run
from onceq.store import Store, open_store
from onceq.store.urls import parse_url, resolve
from onceq.task import Task

if TYPE_CHECKING:
    from onceq.worker import Worker
    from onceq.workflow import Workflow


class App:
    """Tasks and where their jobs are stored.

    `App()` uses ONCEQ_URL, else `sqlite:///onceq.db`. The store opens on first use (so
    importing a module that creates an App touches no database), once per process.
    """

    def __init__(
        self, url: str | None = None, *, default_queue: str = DEFAULT_QUEUE, migrate: bool = True
    ) -> None:
        self._url = url
        parse_url(resolve(url))  # a bad URL fails here, not at first use
        self.default_queue = default_queue
        self.migrate = migrate
        self.tasks: dict[str, Task] = {}
        self._store: Store | None = None
        self._store_pid = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The store URL in use."""
        return resolve(self._url)

    def use(self, url: str) -> None:
        """Point the app at another store (the CLI's --url); only before it is opened."""
        if self._store is not None:
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
                    self._store_pid = os.getpid()
        return self._store

    def close(self) -> None:
        """Close the store's connections."""
        if self._store is not None and self._store_pid == os.getpid():
            self._store.close()
        self._store = None

    # -- tasks ---------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[..., Any], /) -> Task: ...

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
    ) -> Callable[[Callable[..., Any]], Task]: ...

    def task(  # type: ignore[misc]  # one implementation behind both overloads
        self, fn: Callable[..., Any] | None = None, /, **options: Any
    ) -> Task | Callable[[Callable[..., Any]], Task]:
        """Register a handler: `@app.task` or `@app.task(retries=3, timeout=30)`.

        The name defaults to module.function. `retries` more attempts follow a failure
        (exponential backoff from `retry_backoff` seconds, with jitter) when the error is
        one of `retry_on`. `timeout` bounds one attempt: async handlers are cancelled,
        `subprocess=True` handlers killed, thread handlers abandoned (their late result
        is refused). Plain functions run on threads, `async def` ones on an event loop.
        """

        def register(handler: Callable[..., Any]) -> Task:
            task = Task(self, handler, **options)
            if task.name in self.tasks and self.tasks[task.name].fn is not handler:
                raise ValueError(f"task name {task.name!r} is registered twice")
            self.tasks[task.name] = task
            return task

        return register(fn) if fn is not None else register

    def get_task(self, name: str) -> Task:
        """A registered task by name, or UnknownTask."""
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTask(f"unknown task {name!r}: the app has no task of that name") from None

    def enqueue(self, name: str, payload: dict[str, Any] | None = None, **options: Any) -> Job:
        """Enqueue a registered task by name, validating `payload` as task.enqueue does."""
        task = self.get_task(name)
        return task.configure(**options).enqueue(**(payload or {}))

    # -- jobs ----------------------------------------------------------------------

    def get_job(self, job_id: int) -> Job:
        """A job by id (JobNotFound if there is none)."""
        return self.store.job_get(job_id)

    def wait(self, job_id: int, timeout: float | None = None) -> Job:
        """Wait until the job is succeeded, failed or cancelled; TimeoutError after
        `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.002
        while True:
            job = self.store.job_get(job_id)
            if job.status in FINISHED:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout}s")
            time.sleep(pause)
            pause = min(pause * 1.5, 0.1)

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
