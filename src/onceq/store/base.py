"""The job store: every persistent operation as a domain verb, shared by both dialects.

The layers above (App, worker, workflow engine, CLI) call only these verbs and never
see SQL or a driver. A dialect module supplies a connection, a transaction runner,
parameter encoding for batches, and its queries file; the verbs here are written once,
and every status change they make goes through one path (`transitions.py`).

Fencing: every write a worker makes about a job (heartbeat, complete, fail, release)
carries the lease token the claim returned, and the statement matches on it. A write
with a stale token changes nothing, is reported to the caller, logged, and noted in the
attempt history (`rejected`). The same write sent again after its answer was lost finds
its attempt already ended that way and answers "already recorded".
"""

from __future__ import annotations

import json
import logging
import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from onceq import logs
from onceq.errors import InvalidTransition, JobNotFound, RunNotFound, SchemaError
from onceq.models import (
    FINISHED,
    Attempt,
    Checkpoint,
    Failure,
    Job,
    JobStatus,
    Lease,
    NewJob,
    Rescued,
    Run,
)
from onceq.store import jsoncodec, queries, rows
from onceq.store.appverbs import AppVerbs
from onceq.store.batches import BatchVerbs
from onceq.store.periodic import PeriodicVerbs
from onceq.store.registry import WorkerVerbs
from onceq.store.retention import RetentionVerbs
from onceq.store.stats import StatsVerbs
from onceq.store.transitions import (
    CANCEL,
    CANCEL_PENDING,
    CLAIM,
    COMPLETE,
    FAIL,
    GIVE_UP,
    HEARTBEAT,
    RELEASE,
    RESCUE,
    RESCUE_STOPPED,
    RETRY,
    Op,
    Transitions,
    run_engine,
)
from onceq.store.tx import LeaseKey, Note, Params, Row, Tx
from onceq.store.views import ViewVerbs
from onceq.store.wakeup import Waker

log = logging.getLogger("onceq.store")
T = TypeVar("T")

RESCUE_ERROR = "lease expired: the worker died, hung or lost the database"
# A keyed claim looks at this many candidates per job asked for, and KEYED_SCAN_MORE more.
KEYED_SCAN = 4
KEYED_SCAN_MORE = 16


class Store(
    Transitions,
    BatchVerbs,
    AppVerbs,
    WorkerVerbs,
    RetentionVerbs,
    PeriodicVerbs,
    StatsVerbs,
    ViewVerbs,
    ABC,
):
    """A job store on one database. Thread-safe; one per process is enough."""

    dialect: ClassVar[str]
    # The statements of a keyed claim, in order (the last one returns the claimed rows).
    keyed_claim: ClassVar[tuple[str, ...]]

    def __init__(self, url: str) -> None:
        self.url = url
        self.q = queries.load(self.dialect)
        # The largest payload, result or run input stored, in bytes of JSON (None: any).
        self.max_payload: int | None = jsoncodec.DEFAULT_MAX_PAYLOAD

    # -- dialect hooks -------------------------------------------------------------

    @abstractmethod
    def _in_tx(self, fn: Callable[[Tx], T], labels: tuple[str, ...] = ()) -> T:
        """Run `fn` in one write transaction, re-running it whole on a transient conflict.
        `labels` name the fault points around its commit (see onceq.faults).
        StoreUnavailable: nothing was written; OutcomeUnknown: the commit's answer was
        lost (the store settles which before its next transaction)."""

    def _read(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn`, which only reads; dialects may skip the write lock."""
        return self._in_tx(fn)

    # A worker's cycle for plain jobs (their results, then a claim) is one statement of
    # its own in this dialect (`job_claim*` take the results), run by _in_statement.
    cycle_in_one_statement: ClassVar[bool] = False

    def _in_statement(self, fn: Callable[[Tx], T], labels: tuple[str, ...] = ()) -> T:
        """Run `fn`, whose first statement is its only write, so that it commits on its
        own (no BEGIN, no COMMIT: one round trip). Follow-ups `fn` runs after it, if
        any, commit on their own too. Lost answers as for _in_tx. By default: _in_tx."""
        return self._in_tx(fn, labels)

    @abstractmethod
    def _time_param(self, when: datetime | None) -> Any:
        """A datetime as the dialect stores it."""

    @abstractmethod
    def waker(self, event: threading.Event) -> Waker:
        """How an idle worker of this store learns that there may be work."""

    def limit_statement_time(self, seconds: float) -> None:
        """Bound how long one statement may run (a worker asks for less than its lease:
        a statement that outlives the lease is wasted). Not every dialect can."""

    def _leases_param(self, leases: Sequence[LeaseKey]) -> Params:
        """A batch of (job id, token) pairs: one JSON array, `[[id, token], ...]`."""
        return {"leases": json.dumps(leases)}

    def _results_param(self, items: Sequence[tuple[LeaseKey, str]]) -> Params:
        """A batch of results, in two shapes: `batch`, `[[id, token, result], ...]`, for
        SQLite; `leases` and `results`, two arrays matched by position, for PostgreSQL,
        whose JSON operators de-escape a whole element to read any part of it (and a
        result holding \u0000 cannot become text). The results are JSON text already:
        they are spliced in, not decoded and encoded again."""
        body = ",".join(f"[{job_id},{token},{result}]" for (job_id, token), result in items)
        return {
            "batch": f"[{body}]",
            "results": f"[{','.join(result for _, result in items)}]",
            **self._leases_param([key for key, _ in items]),
        }

    def _note_rejected(self, tx: Tx, op: Op, stale: Sequence[LeaseKey]) -> None:
        tx.run("attempt_reject", {"op": op.name, **self._leases_param(stale)})

    def _queues_param(self, queues: Sequence[str] | None) -> str | None:
        """A list of queue names as one JSON array (None: every unreserved queue)."""
        return None if queues is None else json.dumps(list(queues))

    @abstractmethod
    def _insert_many(self, tx: Tx, rows: Sequence[Params]) -> list[int]:
        """Insert many jobs in one transaction; ids in input order (existing ids for keys)."""

    @abstractmethod
    def _run_script(self, tx: Tx, script: str) -> None:
        """Run one migration file's statements."""

    def _before_migrate(self, tx: Tx) -> None:
        """Take whatever a dialect needs before migrating (a lock, a schema)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    def wal_checkpoint(self, mode: str = "PASSIVE") -> Checkpoint | None:
        """Checkpoint the write-ahead log (SQLite): PASSIVE, or TRUNCATE when idle. None
        where there is nothing to do (PostgreSQL)."""
        return None

    def _emit(self, notes: Sequence[Note]) -> None:
        """Log what a committed transaction noted: the one place every verb's effects
        pass after the commit."""
        for level, event, fields in notes:
            logs.event(log, level, event, **fields)

    # -- schema --------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply pending migrations in one transaction; the versions applied (none on a
        second run). SchemaError for a database migrated by a newer onceq."""
        known = queries.migrations(self.dialect)

        def apply(tx: Tx) -> list[int]:
            self._before_migrate(tx)
            tx.run("migrations_table_create", {})
            current = self._version(tx)
            if current > known[-1][0]:
                raise SchemaError(schema_too_new(current, known[-1][0]))
            pending = [(version, script) for version, script in known if version > current]
            for version, script in pending:
                self._run_script(tx, script)
                tx.run("migration_record", {"version": version})
            return [version for version, _ in pending]

        return self._in_tx(apply, ("migrate",))

    def schema_version(self) -> int:
        """The schema version of the database (0 when it has no onceq schema)."""
        return self._read(self._version)

    def _version(self, tx: Tx) -> int:
        if tx.one("migrations_table_exists", {}) is None:
            return 0
        row = tx.one("schema_version", {})
        return int(row["version"] or 0) if row else 0

    # -- enqueue -------------------------------------------------------------------

    def _insert_params(self, new: NewJob) -> Params:
        if new.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {new.max_attempts}")
        return {
            "queue": new.queue,
            "task": new.task,
            "args": jsoncodec.dumps(new.args, f"payload of {new.task}", self.max_payload),
            "priority": new.priority,
            "run_at": self._time_param(new.run_at),
            "delay": float(new.delay),
            "key": new.key,
            "max_attempts": new.max_attempts,
            "run_id": new.run_id,
            "step": new.step,
            "item": new.item,
            "concurrency_key": new.concurrency_key,
            "concurrency_limit": new.concurrency_limit,
        }

    def job_insert(self, new: NewJob) -> Job:
        """Insert one job, committed when this returns. With a `key` that exists, the
        existing job is returned instead (the unique index makes this race-free, and
        makes an enqueue whose answer was lost safe to send again)."""
        params = self._insert_params(new)

        def insert(tx: Tx) -> Row:
            row = tx.one("job_insert", params)
            if row is None:
                row = tx.one("job_get_by_key", {"key": new.key})
            assert row is not None
            return row

        return rows.job(self._in_tx(insert, ("insert",)))

    def job_insert_many(self, news: Sequence[NewJob]) -> list[int]:
        """Insert many jobs in one transaction; their ids in input order. Every payload is
        encoded before anything is written, so one bad payload writes nothing."""
        params = [self._insert_params(new) for new in news]
        if not params:
            return []
        return self._in_tx(lambda tx: self._insert_many(tx, params), ("insert",))

    # -- the worker's verbs, all fenced by the lease token -------------------------

    def job_claimable(self, queues: Sequence[str] | None = None) -> bool:
        """A cheap hint that a claim may find something (False: surely nothing is due)."""
        return True

    def job_pending_exists(self, queues: Sequence[str] | None) -> bool:
        """Whether any job of these queues (all but the reserved onceq.* ones, for None)
        is pending, due or not."""
        params = {"queues": self._queues_param(queues)}
        return bool(self._read(lambda tx: tx.all("job_pending_exists", params)))

    def job_running_exists(self, queues: Sequence[str] | None) -> bool:
        """Whether any job of these queues (all, for None) is running."""
        params = {"queues": self._queues_param(queues)}
        return bool(self._read(lambda tx: tx.all("job_running_exists", params)))

    def jobs_active(self, queues: Sequence[str] | None) -> bool:
        """Whether any job of these queues is pending or running: two index probes, cheap
        enough to poll while a benchmark runs."""
        return self.job_pending_exists(queues) or self.job_running_exists(queues)

    def job_claim(
        self,
        worker: str,
        queues: Sequence[str] | None,
        limit: int,
        lease: float,
        *,
        claim: int | None = None,
        keyed: bool = False,
    ) -> list[Lease]:
        """Move up to `limit` due jobs to running for `worker`, in one statement, and return
        their leases: priority (high first), then run_at, then id. `claim` numbers this
        claim (new_claim() by default): after OutcomeUnknown — it may have committed —
        `job_adopt` finds exactly what it took. Jobs with a concurrency key are claimed
        only with `keyed` (a worker whose app has such tasks), each with a slot of its
        key, in the same transaction (then several statements)."""
        if limit <= 0:
            return []
        step = self._claim_step(worker, queues, limit, lease, claim, keyed=keyed)
        # A keyed claim is several statements: a transaction of its own (one round trip
        # per statement; plain claims stay one autocommit statement where they can).
        run = self._in_tx if keyed else self._in_statement
        return rows.leases(run(step, ("claim",))[1])

    def job_complete_and_claim(
        self,
        items: Sequence[tuple[Lease, str]],
        worker: str,
        queues: Sequence[str] | None,
        limit: int,
        lease: float,
        *,
        claim: int | None = None,
        keyed: bool = False,
    ) -> tuple[set[LeaseKey], list[Lease]]:
        """job_complete_many, then job_claim for the slots that frees, in one transaction:
        one commit (the costly part, on both backends) instead of two."""
        labels = ("complete", "claim") if limit > 0 else ("complete",)
        if self.cycle_in_one_statement and not keyed and all(x.run_id is None for x, _ in items):
            # Plain jobs: nothing follows their completion inside a transaction (no run
            # to advance), so results and claim are one statement. (Not for a worker
            # that claims keyed jobs too: its claim is more than one statement.)
            cycle = self._claim_step(worker, queues, limit, lease, claim, items)
            done, claimed = self._in_statement(cycle, labels)
            return done, rows.leases(claimed)
        complete = self._complete_step(items)
        claiming = self._claim_step(worker, queues, limit, lease, claim, keyed=keyed)
        done, claimed = self._in_tx(
            lambda tx: (complete(tx), claiming(tx)[1] if limit > 0 else []), labels
        )
        return done, rows.leases(claimed)

    def _claim_step(
        self,
        worker: str,
        queues: Sequence[str] | None,
        limit: int,
        lease: float,
        claim: int | None,
        items: Sequence[tuple[Lease, str]] = (),
        *,
        keyed: bool = False,
    ) -> Callable[[Tx], tuple[set[LeaseKey], list[Row]]]:
        """A claim; with `items` (only where cycle_in_one_statement), their results are
        recorded by the same statement first. Returns (results recorded, claimed rows).
        With `keyed` (never with `items`), keyed jobs are claimed too, each with a slot of
        its key, by statements of their own."""
        number = new_claim() if claim is None else claim
        keys = [(x.job_id, x.token) for x, _ in items]
        results = self._results_param([((x.job_id, x.token), r) for x, r in items])
        params: Params = {"worker": worker, "limit": limit, "lease": float(lease),
                          "claim": number, **results}  # fmt: skip
        if queues is None:
            name = "job_claim"
        elif len(queues) == 1:
            name, params["queue"] = "job_claim_queue", queues[0]
        else:
            name, params["queues"] = "job_claim_queues", self._queues_param(queues)
        queued = self._queues_param(queues)

        # Plain and keyed jobs take turns to go first (by the claim number's parity), so
        # that neither kind can starve the other of a worker's free slots.
        keyed_first = keyed and bool(number & 1)

        def step(tx: Tx) -> tuple[set[LeaseKey], list[Row]]:
            found = [] if keyed_first else tx.all(name, params)
            claimed = [r for r in found if r["kind"] == "claimed"] if keys else found
            written: set[LeaseKey] = set()
            if keys:
                done = [r for r in found if r["kind"] == "done"]
                written = self._transition(tx, COMPLETE, done, keys).written
            if keyed and len(claimed) < limit:
                room = limit - len(claimed)
                claimed += self._claim_keyed(tx, {**params, "queues": queued}, room)
                if keyed_first and len(claimed) < limit:
                    claimed += tx.all(name, {**params, "limit": limit - len(claimed)})
            if claimed:
                self._transition(tx, CLAIM, claimed)
            return written, claimed

        return step

    def _claim_keyed(self, tx: Tx, params: Params, room: int) -> list[Row]:
        """Up to `room` due keyed jobs, each with a free slot of its key: the dialect's
        statements (`keyed_claim`), the last of which returns the claimed rows. Dead slots
        go first (their jobs no longer run under their token); candidates are looked for
        among the first few times `room` jobs whose key has a free slot."""
        keyed = {**params, "limit": room, "scan": KEYED_SCAN * room + KEYED_SCAN_MORE}
        *before, claim = self.keyed_claim
        for name in before:
            tx.run(name, keyed)
        return tx.all(claim, keyed)

    def job_adopt(self, worker: str, claims: Sequence[int], lease: float) -> list[Lease]:
        """The jobs that `worker`'s `claims` (whose answers were lost) took and that still
        run under them, with their leases extended: to be run (or released) by it."""
        params = {"worker": worker, "claims": json.dumps(list(claims)), "lease": float(lease)}
        return rows.leases(self._in_tx(lambda tx: tx.all("job_adopt", params), ("adopt",)))

    def job_heartbeat(self, leases: Sequence[Lease], lease: float) -> Kept:
        """Extend every lease still held, in one statement; return those kept, as
        (job id, token) — one job may have an old and a new lease in the same worker —
        and, in `.busy`, those held but locked by another transaction at that moment
        (the worker's own completion of them): neither extended nor refused."""
        if not leases:
            return Kept()
        keys = [(x.job_id, x.token) for x in leases]
        params = {"lease": float(lease), **self._leases_param(keys)}

        def beat(tx: Tx) -> Kept:
            found = tx.all("job_heartbeat", params)
            kept = Kept((r["id"], r["token"]) for r in found if not r["busy"])
            kept.busy = {(r["id"], r["token"]) for r in found if r["busy"]}
            held = [r for r in found if not r["busy"]]
            self._transition(tx, HEARTBEAT, held, [k for k in keys if k not in kept.busy])
            return kept

        return self._in_tx(beat, ("heartbeat",))

    def job_complete_many(self, items: Sequence[tuple[Lease, str]]) -> set[LeaseKey]:
        """Record results (JSON text) for leases still held; return the leases whose
        result is recorded — now, or by an earlier sending of the same completion whose
        answer was lost. A stale lease records nothing: its job was rescued, re-claimed
        or cancelled."""
        if not items:
            return set()
        return self._in_tx(self._complete_step(items), ("complete",))

    def _complete_step(self, items: Sequence[tuple[Lease, str]]) -> Callable[[Tx], set[LeaseKey]]:
        keys = [(lease.job_id, lease.token) for lease, _ in items]
        params = self._results_param([(k, r) for k, (_, r) in zip(keys, items, strict=True)])

        def complete(tx: Tx) -> set[LeaseKey]:
            if not keys:
                return set()
            return self._transition(tx, COMPLETE, tx.all("job_complete", params), keys).written

        return complete

    def job_complete(self, lease: Lease, result: Any) -> bool:
        """Record one result; False when the lease is stale."""
        text = jsoncodec.dumps(result, f"result of job {lease.job_id}", self.max_payload)
        return (lease.job_id, lease.token) in self.job_complete_many([(lease, text)])

    def job_fail(self, failure: Failure) -> JobStatus | None:
        """Record a failure: pending again after `retry_in` while attempts remain, else
        failed. Returns the new status (the one it set, for a failure sent again after
        its answer was lost), or None when the lease is stale."""
        lease = failure.lease
        key = (lease.job_id, lease.token)
        params = {
            "job_id": lease.job_id,
            "token": lease.token,
            "error": failure.error,
            "traceback": failure.traceback,
            "retry_in": None if failure.retry_in is None else float(failure.retry_in),
            **self._leases_param([key]),
        }

        def fail(tx: Tx) -> JobStatus | None:
            done = self._transition(tx, FAIL, tx.all("job_fail", params), [key],
                                    error=failure.error)  # fmt: skip
            for change in done.changes:
                return change.status
            return done.replayed.get(key)

        return self._in_tx(fail, ("fail",))

    def job_release_many(self, leases: Sequence[Lease]) -> set[LeaseKey]:
        """Hand back leases whose handler never started: pending again, attempt given
        back (or cancelled, if the job's workflow run has ended meanwhile)."""
        if not leases:
            return set()
        keys = [(x.job_id, x.token) for x in leases]
        params = self._leases_param(keys)

        def release(tx: Tx) -> set[LeaseKey]:
            return self._transition(tx, RELEASE, tx.all("job_release", params), keys).written

        return self._in_tx(release, ("release",))

    def job_give_up(self, leases: Sequence[Lease], error: str) -> set[LeaseKey]:
        """Leases their own worker gave up (its handler was told to stop; what it returns
        cannot count): pending again, or failed when out of attempts — a rescue, without
        waiting for the lease to expire. Returns those no longer held (now, or before)."""
        if not leases:
            return set()
        keys = [(x.job_id, x.token) for x in leases]
        params = {"error": error, **self._leases_param(keys)}

        def give_up(tx: Tx) -> set[LeaseKey]:
            found = tx.all("job_give_up", params)
            return self._transition(tx, GIVE_UP, found, keys, error=error).written

        return self._in_tx(give_up, ("give_up",))

    def job_rescue(self) -> list[Rescued]:
        """Jobs whose lease expired go back to pending, or to failed when out of attempts.
        Safe to run from any number of workers at once: each job is rescued once."""
        return self._rescue(None, RESCUE_ERROR, "lease_expired")

    def job_rescue_worker(self, worker: str, reason: str) -> list[Rescued]:
        """Rescue every job held by `worker` at once; only for a worker known to be dead
        (its supervisor saw it exit), so its handlers cannot still be running."""
        return self._rescue(worker, f"worker {worker} died: {reason}", "worker_died")

    def job_rescue_stopped(self, worker: str, reason: str) -> list[Rescued]:
        """Put back every job held by `worker`, a process that stopped during a shutdown
        (its grace ran out, or a second signal killed it) and so cannot be running them:
        pending again with the attempt given back, never failed — a shutdown is not the
        job's failure. The attempt ends `stopped`, with `reason` as its error."""
        params = {"worker": worker, "error": reason}

        def put_back(tx: Tx) -> list[Rescued]:
            found = tx.all("job_rescue_stopped", params)
            done = self._transition(tx, RESCUE_STOPPED, found, error=reason)
            return [Rescued(c.job_id, c.token, c.status) for c in done.changes]

        return self._in_tx(put_back, ("rescue",))

    def _rescue(self, worker: str | None, error: str, outcome: str) -> list[Rescued]:
        params = {"worker": worker, "error": error, "outcome": outcome}

        def rescue(tx: Tx) -> list[Rescued]:
            found = tx.all("job_rescue", params)
            done = self._transition(tx, RESCUE, found, outcome=outcome, error=error)
            return [Rescued(c.job_id, c.token, c.status) for c in done.changes]

        return self._in_tx(rescue, ("rescue",))

    # -- operator actions ----------------------------------------------------------

    def job_cancel(self, job_id: int) -> JobStatus:
        """Cancel a pending or running job; returns the status it had. A running job's
        holder can then record nothing more: its lease is dead."""
        return self._in_tx(lambda tx: self._cancel(tx, job_id), ("cancel",))

    def _cancel(self, tx: Tx, job_id: int) -> JobStatus:
        row = tx.one("job_lock", {"job_id": job_id})
        if row is None:
            raise JobNotFound(f"no job with id {job_id}")
        before: JobStatus = row["status"]
        if before in FINISHED:
            return before
        done = tx.all("job_cancel", {"job_id": job_id, "running": before == "running"})
        if before == "running":
            key = (job_id, row["lease_token"])
            self._transition(tx, CANCEL, done, [key], error="cancelled")
        else:
            self._transition(tx, CANCEL_PENDING, done)
        return before

    def job_retry(self, job_id: int, extra_attempts: int = 1) -> Job:
        """Put a failed or cancelled job back to pending with at least `extra_attempts` left."""
        if extra_attempts < 1:
            raise ValueError("extra_attempts must be at least 1")

        def retry(tx: Tx) -> Row:
            row = tx.one("job_lock", {"job_id": job_id})
            if row is None:
                raise JobNotFound(f"no job with id {job_id}")
            if row["run_id"] is not None:
                raise InvalidTransition(
                    f"job {job_id} belongs to workflow run {row['run_id']}: "
                    "its step decides what runs next, so re-run the workflow instead"
                )
            done = tx.one("job_retry", {"job_id": job_id, "extra": extra_attempts})
            if done is None:
                raise InvalidTransition(
                    f"job {job_id} is {row['status']}: only failed or cancelled jobs can be retried"
                )
            self._transition(tx, RETRY, [done])
            self._stats_reopen(tx, [row])
            return done

        return rows.job(self._in_tx(retry, ("retry",)))

    def queue_purge(self, queue: str) -> int:
        """Delete every job of `queue`, its attempts, and the workflow runs its jobs
        belonged to (with their jobs); returns how many jobs of `queue` went. What they
        added to the totals stays (see stats.py)."""

        def purge(tx: Tx) -> int:
            going = tx.all("queue_purge_ids", {"queue": queue})
            self._stats_forget(tx, [r["id"] for r in going])
            tx.run("queue_purge", {"queue": queue})
            return tx.run("queue_purge_jobs", {"queue": queue})

        return self._in_tx(purge, ("purge",))

    # -- reads ---------------------------------------------------------------------

    def job_get(self, job_id: int) -> Job:
        """One job, or JobNotFound."""
        row = self._read(lambda tx: tx.one("job_get", {"job_id": job_id}))
        if row is None:
            raise JobNotFound(f"no job with id {job_id}")
        return rows.job(row)

    def job_list(
        self,
        *,
        status: str | None = None,
        queue: str | None = None,
        task: str | None = None,
        run_id: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Job]:
        """Jobs, newest first, filtered and paged."""
        params = {
            "status": status,
            "queue": queue,
            "task": task,
            "run_id": run_id,
            "limit": limit,
            "offset": offset,
        }
        return [rows.job(r) for r in self._read(lambda tx: tx.all("job_list", params))]

    def job_counts(self) -> list[tuple[str, str, int]]:
        """(queue, status, count) for every queue and status present."""
        found = self._read(lambda tx: tx.all("job_counts", {}))
        return [(r["queue"], r["status"], r["n"]) for r in found]

    def attempt_list(self, job_id: int) -> list[Attempt]:
        """A job's attempts, oldest first."""
        found = self._read(lambda tx: tx.all("attempt_list", {"job_id": job_id}))
        return [rows.attempt(r) for r in found]

    # -- workflow runs -------------------------------------------------------------

    def run_start(self, name: str, definition: str, data: Any, steps: Sequence[str]) -> int:
        """Create a run of a checked definition (its JSON text) with one row per step, and
        let the run engine dispatch its first steps, in one transaction; its id."""
        return self._in_tx(lambda tx: self._start_run(tx, name, definition, data, steps),
                           ("run_start",))  # fmt: skip

    def _start_run(
        self, tx: Tx, name: str, definition: str, data: Any, steps: Sequence[str]
    ) -> int:
        params = {
            "name": name,
            "definition": definition,
            "input": jsoncodec.dumps(data, f"input of workflow {name}", self.max_payload),
        }
        run = tx.one("run_insert", params)
        assert run is not None
        for step in steps:
            tx.run("step_insert", {"run_id": run["id"], "step": step})
        run_engine().run_started(tx, run)
        run_id: int = run["id"]
        return run_id

    def run_cancel(self, run_id: int) -> str:
        """Cancel a running run: pending jobs are cancelled, running ones finish without
        advancing it (and are not retried). Returns the status it had."""
        before = self._in_tx(lambda tx: self._run_end(tx, run_id, "cancelled", "cancelled"),
                             ("run_cancel",))  # fmt: skip
        if before is None:
            raise RunNotFound(f"no workflow run with id {run_id}")
        return before

    def run_get(self, run_id: int) -> Run:
        """A run with its steps (in definition order) and their job counts."""

        def read(tx: Tx) -> tuple[Row, list[Row], list[Row]]:
            row = tx.one("run_get", {"run_id": run_id})
            if row is None:
                raise RunNotFound(f"no workflow run with id {run_id}")
            steps = tx.all("step_list", {"run_id": run_id})
            return row, steps, tx.all("job_run_counts", {"run_id": run_id})

        row, steps, counts = self._read(read)
        return rows.run(row, steps, counts)

    def run_list(self, *, limit: int = 50, offset: int = 0) -> list[Run]:
        """Runs, newest first (without their steps)."""
        found = self._read(lambda tx: tx.all("run_list", {"limit": limit, "offset": offset}))
        return [rows.run(r, [], []) for r in found]

    def run_results(self, run_id: int, step: str) -> list[Any]:
        """The results of a step's jobs, in item order (None for unfinished ones)."""
        found = self._read(lambda tx: tx.all("job_step_results", {"run_id": run_id, "step": step}))
        return [rows.json_or_raw(r["result"]) for r in found]


class Kept(set[LeaseKey]):
    """The leases a heartbeat extended; `busy`: those it could neither extend nor refuse
    (another transaction had them locked)."""

    busy: set[LeaseKey]

    def __init__(self, keys: Iterable[LeaseKey] = ()) -> None:
        super().__init__(keys)
        self.busy = set()


def new_claim() -> int:
    """A number for one claim call, so that what it took can be found again (62 random
    bits: no two claims in a store's life will share one). From the process's own
    generator, seeded from the system's entropy and again in every forked child (a read
    of the system's entropy per claim cost 13 µs)."""
    return random.getrandbits(62)


def schema_too_new(current: int, known: int) -> str:
    """The one-line refusal for a database migrated by a newer onceq."""
    return (
        f"the database schema is version {current}, newer than this onceq knows "
        f"(up to {known}): upgrade onceq"
    )
