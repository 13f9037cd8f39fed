"""Writing handlers' outcomes to the store: never one lost, never one holding up others.

- The database unreachable (StoreUnavailable): the outcomes are kept and written by a
  later pass. Its answer lost while it committed (OutcomeUnknown): kept too, and sent
  again — the store answers "already recorded" for those that did commit, so a result
  is never refused for its own earlier sending, and never written twice.
- One outcome the database refuses (a result or an error it cannot store): the batch is
  written one by one, and that one is recorded as a failure saying why.
- The outcome of a lease this worker gave up itself (no heartbeat got through in time:
  its handler was told to stop) must not count, even if the store still holds the
  lease: the lease is first handed back as lost (`job_give_up`, like an expired one),
  and only then is the outcome sent — to be refused, and noted as such.
- Once the store has answered, the bookkeeping cannot fail: it reads nothing more, so
  a slot is always freed.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from onceq.errors import PayloadError, StoreUnavailable, UnknownTask
from onceq.models import Failure, JobStatus, Lease
from onceq.worker.leases import Held, LeaseKey

if TYPE_CHECKING:
    from onceq.worker.dispatcher import Worker

log = logging.getLogger("onceq.worker")


@dataclass(eq=False, slots=True)
class Outcome:
    """What a handler's attempt came to."""

    held: Held
    result: str | None = None  # JSON text, on success
    error: BaseException | None = None
    traceback: str | None = None
    late: bool = False  # the dispatcher already gave up on this attempt (timeout)


def clean(text: str) -> str:
    """Error text any database can store: no NUL, no lone surrogates (escaped instead)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


class Recorder:
    """The outcomes a worker's handlers reported, and their writing."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.store = worker.store
        self._arrived: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self.unwritten: list[Outcome] = []

    def report(self, outcome: Outcome) -> None:
        """From any thread: an attempt is over."""
        self._arrived.put(outcome)
        self.worker._wake.set()

    def collect(self) -> None:
        while True:
            try:
                self.unwritten.append(self._arrived.get_nowait())
            except queue.Empty:
                return

    @property
    def pending(self) -> bool:
        return bool(self.unwritten) or not self._arrived.empty()

    def successes(self) -> list[Outcome]:
        return [o for o in self.unwritten if o.error is None and o.held.writable]

    def flush(self) -> None:
        """Write every outcome that arrived, claiming nothing (for the drain)."""
        self.collect()
        self.give_up()
        self.write_failures()
        successes = self.successes()
        if successes:
            self.write_successes(successes, 0)

    def give_up(self) -> None:
        """Hand back, as lost, the leases of the outcomes that cannot count; then those
        outcomes go the way of any other (and are refused)."""
        held = {id(o.held): o.held for o in self.unwritten if not o.held.writable}
        if not held:
            return
        why = f"lease given up by {self.worker.name}: no heartbeat got through in time"
        self.store.job_give_up([h.lease for h in held.values()], why)  # kept if it raises
        for h in held.values():
            h.surrendered = True

    def write_failures(self) -> None:
        """Failures first, one transaction each (they are few, and some advance runs)."""
        for outcome in [o for o in self.unwritten if o.error is not None and o.held.writable]:
            self._guarded(outcome, lambda o=outcome: self._write_failure(o))  # type: ignore[misc]

    def write_successes(
        self, outcomes: list[Outcome], free: int, claim: int | None = None
    ) -> list[Lease]:
        """One transaction: the results, then a claim (numbered `claim`) for `free` slots.
        If the batch cannot be written for a reason other than an unreachable database,
        each outcome is written on its own, so that one bad outcome cannot hold up the
        others."""
        w = self.worker
        for o in outcomes:
            o.held.recording = True
        items = [(o.held.lease, o.result or "null") for o in outcomes]
        try:
            written, leases = self.store.job_complete_and_claim(
                items, w.name, w.queues, free, w.lease, claim=claim, keyed=w.keyed
            )
        except StoreUnavailable:
            raise  # kept: the next pass sends them again
        except Exception as exc:
            log.error("a batch of %d results could not be written (%s: %s); writing them "
                      "one by one", len(outcomes), type(exc).__name__, exc)  # fmt: skip
            for o in outcomes:
                self._guarded(o, lambda o=o: self._write_success(o))  # type: ignore[misc]
            return []
        done = {id(o) for o in outcomes}  # one pass, not a list.remove per outcome
        self.unwritten = [o for o in self.unwritten if id(o) not in done]
        for o in outcomes:
            w._finish(o, "succeeded" if o.held.key in written else None)
        return leases

    def _write_success(self, outcome: Outcome) -> JobStatus | None:
        written: set[LeaseKey] = self.store.job_complete_many(
            [(outcome.held.lease, outcome.result or "null")]
        )
        return "succeeded" if outcome.held.key in written else None

    def _write_failure(self, outcome: Outcome) -> JobStatus | None:
        held, exc = outcome.held, outcome.error
        assert exc is not None
        task = held.task
        retry_in = None
        if task is not None and task.retry.retries_on(exc) and not isinstance(exc, UnknownTask):
            retry_in = task.retry.delay(held.lease.attempts)
        if isinstance(exc, PayloadError):
            retry_in = None
        tb = outcome.traceback
        child_tb = getattr(exc, "child_traceback", None)
        if child_tb:
            tb = f"{tb or ''}\nIn the subprocess:\n{child_tb}"
        failure = Failure(held.lease, describe(exc), tb and clean(tb), retry_in)
        return self.store.job_fail(failure)

    def _guarded(self, outcome: Outcome, write: Callable[[], JobStatus | None]) -> None:
        """Write one outcome. Unreachable database: keep it and re-raise (the pass fails,
        the next one retries). Any other error: this outcome can never be written as it
        is, so record the job as failed, saying why; failing that, drop it (the lease will
        expire and a rescue will retry the job)."""
        outcome.held.recording = True
        error = describe(outcome.error) if outcome.error is not None else None
        try:
            status = write()
        except StoreUnavailable:
            raise
        except Exception as exc:
            error = f"OutcomeError: the outcome could not be recorded: {type(exc).__name__}: {exc}"
            log.error("job %s: %s", outcome.held.lease.job_id, clean(error))
            try:
                status = self.store.job_fail(Failure(outcome.held.lease, clean(error)))
            except StoreUnavailable:
                raise
            except Exception as again:
                log.error("job %s: its outcome cannot be written (%s); handing the lease "
                          "back as lost", outcome.held.lease.job_id, again)  # fmt: skip
                self._give_up_alone(outcome, clean(error))
                status = None
        self.unwritten.remove(outcome)
        self.worker._finish(outcome, status, error=error)

    def _give_up_alone(self, outcome: Outcome, why: str) -> None:
        """Neither the outcome nor a failure saying why could be written: the job goes
        back as a lost lease would (an attempt spent); failing even that, the lease is
        left to expire."""
        try:
            self.store.job_give_up([outcome.held.lease], why)
        except StoreUnavailable:
            raise
        except Exception as exc:
            log.error("job %s: dropping its outcome (%s); its lease will expire",
                      outcome.held.lease.job_id, exc)  # fmt: skip


def describe(exc: BaseException) -> str:
    """An error as the one line stored with its job."""
    return clean(f"{type(exc).__name__}: {exc}")
