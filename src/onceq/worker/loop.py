"""The worker: claims jobs for its free slots, runs them, records their outcomes.

One dispatcher thread owns the loop (`run_once` is one pass of it); a heartbeat thread
keeps the leases alive; handlers run on pool threads, an event loop, or child processes.

The order that makes bug 3 of SPEC.md impossible: a pass claims at most as many jobs as
there are free slots, and the claim has moved them to `running` in the store (committed)
before any of them is handed to an executor. A later pass cannot see them as pending.

What is guaranteed, precisely: a job runs again only when its lease was lost (its worker
died or stalled past the lease and a rescue took the job back), up to its attempts;
otherwise exactly once. A worker that lost a lease is told (`current_job().should_stop()`,
async handlers cancelled, subprocesses killed) at its next heartbeat, or by itself once
it went a whole lease without a heartbeat getting through; and the store refuses
whatever it records for that attempt.

An outcome is never lost and never blocks the others: when the database is unreachable
(StoreUnavailable) outcomes are kept and written once it is back; when one outcome cannot
be written at all (a result or an error the database refuses), the others are written
one by one and that one is recorded as a failure saying why.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from onceq import logs
from onceq.context import JobContext, _current
from onceq.errors import JobTimeout, LeaseLost, PayloadError, StoreUnavailable, UnknownTask
from onceq.models import Failure, Lease
from onceq.store import jsoncodec
from onceq.worker.executors import LoopThread, PoolItem, ThreadPool, run_in_subprocess
from onceq.worker.wakeup import PostgresWaker, SqliteWaker, Waker

if TYPE_CHECKING:
    from onceq.app import App
    from onceq.task import Task

log = logging.getLogger("onceq.worker")
LeaseKey = tuple[int, int]


@dataclass(eq=False, slots=True)
class _Running:
    """A job this worker holds a lease on."""

    lease: Lease
    ctx: JobContext
    task: Task | None
    deadline: float | None = None  # thread handlers: when the dispatcher gives up on it
    item: PoolItem | None = None
    aio: asyncio.Task[None] | None = None  # async handlers: cancelled on lease loss
    started: float = field(default_factory=time.monotonic)
    renewed: float = field(default_factory=time.monotonic)  # last time the lease was sure
    recording: bool = False  # its outcome is being written: a heartbeat miss is no loss

    @property
    def key(self) -> LeaseKey:
        return (self.lease.job_id, self.lease.token)


@dataclass(eq=False, slots=True)
class _Outcome:
    run: _Running
    result: str | None = None  # JSON text, on success
    error: BaseException | None = None
    traceback: str | None = None
    late: bool = False  # the dispatcher already gave up on this attempt (timeout)
    retried: int = 0  # times the store write failed and was tried again


def default_name() -> str:
    """host:pid:random — unique per worker, readable in `onceq jobs`."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def clean(text: str) -> str:
    """Error text any database can store: no NUL, no lone surrogates (escaped instead)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


class Worker:
    """Runs an app's jobs with `concurrency` slots.

    `lease` is how long a claim stays valid without a heartbeat; heartbeats come every
    `lease / 3` (never closer to the lease: a late heartbeat would let a live job be
    rescued). Every `rescue_interval` the worker also rescues jobs whose lease expired,
    wherever they ran: any number of workers may do so at once. On SIGTERM or SIGINT
    (when run in the main thread), it stops claiming, releases jobs it claimed but did
    not start, lets running ones finish within `grace` seconds, and returns; a second
    signal exits at once.
    """

    def __init__(
        self,
        app: App,
        *,
        concurrency: int = 8,
        queues: Sequence[str] | None = None,
        name: str | None = None,
        lease: float = 30.0,
        poll_interval: float | None = None,
        rescue_interval: float | None = None,
        grace: float = 30.0,
        handle_signals: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if lease <= 0:
            raise ValueError("lease must be positive")
        self.app = app
        self.store = app.store
        self.concurrency = concurrency
        self.queues = list(queues) if queues else None
        self.name = name or default_name()
        self.lease = lease
        self.heartbeat_interval = lease / 3
        self.rescue_interval = rescue_interval or min(max(lease / 4, 0.25), 5.0)
        self.poll_interval = poll_interval or (0.5 if self.store.dialect == "sqlite" else 1.0)
        self.grace = grace
        self.handle_signals = handle_signals

        # Keyed by lease, not job: after a lease loss the same job may be re-claimed here
        # while the old attempt's handler still runs, and both hold a slot.
        self._running: dict[LeaseKey, _Running] = {}
        self._lock = threading.Lock()  # guards _running against the heartbeat thread
        self._outcomes: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()
        self._unflushed: list[_Outcome] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._heartbeat_stop = threading.Event()  # later than _stop: drains need leases too
        self._draining = False
        self._idle = False
        self._next_rescue = 0.0
        self._threads: ThreadPool | None = None
        self._loop: LoopThread | None = None
        self._waker: Waker | None = None
        self._heartbeat: threading.Thread | None = None
        self.counts = {"claimed": 0, "succeeded": 0, "failed": 0, "rejected": 0, "released": 0}

    # -- lifecycle -----------------------------------------------------------------

    def run(self, *, burst: bool = False) -> None:
        """Work until stopped; with `burst`, return once no job of its queues is left."""
        self.open()
        restore = self._install_signals()
        logs.event(log, logging.INFO, "worker.started", worker=self.name,
                   concurrency=self.concurrency, queues=",".join(self.queues or ["*"]))  # fmt: skip
        try:
            pause = 0.0
            while not self._stop.is_set():
                try:
                    claimed = self.run_once()
                    if not claimed and burst and self._finished():
                        break
                    pause = 0.0
                except Exception as exc:  # the database went away: keep results, retry
                    pause = min(max(pause * 2, 0.1), 5.0)
                    log.error("worker pass failed (%s: %s); retrying in %.1fs",
                              type(exc).__name__, exc, pause)  # fmt: skip
                    self._stop.wait(pause)
                    continue
                if not claimed:
                    self._wait()
        finally:
            self.close()
            restore()
            logs.event(log, logging.INFO, "worker.stopped", worker=self.name, **self.counts)

    def stop(self) -> None:
        """Ask the worker to drain and return (thread-safe)."""
        self._stop.set()
        self._wake.set()

    def open(self) -> None:
        """Start the executors, the heartbeat and the wake-ups (run() does this)."""
        self._threads = ThreadPool(self.concurrency, f"onceq-{self.name}")
        if self.store.dialect == "postgres":
            self._waker = PostgresWaker(self.store, self._wake)
        else:
            self._waker = SqliteWaker(self.store)
        self._heartbeat = threading.Thread(
            target=self._heartbeat_loop, name="onceq-heartbeat", daemon=True
        )
        self._heartbeat.start()

    def _install_signals(self) -> Callable[[], object]:
        """SIGTERM/SIGINT drain; a second one exits at once.

        The handler takes no lock: it runs on the main thread between two bytecodes,
        possibly inside Event.wait() with that event's lock held, so even Event.set()
        could deadlock there. It writes a byte to a pipe; a relay thread does the rest.
        """
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return lambda: None
        signals = (signal.SIGTERM, signal.SIGINT)
        previous = {s: signal.getsignal(s) for s in signals}
        read_fd, write_fd = os.pipe()
        received: list[int] = []

        def on_signal(signum: int, _: Any) -> None:
            if received:
                os.write(2, b"onceq: second signal: exiting now; held leases will be rescued\n")
                os._exit(128 + signum)
            received.append(signum)
            os.write(write_fd, b"s")

        def relay() -> None:
            if os.read(read_fd, 1) and received:  # b"": closed, the worker is done
                logs.event(log, logging.INFO, "worker.draining", worker=self.name,
                           signal=signal.Signals(received[0]).name)  # fmt: skip
                self.stop()
            os.close(read_fd)

        threading.Thread(target=relay, name="onceq-signals", daemon=True).start()
        for s in signals:
            signal.signal(s, on_signal)

        def restore() -> None:
            for s, handler in previous.items():
                signal.signal(s, handler)
            os.close(write_fd)

        return restore

    def _finished(self) -> bool:
        with self._lock:
            busy = bool(self._running)
        if busy or self._unflushed or not self._outcomes.empty():
            return False
        return not self.store.job_pending_exists(self.queues)

    # -- one pass ------------------------------------------------------------------

    def run_once(self) -> int:
        """One dispatcher pass: record failures, give up on timed-out thread handlers,
        rescue expired leases when due, then record successes and claim for the slots
        that frees in one transaction, and hand the claimed jobs to executors. Returns
        how many jobs it claimed."""
        self._collect()
        self._record_failures()
        now = time.monotonic()
        self._expire_timeouts(now)
        # Before any rescue: a lease of ours that this rescue could take back must have
        # been given up here first (our deadline counts from when the last heartbeat that
        # got through was sent, never later than the database's).
        self._fence_stale(now)
        if now >= self._next_rescue:
            self._next_rescue = now + self.rescue_interval
            self.store.job_rescue()
        successes = [o for o in self._unflushed if o.error is None]
        with self._lock:
            freed = sum(1 for o in successes if self._running.get(o.run.key) is o.run)
            free = self.concurrency - len(self._running) + freed
        if self._draining or self._stop.is_set():
            free = 0
        if successes:
            leases = self._record_successes(successes, free)
        elif free > 0 and (not self._idle or self.store.job_claimable(self.queues)):
            leases = self.store.job_claim(self.name, self.queues, free, self.lease)
        else:
            return 0
        self._idle = not leases
        for lease in leases:  # already `running` in the store: safe to hand over
            self._start(lease)
        return len(leases)

    def _wait(self) -> None:
        timeout = self.poll_interval
        with self._lock:
            deadlines = [r.deadline for r in self._running.values() if r.deadline]
            free = self.concurrency - len(self._running)
        if deadlines:
            timeout = max(0.0, min(timeout, min(deadlines) - time.monotonic()))
        timeout = max(0.0, min(timeout, self._next_rescue - time.monotonic()))
        if free > 0 and self._waker is not None:
            self._waker.wait(self._wake, timeout)  # new work, or a result
        else:
            self._wake.wait(timeout)  # only a result can free a slot
        self._wake.clear()

    # -- starting jobs -------------------------------------------------------------

    def _start(self, lease: Lease) -> None:
        task = self.app.tasks.get(lease.task)
        ctx = JobContext(
            job_id=lease.job_id, task=lease.task, attempt=lease.attempts,
            max_attempts=lease.max_attempts, worker=self.name, token=lease.token,
            run_id=lease.run_id, step=lease.step, item=lease.item,
        )  # fmt: skip
        run = _Running(lease, ctx, task)
        with self._lock:
            self._running[run.key] = run
        self.counts["claimed"] += 1
        logs.event(log, logging.INFO, "job.started", job=lease.job_id, task=lease.task,
                   attempt=f"{lease.attempts}/{lease.max_attempts}", worker=self.name)  # fmt: skip
        if task is None:
            error = UnknownTask(f"unknown task {lease.task!r}: this worker's app has no such task")
            self._report(_Outcome(run, error=error))
        elif task.is_async:
            if self._loop is None:
                self._loop = LoopThread(f"onceq-loop-{self.name}")
            self._loop.submit(self._run_async(run, task))
        else:
            assert self._threads is not None
            run.item = self._threads.submit(lambda item: self._run_sync(run, task, item))

    def _run_sync(self, run: _Running, task: Task, item: PoolItem) -> None:
        if task.timeout is not None and not task.subprocess:
            run.deadline = time.monotonic() + task.timeout
        token = _current.set(run.ctx)
        try:
            if task.subprocess:
                result = run_in_subprocess(task.fn, run.lease.args, task.timeout, run.ctx)
            else:
                value = task.fn(**task.load(run.lease.args))
                result = jsoncodec.dumps(value, f"result of {task.name}")
            outcome = _Outcome(run, result=result)
        except BaseException as exc:
            outcome = _Outcome(run, error=exc, traceback=traceback.format_exc())
        finally:
            _current.reset(token)
        outcome.late = not item.finish()
        self._report(outcome)

    async def _run_async(self, run: _Running, task: Task) -> None:
        run.aio = asyncio.current_task()
        token = _current.set(run.ctx)
        try:
            if run.ctx.should_stop():  # lost before it started: _lose saw no task
                raise asyncio.CancelledError
            coro = task.fn(**task.load(run.lease.args))
            value = await asyncio.wait_for(coro, task.timeout)
            outcome = _Outcome(run, result=jsoncodec.dumps(value, f"result of {task.name}"))
        except TimeoutError:
            error = JobTimeout(f"timed out after {task.timeout}s: the coroutine was cancelled")
            outcome = _Outcome(run, error=error, traceback=traceback.format_exc())
        except asyncio.CancelledError:
            outcome = _Outcome(run, error=LeaseLost("lease lost: the coroutine was cancelled"))
        except BaseException as exc:
            outcome = _Outcome(run, error=exc, traceback=traceback.format_exc())
        finally:
            _current.reset(token)
        self._report(outcome)

    def _report(self, outcome: _Outcome) -> None:
        self._outcomes.put(outcome)
        self._wake.set()

    def _expire_timeouts(self, now: float) -> None:
        """Thread handlers cannot be stopped: past their timeout the worker records the
        failure, frees the slot, replaces the thread and tells the handler (should_stop).
        The handler may run on while the retry starts elsewhere; its late result will be
        refused. (Use subprocess=True for a timeout that kills.)"""
        with self._lock:
            overdue = [r for r in self._running.values() if r.deadline and r.deadline <= now]
        for run in overdue:
            run.deadline = None
            assert self._threads is not None and run.item is not None
            if self._threads.abandon(run.item):
                run.ctx.lost = True
                timeout = run.task.timeout if run.task else None
                error = JobTimeout(f"timed out after {timeout}s: the thread was abandoned")
                self._report(_Outcome(run, error=error))

    # -- recording outcomes --------------------------------------------------------

    def _collect(self) -> None:
        while True:
            try:
                self._unflushed.append(self._outcomes.get_nowait())
            except queue.Empty:
                return

    def _flush(self) -> None:
        """Write every outcome that arrived, claiming nothing (for the drain)."""
        self._collect()
        self._record_failures()
        successes = [o for o in self._unflushed if o.error is None]
        if successes:
            self._record_successes(successes, 0)

    def _record_failures(self) -> None:
        """Failures first, one transaction each (they are few, and some advance runs)."""
        for outcome in [o for o in self._unflushed if o.error is not None]:
            self._guarded(outcome, lambda o=outcome: self._record_failure(o))  # type: ignore[misc]

    def _record_successes(self, outcomes: list[_Outcome], claim: int) -> list[Lease]:
        """One transaction: the results, then a claim for `claim` slots. If the batch
        cannot be written for a reason other than an unreachable database, each outcome
        is written on its own, so that one bad outcome cannot hold up the others."""
        for o in outcomes:
            o.run.recording = True
        items = [(o.run.lease, o.result or "null") for o in outcomes]
        try:
            done, leases = self.store.job_complete_and_claim(
                items, self.name, self.queues, claim, self.lease
            )
        except StoreUnavailable:
            for o in outcomes:
                o.retried += 1
            raise
        except Exception as exc:
            log.error("a batch of %d results could not be written (%s: %s); writing them "
                      "one by one", len(outcomes), type(exc).__name__, exc)  # fmt: skip
            for o in outcomes:
                self._guarded(o, lambda o=o: self._record_success(o))  # type: ignore[misc]
            return []
        written = {id(o) for o in outcomes}  # one pass, not a list.remove per outcome
        self._unflushed = [o for o in self._unflushed if id(o) not in written]
        for o in outcomes:
            recorded = o.run.lease.job_id in done or self._committed_before(o, "succeeded")
            self._finish(o, "succeeded" if recorded else None)
        return leases

    def _record_success(self, outcome: _Outcome) -> None:
        done = self.store.job_complete_many([(outcome.run.lease, outcome.result or "null")])
        recorded = outcome.run.lease.job_id in done or self._committed_before(outcome, "succeeded")
        self._finish(outcome, "succeeded" if recorded else None)

    def _guarded(self, outcome: _Outcome, write: Callable[[], None]) -> None:
        """Write one outcome. Unreachable database: keep it and re-raise (the pass fails,
        the next one retries). Any other error: this outcome can never be written as it
        is, so record the job as failed, saying why; failing that, drop it (the lease will
        expire and a rescue will retry the job)."""
        outcome.run.recording = True
        try:
            write()
        except StoreUnavailable:
            outcome.retried += 1
            raise
        except Exception as exc:
            why = f"OutcomeError: the outcome could not be recorded: {type(exc).__name__}: {exc}"
            log.error("job %s: %s", outcome.run.lease.job_id, clean(why))
            try:
                status = self.store.job_fail(Failure(outcome.run.lease, clean(why)))
                self._finish(outcome, status, error=why)
            except StoreUnavailable:
                outcome.retried += 1
                raise
            except Exception as again:
                log.error("job %s: dropping its outcome (%s); its lease will expire",
                          outcome.run.lease.job_id, again)  # fmt: skip
                self._finish(outcome, None)
        self._unflushed.remove(outcome)

    def _record_failure(self, outcome: _Outcome) -> None:
        run, exc = outcome.run, outcome.error
        assert exc is not None
        task = run.task
        retry_in = None
        if task is not None and task.retry.retries_on(exc) and not isinstance(exc, UnknownTask):
            retry_in = task.retry.delay(run.lease.attempts)
        if isinstance(exc, PayloadError):
            retry_in = None
        error = clean(f"{type(exc).__name__}: {exc}")
        tb = outcome.traceback
        child_tb = getattr(exc, "child_traceback", None)
        if child_tb:
            tb = f"{tb or ''}\nIn the subprocess:\n{child_tb}"
        status = self.store.job_fail(Failure(run.lease, error, tb and clean(tb), retry_in))
        if status is None and self._committed_before(outcome, "failed", "pending"):
            status = self.store.job_get(run.lease.job_id).status
        self._finish(outcome, status, error=error)

    def _committed_before(self, outcome: _Outcome, *statuses: str) -> bool:
        """After a lost connection, a write that seems refused may have committed the
        first time (the commit's answer was lost): check the job itself."""
        if not outcome.retried:
            return False
        job = self.store.job_get(outcome.run.lease.job_id)
        if job.status == "pending":  # a retry: it is ours if no later claim happened
            return "pending" in statuses and job.lease_token == outcome.run.lease.token
        return job.status in statuses and job.lease_token == outcome.run.lease.token

    def _finish(self, outcome: _Outcome, status: str | None, error: str | None = None) -> None:
        run = outcome.run
        with self._lock:
            if self._running.get(run.key) is run and not outcome.late:
                del self._running[run.key]
        job, task = run.lease.job_id, run.lease.task
        if status is None:
            self.counts["rejected"] += 1
            logs.event(log, logging.WARNING, "job.result_rejected", job=job, task=task,
                       token=run.lease.token, reason="lease no longer held",
                       late=outcome.late, worker=self.name)  # fmt: skip
        elif status == "succeeded":
            self.counts["succeeded"] += 1
            logs.event(log, logging.INFO, "job.succeeded", job=job, task=task,
                       seconds=f"{time.monotonic() - run.started:.3f}")  # fmt: skip
        else:
            self.counts["failed"] += 1
            event = "job.retrying" if status == "pending" else "job.failed"
            logs.event(
                log,
                logging.WARNING,
                event,
                job=job,
                task=task,
                attempt=f"{run.lease.attempts}/{run.lease.max_attempts}",
                error=error,
            )

    # -- leases --------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self._heartbeat_stop.wait(self.heartbeat_interval):
            try:
                self.heartbeat_once()
            except Exception as exc:
                log.warning("heartbeat failed (%s: %s)", type(exc).__name__, exc)
            self._fence_stale(time.monotonic())

    def heartbeat_once(self) -> set[LeaseKey]:
        """Extend every held lease in one statement; tell the handlers of lost ones."""
        with self._lock:
            runs = [r for r in self._running.values() if not r.ctx.lost]
        if not runs:
            return set()
        sent = time.monotonic()
        kept = self.store.job_heartbeat([r.lease for r in runs], self.lease)
        for run in runs:
            if run.key in kept:
                run.renewed = sent
                continue
            with self._lock:
                still_ours = self._running.get(run.key) is run
            if still_ours and not run.recording:  # not merely finished meanwhile
                self._lose(run, "the store no longer has this lease")
        return kept

    def _fence_stale(self, now: float) -> None:
        """A lease not renewed for its whole length may have been rescued and re-claimed
        by now: tell its handler, whether or not the database can say so."""
        with self._lock:
            stale = [
                r
                for r in self._running.values()
                if not r.ctx.lost and not r.recording and now - r.renewed > self.lease
            ]
        for run in stale:
            self._lose(run, f"no heartbeat got through for {self.lease:g}s")

    def _lose(self, run: _Running, why: str) -> None:
        with self._lock:  # the heartbeat and the dispatcher may both find it: tell once
            if run.ctx.lost:
                return
            run.ctx.lost = True
        if run.aio is not None and self._loop is not None:
            self._loop.cancel(run.aio)
        logs.event(
            log,
            logging.WARNING,
            "job.lease_lost",
            job=run.lease.job_id,
            task=run.lease.task,
            token=run.lease.token,
            worker=self.name,
            why=why,
        )

    # -- shutdown ------------------------------------------------------------------

    def close(self) -> None:
        """Drain: release unstarted jobs, let running ones finish within the grace
        period, record their outcomes, stop the threads (run() does this)."""
        self._draining = True
        self._release_unstarted()
        deadline = time.monotonic() + self.grace
        while True:
            try:
                self._flush()
            except Exception as exc:
                log.error("could not record outcomes while draining (%s)", exc)
                self._stop.wait(0.2)
            with self._lock:
                left = len(self._running)
            if not left and not self._unflushed:
                break
            if time.monotonic() >= deadline:
                logs.event(log, logging.WARNING, "worker.grace_expired", worker=self.name,
                           still_running=left)  # fmt: skip
                break
            self._wake.wait(0.05)
            self._wake.clear()
        self._stop.set()
        self._heartbeat_stop.set()
        if self._waker is not None:
            self._waker.close()
        if self._threads is not None:
            self._threads.shutdown()
        if self._loop is not None:
            self._loop.stop()

    def _release_unstarted(self) -> None:
        """Jobs claimed but not yet started go back to pending, attempt given back."""
        if self._threads is None:
            return
        with self._lock:
            queued = [r for r in self._running.values() if r.item is not None]
        unstarted = [r for r in queued if self._threads.take_back(r.item)]  # type: ignore[arg-type]
        if not unstarted:
            return
        try:
            released = self.store.job_release_many([r.lease for r in unstarted])
        except Exception as exc:
            log.error("could not release %d unstarted jobs (%s); their leases will expire",
                      len(unstarted), exc)  # fmt: skip
            released = set()
        with self._lock:
            for run in unstarted:
                self._running.pop(run.key, None)
        self.counts["released"] += len(released)
        for run in unstarted:
            logs.event(log, logging.INFO, "job.released", job=run.lease.job_id,
                       task=run.lease.task, worker=self.name)  # fmt: skip
