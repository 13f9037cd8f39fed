"""Every status change of a job passes here, in the transaction that makes it.

A status-changing statement (claim, complete, fail, release, rescue, cancel, a run's
end, a row no worker can read…) returns the rows it changed — id, token, new status,
run, step, item — and `Transitions._transition` does every follow-up, the same way for
all of them:

1. the attempt history: the attempt ends with its outcome (its record is written then,
   once); a write refused because its lease is stale is noted as `rejected`; a write
   sent again under a lease whose attempt already ended that way (the first answer was
   lost) is "already recorded", not stale;
2. a workflow job sent back to pending whose run has ended is cancelled instead;
3. a workflow job that reached a final status advances its run in the same transaction
   (the fan-in guarantee depends on it) — each run on its own, under a savepoint: a run
   that cannot be advanced ends `failed` with the error, and the rest of the transaction
   (other jobs, other runs) is recorded all the same;
4. rare events counted for the dashboard and /metrics (store/stats.py): a lease lost
   (rescued, or given up by its worker), a rescue, a stale write refused — never a write
   per job on the workers' usual path;
5. notes, logged once the transaction has committed (and never for one rolled back).

Lock order, everywhere: job rows first, then a run's row.

The workflow engine is not imported here: it registers itself (`set_run_engine`) and
the store knows only the RunEngine protocol.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from onceq import faults
from onceq.errors import ConfigError, StoreUnavailable
from onceq.models import FINISHED, JobStatus
from onceq.store import stats
from onceq.store.tx import LeaseKey, Row, Tx, note


@dataclass(frozen=True, slots=True)
class Op:
    """What kind of write changed a job's status, and which follow-ups it takes."""

    name: str
    outcome: str | None = None  # the attempt outcome it records, if one for all its rows
    replays: frozenset[str] = frozenset()  # attempt outcomes: this write was recorded already
    advances: bool = False  # a final status it sets advances the job's workflow run
    requeues: bool = False  # it may send workflow jobs back to pending
    attempts: bool = False  # it ends (or, for a claim, starts) attempt records
    same_error: bool = False  # a replay also carries the error the attempt ended with
    # On the hot path (a batch per worker cycle): Change records only for workflow jobs,
    # which have follow-ups; plain jobs are answered by their lease keys alone.
    batch: bool = False


CLAIM = Op("claim", attempts=True, batch=True)
HEARTBEAT = Op("heartbeat", attempts=True, batch=True)  # no status change: stale ones noted
COMPLETE = Op("complete", "succeeded", frozenset({"succeeded"}), True, attempts=True, batch=True)
# (A failure sent again carries the same error; a timed-out thread's late failure under
# the same lease is another one, and refused.)
FAIL = Op("fail", None, frozenset({"retried", "failed"}), True, True, True, same_error=True)
RELEASE = Op("release", "released", frozenset({"released"}), requeues=True, attempts=True,
             batch=True)  # fmt: skip
RESCUE = Op("rescue", None, advances=True, requeues=True, attempts=True)
# The jobs a worker stopped by a shutdown still held: put back, the attempt given back.
RESCUE_STOPPED = Op("rescue_stopped", "stopped", requeues=True, attempts=True)
# A lease its own worker gave up: a rescue, sooner. Sent again, it finds it done.
GIVE_UP = Op("give_up", "lease_expired", frozenset({"lease_expired"}), True, True, attempts=True)
CANCEL = Op("cancel", "cancelled", advances=True, attempts=True)  # a running job
CANCEL_PENDING = Op("cancel", advances=True)  # no attempt of it is open
UNREADABLE = Op("unreadable", advances=True)  # a pending row no worker can read: failed
RUN_END = Op("run_end")  # the pending jobs of a run being cancelled or failed
ORPHAN = Op("orphan")  # a retry of a job whose run has ended: cancelled instead
RETRY = Op("retry")  # an operator's retry


@dataclass(frozen=True, slots=True)
class Change:
    """One job's status change, as the follow-ups (and later, metrics) see it."""

    op: str
    job_id: int
    token: int
    status: JobStatus
    run_id: int | None = None
    step: str | None = None
    item: int | None = None

    @property
    def key(self) -> LeaseKey:
        return (self.job_id, self.token)


@dataclass(slots=True)
class Recorded:
    """What a write did: the leases it changed (`held`), its changes (for a batch op,
    only those of workflow jobs), the leases whose same write had been recorded before
    (`replayed`), and those it refused as stale."""

    held: set[LeaseKey] = field(default_factory=set)
    changes: list[Change] = field(default_factory=list)
    replayed: dict[LeaseKey, JobStatus] = field(default_factory=dict)
    stale: list[LeaseKey] = field(default_factory=list)

    @property
    def written(self) -> set[LeaseKey]:
        """Leases whose write is recorded, now or by an earlier sending of it."""
        return self.held | set(self.replayed)


class RunEngine(Protocol):
    """Advances workflow runs inside the store's transactions (onceq.workflow.engine)."""

    def run_started(self, tx: Tx, run: Row) -> None:
        """A run was just inserted (its row and step rows): start its first steps."""
        ...

    def jobs_finished(self, tx: Tx, run: Row, changes: Sequence[Change]) -> None:
        """Jobs of this run reached a final status; the run's row is locked and running."""
        ...


_engine: RunEngine | None = None


def set_run_engine(engine: RunEngine) -> None:
    """Register the engine that advances workflow runs (the workflow package does it)."""
    global _engine
    _engine = engine


def run_engine() -> RunEngine:
    """The registered engine; ConfigError if none is (onceq.workflow was not imported)."""
    if _engine is None:
        raise ConfigError("a workflow run needs its engine: import onceq.workflow")
    return _engine


class Transitions:
    """The follow-ups of every status change; the Store inherits them."""

    @abstractmethod
    def _bookkeep(
        self,
        tx: Tx,
        op: Op,
        asked: Sequence[LeaseKey],
        kept: Sequence[Row],
        outcome: Callable[[Row], str],
        error: str | None,
    ) -> dict[LeaseKey, str]:
        """Write the records of the attempts a write ended, with `outcome(row)`, where its
        statement did not (SQLite; PostgreSQL's statements write them in a CTE). Returns
        the asked leases whose attempt had already ended with one of `op.replays`, with
        that outcome (PostgreSQL's statements return those rows themselves)."""

    @abstractmethod
    def _note_rejected(self, tx: Tx, op: Op, stale: Sequence[LeaseKey]) -> None:
        """Note in their attempts' records that a write of kind `op` was refused for these
        stale leases."""

    @abstractmethod
    def _transient(self, exc: BaseException) -> bool:
        """Whether an error must abort the whole transaction (a lost connection, a
        deadlock to retry) rather than fail the one run that raised it."""

    def _transition(
        self,
        tx: Tx,
        op: Op,
        rows: Sequence[Row],
        asked: Sequence[LeaseKey] = (),
        *,
        outcome: str | None = None,
        error: str | None = None,
    ) -> Recorded:
        """The one path: rows a statement of kind `op` changed (with `replayed` rows, if
        the statement found them) and the leases it was asked to write."""
        done = Recorded()
        kept = rows
        if op.replays:  # its statements return the leases recorded before, marked
            kept = [r for r in rows if not r["replayed"]]
            done.replayed = {(r["id"], r["token"]): r["status"] for r in rows if r["replayed"]}

        def outcome_of(row: Row) -> str:
            return outcome or op.outcome or ("retried" if row["status"] == "pending" else "failed")

        if op.attempts:
            for key, earlier in self._bookkeep(tx, op, asked, kept, outcome_of, error).items():
                done.replayed[key] = _status_after(earlier)
        done.held = held = {(r["id"], r["token"]) for r in kept}
        done.stale = [k for k in asked if k not in held and k not in done.replayed]
        if done.stale and op.attempts:
            # A statement of its own, after the write: it sees the record of an attempt
            # whose ending (a rescue, a cancel) committed while this write waited.
            self._note_rejected(tx, op, done.stale)
        if op is not HEARTBEAT:
            done.changes = [
                Change(op.name, r["id"], r["token"], r["status"], r["run_id"], r["step"], r["item"])
                for r in kept
                if not op.batch or r["run_id"] is not None
            ]
        if op.requeues or op.advances:
            done.changes = self._follow_runs(tx, op, done.changes)
        if (done.stale and op is not HEARTBEAT) or op is RESCUE or op is GIVE_UP:
            self._count(tx, op, done)
        self._note(tx, op, done, outcome)
        return done

    def _count(self, tx: Tx, op: Op, done: Recorded) -> None:
        """Count the rare events of a write. (A refused heartbeat is not counted: one that
        merely crossed its holder's completion is refused too; the loss it reveals is
        counted where the lease was taken away.)"""
        names: dict[int, list[str]] = {}
        if op is not HEARTBEAT:
            for job_id, _ in done.stale:
                names.setdefault(job_id, []).append(f"stale_{op.name}")
        if op is RESCUE or op is GIVE_UP:
            lost = ["lease_lost", "rescued"] if op is RESCUE else ["lease_lost"]
            for c in done.changes:
                names.setdefault(c.job_id, []).extend(lost)
        stats.count_jobs(tx, names)

    def _follow_runs(self, tx: Tx, op: Op, changes: list[Change]) -> list[Change]:
        """The runs of these changes: each one touched is locked once, all in run id
        order (one lock order for every transaction, after the job rows), then the
        retries of ended runs are cancelled and the finished jobs advance their runs."""
        requeued = {c.run_id for c in changes if c.run_id and c.status == "pending"}
        finished = {c.run_id for c in changes if c.run_id and c.status in FINISHED}
        touched = (requeued if op.requeues else set()) | (finished if op.advances else set())
        if not touched:
            return changes
        runs = {run_id: tx.one("run_lock", {"run_id": run_id}) for run_id in sorted(touched)}
        if op.requeues:
            changes = self._orphans(tx, changes, runs)
        if op.advances:
            self._advance(tx, changes, runs)
        return changes

    def _orphans(self, tx: Tx, changes: list[Change], runs: dict[int, Row | None]) -> list[Change]:
        """Workflow jobs sent back to pending whose run has ended (it was cancelled or
        failed while they ran) are cancelled instead."""
        out = []
        for c in changes:
            run = runs.get(c.run_id or 0)
            if c.status == "pending" and run is not None and run["status"] != "running":
                row = tx.one("job_cancel_orphan", {"job_id": c.job_id})
                if row is not None:
                    c = replace(c, op=ORPHAN.name, status="cancelled")
                    why = "its run has ended"
                    tx.notes.append(note(logging.INFO, "job.cancelled", job=c.job_id, why=why))
            out.append(c)
        return out

    def _advance(self, tx: Tx, changes: Sequence[Change], runs: dict[int, Row | None]) -> None:
        """Advance the (locked) runs of workflow jobs that reached a final status."""
        by_run: dict[int, list[Change]] = {}
        for c in changes:
            if c.run_id is not None and c.status in FINISHED:
                by_run.setdefault(c.run_id, []).append(c)
        for run_id in sorted(by_run):
            if faults.hit("advance.before"):
                raise StoreUnavailable("injected fault: the connection was lost before COMMIT")
            run = runs[run_id]
            if run is None or run["status"] != "running":
                continue  # an ended run: its running jobs finish, and nothing follows
            engine = run_engine()
            try:
                with tx.savepoint():
                    engine.jobs_finished(tx, run, by_run[run_id])
            except Exception as exc:
                if self._transient(exc):
                    raise
                error = f"the run could not be advanced: {type(exc).__name__}: {exc}"
                self._run_end(tx, run_id, "failed", error, locked=True)
                tx.notes.append(note(logging.ERROR, "run.failed", run=run_id, error=error))

    def _run_end(
        self, tx: Tx, run_id: int, status: str, error: str, *, locked: bool = False
    ) -> str | None:
        """End a running run as `status` (cancelled, or failed when it cannot be
        advanced): its pending jobs are cancelled, its running ones finish and advance
        nothing. Returns the status it had, or None when there is no such run.

        Job rows before the run's row, as everywhere: the pending jobs are cancelled
        first (unless the run is `locked` already), then the run is locked, then those
        that became pending meanwhile (a retry, or a dispatch that committed first) —
        skipping rows another transaction holds: it waits for this run's lock, and will
        find the run ended."""
        if not locked:
            self._transition(tx, RUN_END, tx.all("run_cancel_jobs", {"run_id": run_id}))
        run = tx.one("run_lock", {"run_id": run_id})
        if run is None:
            return None
        before: str = run["status"]
        if before != "running":
            return before
        self._transition(tx, RUN_END, tx.all("run_cancel_jobs_unlocked", {"run_id": run_id}))
        waiting = "cancelled" if status == "cancelled" else "skipped"
        tx.run("step_close_open", {"run_id": run_id, "running": status, "waiting": waiting})
        tx.run("run_finish", {"run_id": run_id, "status": status, "error": error})
        return before

    def _note(self, tx: Tx, op: Op, done: Recorded, outcome: str | None) -> None:
        """What to log once the transaction has committed."""
        add = tx.notes.append
        if op is RESCUE or op is GIVE_UP:
            for c in done.changes:
                add(note(logging.WARNING, "job.rescued", job=c.job_id, token=c.token,
                         why=outcome or op.outcome, now=c.status))  # fmt: skip
        if op is RESCUE_STOPPED:
            for c in done.changes:
                add(note(logging.INFO, "job.put_back", job=c.job_id, token=c.token,
                         why="shutdown", now=c.status))  # fmt: skip
        for job_id, token in done.replayed:
            add(note(logging.INFO, "job.write_replayed", op=op.name, job=job_id, token=token,
                     answer="already recorded"))  # fmt: skip
        if op is HEARTBEAT:
            # Not logged here: a heartbeat that merely crossed its holder's completion is
            # refused too, and only the worker can tell a lost lease from that.
            return
        for job_id, token in done.stale:
            add(note(logging.WARNING, "job.write_rejected", op=op.name, job=job_id, token=token,
                     why="the lease is no longer held"))  # fmt: skip


def _status_after(outcome: str) -> JobStatus:
    """The status an attempt's ending sent its job to (for a write answered again)."""
    if outcome == "succeeded":
        return "succeeded"
    if outcome == "failed":
        return "failed"
    return "pending"  # retried, released, stopped
