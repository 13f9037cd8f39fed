"""The worker: claims jobs for its free slots, runs them, records their outcomes.

Four services of one shape, each with a `run_once(now)` that tests call directly and a
thin ticker around it: the dispatcher (this module; `run_once` is one pass of its loop),
the heartbeat and the lease keeper (leases.py, on threads of their own), and the
rescuer (rescuer.py, run by the dispatcher). Handlers run on pool threads, an event
loop, or child processes (executors.py).

The order that makes bug 3 of SPEC.md impossible: a pass claims at most as many jobs as
there are free slots, and the claim has moved them to `running` in the store (committed)
before any of them is handed to an executor. A later pass cannot see them as pending.

What is guaranteed, precisely: a job runs again only when its lease was lost (its worker
died or stalled past the lease and a rescue took the job back), up to its attempts;
otherwise exactly once — lost answers from the database included: a claim whose answer
was lost is found again (`job_adopt`) and run, and outcomes whose answer was lost are
sent again and answered "already recorded". A worker that lost a lease is told
(`current_job().should_stop()`, async handlers cancelled, subprocesses killed) at the
next heartbeat, or by its lease keeper half a heartbeat before the lease could expire,
whether or not the database can be reached; and the store refuses whatever it records
for that attempt.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from onceq import logs
from onceq.context import JobContext, _current
from onceq.errors import JobTimeout, LeaseLost, OutcomeUnknown, UnknownTask
from onceq.models import Lease
from onceq.schedule.periodic import Scheduler
from onceq.schedule.retention import PRUNE_EVERY, Pruner
from onceq.schedule.ticker import Service, Ticker, WallClock
from onceq.schedule.upkeep import Checkpointer
from onceq.store import jsoncodec
from onceq.store.base import new_claim
from onceq.store.urls import redact
from onceq.store.wakeup import Waker
from onceq.version import __version__
from onceq.worker import signals
from onceq.worker.executors import LoopThread, PoolItem, ThreadPool, run_in_subprocess
from onceq.worker.leases import Heartbeat, Held, LeaseKeeper, LeaseKey, Leases
from onceq.worker.outcomes import Outcome, Recorder
from onceq.worker.presence import Presence
from onceq.worker.rescuer import Rescuer

if TYPE_CHECKING:
    from onceq.app import App
    from onceq.task import Task

log = logging.getLogger("onceq.worker")
__all__ = ["Worker", "default_name"]
MIN_STATEMENT_TIME = 1.0  # a worker with a shorter lease still lets a statement run this long
READY_WAIT = 10.0  # seconds run(ready=…) waits for the wake-ups before it says ready anyway


def default_name() -> str:
    """host:pid:random — unique per worker, readable in `onceq jobs`."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """Runs an app's jobs with `concurrency` slots.

    `lease` is how long a claim stays valid without a heartbeat; heartbeats come every
    `lease / 3` (never closer to the lease: a late heartbeat would let a live job be
    rescued), and a lease not renewed for `lease - lease / 6` is given up by the worker
    itself. Every `rescue_interval` the worker also rescues jobs whose lease expired,
    wherever they ran: any number of workers may do so at once. On SIGTERM or SIGINT
    (when run in the main thread), it stops claiming, releases jobs it claimed but did
    not start, lets running ones finish within `grace` seconds, and returns; a second
    signal exits at once. On a thread of its own it takes its turn at the store-wide
    duties (schedule/): retention passes (one worker at a time, due every `prune_every`
    seconds, when the app has a `retention`), the app's periodic tasks' ticks, and the
    SQLite WAL's checkpoints.
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
        prune_every: float = PRUNE_EVERY,
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
        self.poll_interval = poll_interval or (0.5 if self.store.dialect == "sqlite" else 1.0)
        self.grace = grace
        self.handle_signals = handle_signals

        self.leases = Leases()
        self.heartbeat = Heartbeat(self.store, self.leases, lease, self._lose)
        self.heartbeat_interval = self.heartbeat.interval
        self.keeper = LeaseKeeper(self.leases, lease, self.heartbeat_interval / 2, self._give_up)
        self.rescuer = Rescuer(self.store, rescue_interval or min(max(lease / 4, 0.25), 5.0))
        # Claims take keyed jobs (each with a slot of its key) only where the app has
        # tasks with a concurrency limit: other workers' claims stay as they were.
        self.keyed = any(t.concurrency is not None for t in app.tasks.values())
        self.presence = Presence(self.store, self.name, self.queues, concurrency,
                                 self.heartbeat_interval)  # fmt: skip
        # Duties besides running jobs, on a thread of their own (schedule/).
        services: list[Service] = []
        if app.periodics:
            services.append(WallClock(Scheduler(self.store, list(app.periodics.values()))))
        if app.retention is not None:
            services.append(Pruner(self.store, self.name, app.retention, every=prune_every))
        services.append(Checkpointer(self.store, lambda: self._idle and not len(self.leases)))
        self.ticker = Ticker(services, f"onceq-ticker-{self.name}")
        self.recorder = Recorder(self)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._services_stop = threading.Event()  # later than _stop: drains need leases too
        self._draining = False
        self._idle = False
        self._unconfirmed: list[int] = []  # claims whose answer was lost, by number
        self._to_release: list[Lease] = []  # to hand back, until the store has answered
        self._ended: list[int] = []  # jobs that ended since the last pass (for waiters)
        self._threads: ThreadPool | None = None
        self._loop: LoopThread | None = None
        self._waker: Waker | None = None
        self._services: list[threading.Thread] = []
        self.counts = {"claimed": 0, "succeeded": 0, "failed": 0, "rejected": 0, "released": 0,
                       "adopted": 0}  # fmt: skip

    # -- lifecycle -----------------------------------------------------------------

    def run(self, *, burst: bool = False, ready: Callable[[], object] | None = None) -> None:
        """Work until stopped; with `burst`, return once no job of its queues is left.
        `ready` is called once the worker is about to claim: registered, its services
        started, and new work would wake it at once (a harness that starts workers and
        then measures waits for this, not for the process to exist)."""
        self.open()
        restore = self._install_signals()
        tasks = ",".join(sorted(self.app.tasks)) or "(none)"
        logs.event(log, logging.INFO, "worker.started", worker=self.name,
                   store=redact(self.store.url), version=__version__,
                   concurrency=self.concurrency, queues=",".join(self.queues or ["*"]),
                   tasks=tasks)  # fmt: skip
        try:
            if ready is not None:  # (a SIGTERM from here on drains; a failure closes)
                assert self._waker is not None
                self._waker.ready(READY_WAIT)
                ready()
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
                if not claimed or len(self.leases) >= self.concurrency:
                    self._wait()  # (a full worker has nothing to do before a result)
        finally:
            self.close()
            restore()
            logs.event(log, logging.INFO, "worker.stopped", worker=self.name, **self.counts)

    def stop(self) -> None:
        """Ask the worker to drain and return (thread-safe)."""
        self._stop.set()
        self._wake.set()

    def open(self) -> None:
        """Start the executors, the heartbeat, the lease keeper and the wake-ups (run()
        does this)."""
        logs.attach_job_context()  # the job on every record its handlers log
        self._threads = ThreadPool(self.concurrency, f"onceq-{self.name}")
        self._waker = self.store.waker(self._wake)
        self.store.limit_statement_time(max(self.keeper.after, MIN_STATEMENT_TIME))
        self.presence.open()
        beats = (self._services_stop, self.presence.run_once)
        for name, loop, args in (
            ("heartbeat", self.heartbeat.loop, beats),
            ("leases", self.keeper.loop, (self._services_stop,)),
        ):
            thread = threading.Thread(target=loop, args=args, name=f"onceq-{name}",
                                      daemon=True)  # fmt: skip
            thread.start()
            self._services.append(thread)
        self.ticker.start()

    def _install_signals(self) -> Callable[[], object]:
        """SIGTERM/SIGINT drain; a second one exits at once (see signals.install)."""
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return lambda: None
        return signals.install(self.name, self.stop)

    def _finished(self) -> bool:
        if len(self.leases) or self.recorder.pending or self._unconfirmed or self._to_release:
            return False
        return not self.store.job_pending_exists(self.queues)

    # -- one pass ------------------------------------------------------------------

    def run_once(self, now: float | None = None) -> int:
        """One dispatcher pass: record failures, give up on timed-out thread handlers and
        stale leases, rescue expired leases when due, find what a claim whose answer was
        lost took, then record successes and claim for the slots that frees in one
        transaction, and hand the claimed jobs to executors. Returns how many jobs it
        claimed (or adopted)."""
        now = time.monotonic() if now is None else now
        self.recorder.collect()
        self.recorder.give_up()
        self.recorder.write_failures()
        self._notify_waiters()
        self._expire_timeouts(now)
        self.keeper.run_once(now)  # before any rescue: see Rescuer
        try:
            self.rescuer.run_once(now)
        except Exception as exc:  # a duty for others' jobs: it holds up none of ours
            log.warning("rescue failed (%s: %s); trying again in %.2fs",
                        type(exc).__name__, exc, self.rescuer.interval)  # fmt: skip
        started = self._adopt() if self._unconfirmed else 0
        if self._to_release:
            self._release(self._to_release)
        successes = self.recorder.successes()
        freed = sum(1 for o in successes if self.leases.holds(o.held))
        free = self.concurrency - len(self.leases) + freed
        if self._draining or self._stop.is_set():
            free = 0
        sent = time.monotonic()  # a lease is sure from no later than this
        claim = new_claim()
        try:
            if successes:
                leases = self.recorder.write_successes(successes, free, claim)
            elif free > 0 and (not self._idle or self.store.job_claimable(self.queues)):
                leases = self.store.job_claim(self.name, self.queues, free, self.lease,
                                              claim=claim, keyed=self.keyed)  # fmt: skip
            else:
                return started
        except OutcomeUnknown:
            if free > 0:  # it claimed, or not: job_adopt will tell
                self._unconfirmed.append(claim)
            raise
        self._idle = not leases
        self._notify_waiters()
        if leases and (self._draining or self._stop.is_set()):  # told to stop meanwhile
            self._release(leases)
            return started
        for lease in leases:  # already `running` in the store: safe to hand over
            self._start(lease, sent)
        return started + len(leases)

    def _notify_waiters(self) -> None:
        """Wake whoever announced waiting for a job this worker just ended (PostgreSQL:
        a NOTIFY of its own, only for those jobs; nothing when nobody waits)."""
        ended, self._ended = self._ended, []
        awaited = self._waker.take_awaited(ended) if self._waker and ended else []
        if awaited:
            try:
                self.store.job_done_notify(awaited)
            except Exception as exc:  # the waiters re-read their job by themselves too
                log.info("could not notify the waiters of %d job(s) (%s)", len(awaited), exc)

    def _adopt(self) -> int:
        """A claim's answer was lost: take on what it claimed (or hand it back, when
        draining). The store settled that claim's transaction before answering this."""
        sent = time.monotonic()
        found = self.store.job_adopt(self.name, self._unconfirmed, self.lease)
        self._unconfirmed = []
        for lease in found:
            logs.event(log, logging.WARNING, "job.adopted", job=lease.job_id, task=lease.task,
                       token=lease.token, worker=self.name)  # fmt: skip
        self.counts["adopted"] += len(found)
        if self._draining or self._stop.is_set():
            self._release(found)
            return 0
        for lease in found:
            self._start(lease, sent)
        return len(found)

    def _wait(self) -> None:
        timeout = self.poll_interval
        deadlines = [h.deadline for h in self.leases.snapshot() if h.deadline]
        if deadlines:
            timeout = max(0.0, min(timeout, min(deadlines) - time.monotonic()))
        timeout = max(0.0, min(timeout, self.rescuer.due - time.monotonic()))
        if self.concurrency > len(self.leases) and self._waker is not None:
            self._waker.wait(self._wake, timeout)  # new work, or a result
        else:
            self._wake.wait(timeout)  # only a result can free a slot
        self._wake.clear()
        if len(self.leases) > 1:
            # Woken by a result: handlers ending at the same moment report too before
            # the pass (short jobs end together; one write for them, not one each).
            time.sleep(0)

    # -- starting jobs -------------------------------------------------------------

    def _start(self, lease: Lease, sent: float) -> None:
        task = self.app.tasks.get(lease.task)
        ctx = JobContext(
            job_id=lease.job_id, task=lease.task, attempt=lease.attempts,
            max_attempts=lease.max_attempts, worker=self.name, token=lease.token,
            run_id=lease.run_id, step=lease.step, item=lease.item,
        )  # fmt: skip
        if time.monotonic() >= sent + self.keeper.after:
            # The claim took so long to answer that the lease may be gone already: do not
            # start a handler on it. Hand it back if it is still ours.
            log.warning("job %s: its lease was not sure any more when the claim answered; "
                        "handing it back", lease.job_id)  # fmt: skip
            self._release([lease])
            return
        held = Held(lease, ctx, task, renewed=sent)
        self.leases.add(held)
        self.counts["claimed"] += 1
        if log.isEnabledFor(logging.INFO):  # (its fields cost more than the check)
            attempt = f"{lease.attempts}/{lease.max_attempts}"
            logs.event(log, logging.INFO, "job.started", job=lease.job_id, task=lease.task,
                       attempt=attempt, worker=self.name)  # fmt: skip
        if task is None:
            error = UnknownTask(f"unknown task {lease.task!r}: this worker's app has no such task")
            self.recorder.report(Outcome(held, error=error))
        elif task.is_async:
            if self._loop is None:
                self._loop = LoopThread(f"onceq-loop-{self.name}")
            self._loop.submit(self._run_async(held, task))
        else:
            assert self._threads is not None
            held.item = self._threads.submit(lambda item: self._run_sync(held, task, item))

    def _run_sync(self, held: Held, task: Task[..., Any], item: PoolItem) -> None:
        if task.timeout is not None and not task.subprocess:
            held.deadline = time.monotonic() + task.timeout
        token = _current.set(held.ctx)
        try:
            if task.subprocess:
                result = run_in_subprocess(task.fn, held.lease.args, task.timeout, held.ctx)
            else:
                result = task.dump_result(task.fn(**task.load(held.lease.args)))
            outcome = Outcome(held, result=self._bounded(task, result))
        except BaseException as exc:
            outcome = Outcome(held, error=exc, traceback=traceback.format_exc())
        finally:
            _current.reset(token)
        outcome.late = not item.finish()
        self.recorder.report(outcome)

    async def _run_async(self, held: Held, task: Task[..., Any]) -> None:
        held.aio = asyncio.current_task()
        token = _current.set(held.ctx)
        try:
            if held.ctx.should_stop():  # lost before it started: _lose saw no task
                raise asyncio.CancelledError
            coro = task.fn(**task.load(held.lease.args))
            value = await asyncio.wait_for(coro, task.timeout)
            outcome = Outcome(held, result=self._bounded(task, task.dump_result(value)))
        except TimeoutError:
            error = JobTimeout(f"timed out after {task.timeout}s: the coroutine was cancelled")
            outcome = Outcome(held, error=error, traceback=traceback.format_exc())
        except asyncio.CancelledError:
            outcome = Outcome(held, error=LeaseLost("lease lost: the coroutine was cancelled"))
        except BaseException as exc:
            outcome = Outcome(held, error=exc, traceback=traceback.format_exc())
        finally:
            _current.reset(token)
        self.recorder.report(outcome)

    def _bounded(self, task: Task[..., Any], result: str) -> str:
        """A result's JSON text, or PayloadError when it is over the app's max_payload
        (the job fails instead of storing it)."""
        jsoncodec.check_size(len(result.encode("utf-8")), f"result of {task.name}",
                             self.store.max_payload)  # fmt: skip
        return result

    def _expire_timeouts(self, now: float) -> None:
        """Thread handlers cannot be stopped: past their timeout the worker records the
        failure, frees the slot, replaces the thread and tells the handler (should_stop).
        The handler may run on while the retry starts elsewhere; its late result will be
        refused. (Use subprocess=True for a timeout that kills.)"""
        overdue = [h for h in self.leases.snapshot() if h.deadline and h.deadline <= now]
        for held in overdue:
            held.deadline = None
            assert self._threads is not None and held.item is not None
            if self._threads.abandon(held.item):
                held.ctx.lost = True
                timeout = held.task.timeout if held.task else None
                error = JobTimeout(f"timed out after {timeout}s: the thread was abandoned")
                self.recorder.report(Outcome(held, error=error))

    # -- outcomes ------------------------------------------------------------------

    def _finish(self, outcome: Outcome, status: str | None, error: str | None = None) -> None:
        """An outcome's write is answered: free its slot, count it, say so. Reads and
        writes nothing, so it cannot fail between the store's answer and the slot."""
        held = outcome.held
        if not outcome.late:
            self.leases.drop(held)
        job, task = held.lease.job_id, held.lease.task
        if status is None:
            self.counts["rejected"] += 1
            logs.event(log, logging.WARNING, "job.result_rejected", job=job, task=task,
                       token=held.lease.token, reason="lease no longer held", late=outcome.late,
                       worker=self.name)  # fmt: skip
        elif status == "succeeded":
            self._ended.append(job)
            self.counts["succeeded"] += 1
            if log.isEnabledFor(logging.INFO):
                logs.event(log, logging.INFO, "job.succeeded", job=job, task=task,
                           seconds=f"{time.monotonic() - held.started:.3f}")  # fmt: skip
        else:
            self.counts["failed"] += 1
            if status != "pending":
                self._ended.append(job)
            event = "job.retrying" if status == "pending" else "job.failed"
            logs.event(log, logging.WARNING if status == "pending" else logging.ERROR, event,
                       job=job, task=task,
                       attempt=f"{held.lease.attempts}/{held.lease.max_attempts}",
                       error=error, traceback=outcome.traceback)  # fmt: skip

    # -- leases --------------------------------------------------------------------

    def heartbeat_once(self) -> set[LeaseKey]:
        """Extend every held lease in one statement; tell the handlers of lost ones."""
        return self.heartbeat.run_once()

    def _give_up(self, held: Held, why: str) -> None:
        """The keeper's verdict: this worker cannot be sure of the lease any more."""
        held.given_up = True
        self._lose(held, why)

    def _lose(self, held: Held, why: str) -> None:
        if not self.leases.mark_lost(held):
            return
        if held.aio is not None and self._loop is not None:
            self._loop.cancel(held.aio)
        logs.event(log, logging.WARNING, "job.lease_lost", job=held.lease.job_id,
                   task=held.lease.task, token=held.lease.token, worker=self.name,
                   why=why)  # fmt: skip

    def _release(self, leases: Sequence[Lease]) -> None:
        """Hand leases back (pending again, attempt given back), until the store has
        answered: an answer lost on the way is sent again, and answered the same."""
        self._to_release += [x for x in leases if x not in self._to_release]
        try:
            released = self.store.job_release_many(list(self._to_release))
        except Exception as exc:
            log.error("could not hand back %d jobs yet (%s)", len(self._to_release), exc)
            return
        for lease in self._to_release:
            if (lease.job_id, lease.token) in released:
                self.counts["released"] += 1
                logs.event(log, logging.INFO, "job.released", job=lease.job_id,
                           task=lease.task, worker=self.name)  # fmt: skip
        self._to_release = []

    # -- shutdown ------------------------------------------------------------------

    def close(self) -> None:
        """Drain: release unstarted jobs, let running ones finish within the grace
        period, record their outcomes, stop the threads (run() does this)."""
        self._draining = True
        self.ticker.stop()
        self._release_unstarted()
        deadline = time.monotonic() + self.grace
        while True:
            try:
                if self._unconfirmed:
                    self._adopt()  # draining: whatever it finds is handed back
                if self._to_release:
                    self._release(self._to_release)
                self.recorder.flush()
                self._notify_waiters()
            except Exception as exc:
                log.error("could not record outcomes while draining (%s)", exc)
                self._stop.wait(0.2)
            left = len(self.leases)
            unsure = self._unconfirmed or bool(self._to_release)
            if not left and not self.recorder.unwritten and not unsure:
                break
            if time.monotonic() >= deadline:
                logs.event(log, logging.WARNING, "worker.grace_expired", worker=self.name,
                           still_running=left)  # fmt: skip
                break
            self._wake.wait(0.05)
            self._wake.clear()
        self._stop.set()
        self._services_stop.set()
        self.presence.close()
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
        queued = [h for h in self.leases.snapshot() if h.item is not None]
        unstarted = [h for h in queued if self._threads.take_back(h.item)]  # type: ignore[arg-type]
        for held in unstarted:
            self.leases.drop(held)
        if unstarted:
            self._release([h.lease for h in unstarted])
