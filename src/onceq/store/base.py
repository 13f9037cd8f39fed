"""The job store: every persistent operation as a domain verb, shared by both dialects.

The layers above (App, worker, workflow engine, CLI) call only these verbs and never
see SQL or a driver. A dialect module supplies a connection, a transaction runner,
parameter encoding for batches, and its queries file; the verbs here are written once.

Fencing: every write a worker makes about a job (heartbeat, complete, fail, release)
carries the lease token the claim returned, and the statement matches on it. A write
with a stale token changes nothing, is reported to the caller, logged, and noted in the
attempt history (`rejected`).
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from onceq.errors import InvalidTransition, JobNotFound, RunNotFound, SchemaError
from onceq.models import (
    FINISHED,
    Attempt,
    Failure,
    Job,
    JobStatus,
    Lease,
    NewJob,
    Rescued,
    Run,
    StepState,
)
from onceq.store import jsoncodec, queries

if TYPE_CHECKING:
    from onceq.workflow.model import Definition

log = logging.getLogger("onceq.store")

Row = Mapping[str, Any]
Params = dict[str, Any]
LeaseKey = tuple[int, int]
T = TypeVar("T")


class Tx(Protocol):
    """One open transaction: runs named queries of the store's dialect."""

    def all(self, name: str, params: Params) -> list[Row]:
        """Run a query and return every row."""
        ...

    def one(self, name: str, params: Params) -> Row | None:
        """Run a query and return its first row, if any."""
        ...

    def run(self, name: str, params: Params) -> int:
        """Run a statement and return the number of rows it changed."""
        ...


# What each worker write is called in the attempt history, and the outcome it records.
_OP_OUTCOME = {"complete": "succeeded", "release": "released"}


class Store(ABC):
    """A job store on one database. Thread-safe; one per process is enough."""

    dialect: ClassVar[str]

    def __init__(self, url: str) -> None:
        self.url = url
        self.q = queries.load(self.dialect)

    # -- dialect hooks -------------------------------------------------------------

    @abstractmethod
    def _in_tx(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn` in one write transaction, re-running it whole on a transient conflict."""

    def _read(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn`, which only reads; dialects may skip the write lock."""
        return self._in_tx(fn)

    @abstractmethod
    def _now(self) -> float | None:
        """The `now` passed to queries: SQLite's clock; None where the database has one."""

    @abstractmethod
    def _time_param(self, when: datetime | None) -> Any:
        """A datetime as the dialect stores it."""

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

    def _queues_param(self, queues: Sequence[str]) -> str:
        """A list of queue names as one JSON array."""
        return json.dumps(list(queues))

    @abstractmethod
    def _insert_many(self, tx: Tx, rows: Sequence[Params]) -> list[int]:
        """Insert many jobs in one transaction; ids in input order (existing ids for keys)."""

    @abstractmethod
    def _run_script(self, tx: Tx, script: str) -> None:
        """Run one migration file's statements."""

    def _before_migrate(self, tx: Tx) -> None:  # noqa: B027 - a hook
        """Take whatever a dialect needs before migrating (a lock, a schema)."""

    def migrate(self) -> list[int]:
        """Apply pending migrations in one transaction; the versions applied (none on a
        second run). SchemaError for a database migrated by a newer onceq."""
        known = queries.migrations(self.dialect)

        def apply(tx: Tx) -> list[int]:
            self._before_migrate(tx)
            tx.run("migrations_table_create", {})
            current = self._version(tx)
            if current > len(known):
                raise SchemaError(schema_too_new(current, len(known)))
            for version, script in known[current:]:
                self._run_script(tx, script)
                tx.run("migration_record", self._p(version=version))
            return [version for version, _ in known[current:]]

        return self._in_tx(apply)

    def schema_version(self) -> int:
        """The schema version of the database (0 when it has no onceq schema)."""
        return self._read(self._version)

    def _version(self, tx: Tx) -> int:
        if tx.one("migrations_table_exists", {}) is None:
            return 0
        row = tx.one("schema_version", {})
        return int(row["version"] or 0) if row else 0

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    def _bookkeep(  # noqa: B027 - a hook; PostgreSQL writes attempt records in its SQL
        self,
        tx: Tx,
        op: str,
        leases: Sequence[LeaseKey],
        kept: Sequence[Row],
        outcome: Callable[[Row], str | None],
        error: str | None,
    ) -> None:
        """Write attempt records for a worker write (SQLite); PostgreSQL's CTEs do it inline."""

    def _p(self, **params: Any) -> Params:
        params["now"] = self._now()
        return params

    # -- enqueue -------------------------------------------------------------------

    def _insert_params(self, new: NewJob) -> Params:
        if new.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {new.max_attempts}")
        return self._p(
            queue=new.queue,
            task=new.task,
            args=jsoncodec.dumps(new.args, f"payload of {new.task}"),
            priority=new.priority,
            run_at=self._time_param(new.run_at),
            delay=float(new.delay),
            key=new.key,
            max_attempts=new.max_attempts,
            run_id=new.run_id,
            step=new.step,
            item=new.item,
        )

    def job_insert(self, new: NewJob) -> Job:
        """Insert one job, committed when this returns. With a `key` that exists, the
        existing job is returned instead (the unique index makes this race-free)."""
        params = self._insert_params(new)

        def insert(tx: Tx) -> Row:
            row = tx.one("job_insert", params)
            if row is None:
                row = tx.one("job_get_by_key", {"key": new.key})
            assert row is not None
            return row

        return self._job(self._in_tx(insert))

    def job_insert_many(self, news: Sequence[NewJob]) -> list[int]:
        """Insert many jobs in one transaction; their ids in input order. Every payload is
        encoded before anything is written, so one bad payload writes nothing."""
        rows = [self._insert_params(new) for new in news]
        if not rows:
            return []
        return self._in_tx(lambda tx: self._insert_many(tx, rows))

    # -- the worker's verbs, all fenced by the lease token -------------------------

    def job_claimable(self, queues: Sequence[str] | None = None) -> bool:
        """A cheap hint that a claim may find something (False: surely nothing is due)."""
        return True

    def job_pending_exists(self, queues: Sequence[str] | None) -> bool:
        """Whether any job of these queues (all but the reserved onceq.* ones, for None)
        is pending, due or not."""
        param = None if queues is None else self._queues_param(queues)
        return bool(self._read(lambda tx: tx.all("job_pending_exists", {"queues": param})))

    def job_running_exists(self, queues: Sequence[str] | None) -> bool:
        """Whether any job of these queues (all, for None) is running."""
        param = None if queues is None else self._queues_param(queues)
        return bool(self._read(lambda tx: tx.all("job_running_exists", {"queues": param})))

    def jobs_active(self, queues: Sequence[str] | None) -> bool:
        """Whether any job of these queues is pending or running: two index probes, cheap
        enough to poll while a benchmark runs."""
        return self.job_pending_exists(queues) or self.job_running_exists(queues)

    def job_claim(
        self, worker: str, queues: Sequence[str] | None, limit: int, lease: float
    ) -> list[Lease]:
        """Move up to `limit` due jobs to running for `worker`, in one statement, and return
        their leases: priority (high first), then run_at, then id."""
        if limit <= 0:
            return []
        return self._leases(self._in_tx(self._claim_step(worker, queues, limit, lease)))

    def job_complete_and_claim(
        self,
        items: Sequence[tuple[Lease, str]],
        worker: str,
        queues: Sequence[str] | None,
        limit: int,
        lease: float,
    ) -> tuple[set[int], list[Lease]]:
        """job_complete_many, then job_claim for the slots that frees, in one transaction:
        one commit (the costly part, on both backends) instead of two."""
        keys, complete = self._complete_step(items)
        claim = self._claim_step(worker, queues, limit, lease)
        done, rows = self._in_tx(lambda tx: (complete(tx), claim(tx) if limit > 0 else []))
        self._log_rejected("complete", keys, done)
        return done, self._leases(rows)

    def _claim_step(
        self, worker: str, queues: Sequence[str] | None, limit: int, lease: float
    ) -> Callable[[Tx], list[Row]]:
        params = self._p(worker=worker, limit=limit, lease=float(lease))
        if queues is None:
            name = "job_claim"
        elif len(queues) == 1:
            name, params["queue"] = "job_claim_queue", queues[0]
        else:
            name, params["queues"] = "job_claim_queues", self._queues_param(queues)

        def claim(tx: Tx) -> list[Row]:
            rows = tx.all(name, params)
            if rows:
                self._after_claim(tx, rows)
            return rows

        return claim

    @staticmethod
    def _leases(rows: list[Row]) -> list[Lease]:
        rows.sort(key=lambda r: (-r["priority"], r["run_at"], r["id"]))
        return [
            Lease(
                job_id=r["id"],
                token=r["lease_token"],
                task=r["task"],
                args=r["args"],
                queue=r["queue"],
                attempts=r["attempts"],
                max_attempts=r["max_attempts"],
                run_id=r["run_id"],
                step=r["step"],
                item=r["item"],
            )
            for r in rows
        ]

    def _after_claim(self, tx: Tx, rows: Sequence[Row]) -> None:  # noqa: B027 - a hook
        """Start the attempt records of a claim (SQLite); PostgreSQL's claim CTE does it."""

    def job_heartbeat(self, leases: Sequence[Lease], lease: float) -> set[LeaseKey]:
        """Extend every lease still held, in one statement; return those kept, as
        (job id, token) — one job may have an old and a new lease in the same worker."""
        if not leases:
            return set()
        keys = [(x.job_id, x.token) for x in leases]
        params = self._p(lease=float(lease), **self._leases_param(keys))

        def beat(tx: Tx) -> set[LeaseKey]:
            kept = tx.all("job_heartbeat", params)
            self._bookkeep(tx, "heartbeat", keys, kept, lambda _: None, None)
            return {(r["id"], r["token"]) for r in kept}

        # Not logged here: a heartbeat that merely crossed its holder's completion is
        # refused too, and only the worker can tell a lost lease from that (job.lease_lost).
        return self._in_tx(beat)

    def job_complete_many(self, items: Sequence[tuple[Lease, str]]) -> set[int]:
        """Record results (JSON text) for leases still held; return the job ids recorded.
        A stale lease records nothing: its job was rescued, re-claimed or cancelled."""
        if not items:
            return set()
        keys, complete = self._complete_step(items)
        done = self._in_tx(complete)
        self._log_rejected("complete", keys, done)
        return done

    def _complete_step(
        self, items: Sequence[tuple[Lease, str]]
    ) -> tuple[list[LeaseKey], Callable[[Tx], set[int]]]:
        keys = [(lease.job_id, lease.token) for lease, _ in items]
        params = self._p(
            **self._results_param([(k, r) for k, (_, r) in zip(keys, items, strict=True)])
        )

        def complete(tx: Tx) -> set[int]:
            if not keys:
                return set()
            done = tx.all("job_complete", params)
            self._bookkeep(tx, "complete", keys, done, lambda _: "succeeded", None)
            self._after_finish(tx, done, "succeeded")
            return {r["id"] for r in done}

        return keys, complete

    def job_complete(self, lease: Lease, result: Any) -> bool:
        """Record one result; False when the lease is stale."""
        text = jsoncodec.dumps(result, f"result of job {lease.job_id}")
        return lease.job_id in self.job_complete_many([(lease, text)])

    def job_fail(self, failure: Failure) -> JobStatus | None:
        """Record a failure: pending again after `retry_in` while attempts remain, else
        failed. Returns the new status, or None when the lease is stale."""
        lease = failure.lease
        keys = [(lease.job_id, lease.token)]
        params = self._p(
            job_id=lease.job_id,
            token=lease.token,
            error=failure.error,
            traceback=failure.traceback,
            retry_in=None if failure.retry_in is None else float(failure.retry_in),
            **self._leases_param(keys),
        )

        def fail(tx: Tx) -> JobStatus | None:
            row = tx.one("job_fail", params)
            kept = [row] if row else []
            self._bookkeep(
                tx,
                "fail",
                keys,
                kept,
                lambda r: "retried" if r["status"] == "pending" else "failed",
                failure.error,
            )
            if row is None:
                return None
            if row["status"] == "pending" and self._cancel_orphaned_retries(tx, kept):
                return "cancelled"
            if row["status"] == "failed":
                self._after_finish(tx, kept, "failed")
            status: JobStatus = row["status"]
            return status

        status = self._in_tx(fail)
        if status is None:
            self._log_rejected("fail", keys, set())
        return status

    def job_release_many(self, leases: Sequence[Lease]) -> set[int]:
        """Hand back leases whose handler never started: pending again, attempt given back."""
        if not leases:
            return set()
        keys = [(x.job_id, x.token) for x in leases]
        params = self._p(**self._leases_param(keys))

        def release(tx: Tx) -> set[int]:
            kept = tx.all("job_release", params)
            self._bookkeep(tx, "release", keys, kept, lambda _: "released", None)
            return {r["id"] for r in kept}

        kept = self._in_tx(release)
        self._log_rejected("release", keys, kept)
        return kept

    def job_rescue(self) -> list[Rescued]:
        """Jobs whose lease expired go back to pending, or to failed when out of attempts.
        Safe to run from any number of workers at once: each job is rescued once."""
        error = "lease expired: the worker died, hung or lost the database"
        return self._rescue(None, error, "lease_expired")

    def job_rescue_worker(self, worker: str, reason: str) -> list[Rescued]:
        """Rescue every job held by `worker` at once; only for a worker known to be dead
        (its supervisor saw it exit), so its handlers cannot still be running."""
        return self._rescue(worker, f"worker {worker} died: {reason}", "worker_died")

    def _rescue(self, worker: str | None, error: str, outcome: str) -> list[Rescued]:
        params = self._p(worker=worker, error=error, outcome=outcome)

        def rescue(tx: Tx) -> list[Row]:
            rows = tx.all("job_rescue", params)
            if rows:
                keys = [(r["id"], r["token"]) for r in rows]
                self._bookkeep(tx, "rescue", keys, rows, lambda _: outcome, params["error"])
                self._cancel_orphaned_retries(tx, [r for r in rows if r["status"] == "pending"])
                self._after_finish(tx, [r for r in rows if r["status"] == "failed"], "failed")
            return rows

        rows = self._in_tx(rescue)
        for r in rows:
            log.warning(
                "job %s rescued (%s, lease %s): now %s", r["id"], outcome, r["token"], r["status"]
            )
        return [Rescued(r["id"], r["token"], r["status"]) for r in rows]

    # -- operator actions ----------------------------------------------------------

    def job_cancel(self, job_id: int) -> JobStatus:
        """Cancel a pending or running job; returns the status it had. A running job's
        holder can then record nothing more: its lease is dead."""

        def cancel(tx: Tx) -> JobStatus:
            row = tx.one("job_lock", {"job_id": job_id})
            if row is None:
                raise JobNotFound(f"no job with id {job_id}")
            before: JobStatus = row["status"]
            if before in FINISHED:
                return before
            done = tx.all("job_cancel", self._p(job_id=job_id))
            if before == "running":
                keys = [(job_id, row["lease_token"])]
                self._bookkeep(tx, "cancel", keys, done, lambda _: "cancelled", "cancelled")
            self._after_finish(tx, done, "cancelled")
            return before

        return self._in_tx(cancel)

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
            done = tx.one("job_retry", self._p(job_id=job_id, extra=extra_attempts))
            if done is None:
                raise InvalidTransition(
                    f"job {job_id} is {row['status']}: only failed or cancelled jobs can be retried"
                )
            return done

        return self._job(self._in_tx(retry))

    def queue_purge(self, queue: str) -> int:
        """Delete every job of `queue`, its attempts, and the workflow runs its jobs
        belonged to; returns how many jobs went."""

        def purge(tx: Tx) -> int:
            tx.run("queue_purge", {"queue": queue})
            return tx.run("queue_purge_jobs", {"queue": queue})

        return self._in_tx(purge)

    # -- reads ---------------------------------------------------------------------

    def job_get(self, job_id: int) -> Job:
        """One job, or JobNotFound."""
        row = self._read(lambda tx: tx.one("job_get", {"job_id": job_id}))
        if row is None:
            raise JobNotFound(f"no job with id {job_id}")
        return self._job(row)

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
        return [self._job(r) for r in self._read(lambda tx: tx.all("job_list", params))]

    def job_counts(self) -> list[tuple[str, str, int]]:
        """(queue, status, count) for every queue and status present."""
        rows = self._read(lambda tx: tx.all("job_counts", {}))
        return [(r["queue"], r["status"], r["n"]) for r in rows]

    def attempt_list(self, job_id: int) -> list[Attempt]:
        """A job's attempts, oldest first."""
        rows = self._read(lambda tx: tx.all("attempt_list", {"job_id": job_id}))
        return [
            Attempt(
                job_id=r["job_id"],
                attempt=r["attempt"],
                token=r["token"],
                worker=r["worker"],
                started_at=_dt(r["started_at"]),
                ended_at=_dt_or_none(r["ended_at"]),
                outcome=r["outcome"],
                error=r["error"],
                rejected=r["rejected"],
            )
            for r in rows
        ]

    # -- workflow runs -------------------------------------------------------------

    def run_start(self, definition: Definition, data: dict[str, Any]) -> int:
        """Create a run and dispatch its first steps, in one transaction; its id."""
        from onceq.workflow.engine import start_run

        return self._in_tx(lambda tx: start_run(self, tx, definition, data))

    def run_cancel(self, run_id: int) -> str:
        """Cancel a running run; returns the status it had."""
        from onceq.workflow.engine import cancel_run

        before = self._in_tx(lambda tx: cancel_run(self, tx, run_id))
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
        return self._run(row, steps, counts)

    def run_list(self, *, limit: int = 50, offset: int = 0) -> list[Run]:
        """Runs, newest first (without their steps)."""
        rows = self._read(lambda tx: tx.all("run_list", {"limit": limit, "offset": offset}))
        return [self._run(r, [], []) for r in rows]

    def run_results(self, run_id: int, step: str) -> list[Any]:
        """The results of a step's jobs, in item order (None for unfinished ones)."""
        rows = self._read(lambda tx: tx.all("job_step_results", {"run_id": run_id, "step": step}))
        return [_json_or_raw(r["result"]) for r in rows]

    @staticmethod
    def _run(row: Row, steps: Sequence[Row], counts: Sequence[Row]) -> Run:
        order = list(jsoncodec.loads(row["definition"])["steps"])
        per_step: dict[str, dict[str, int]] = {}
        for c in counts:
            per_step.setdefault(c["step"], {})[c["status"]] = c["n"]
        states = sorted(steps, key=lambda s: order.index(s["step"]))
        return Run(
            id=row["id"],
            name=row["name"],
            status=row["status"],
            input=_json_or_raw(row["input"]),
            error=row["error"],
            created_at=_dt(row["created_at"]),
            finished_at=_dt_or_none(row["finished_at"]),
            steps=tuple(
                StepState(
                    name=s["step"],
                    status=s["status"],
                    total=s["total"],
                    counts=per_step.get(s["step"], {}),
                    error=s["error"],
                    started_at=_dt_or_none(s["started_at"]),
                    finished_at=_dt_or_none(s["finished_at"]),
                )
                for s in states
            ),
        )

    # -- workflow hook -------------------------------------------------------------

    def _cancel_orphaned_retries(self, tx: Tx, rows: Sequence[Row]) -> set[int]:
        """Workflow jobs just sent back to pending whose run has ended (it was cancelled
        while they ran) are cancelled instead of retried; returns their ids."""
        cancelled = set()
        for r in rows:
            if r["run_id"] is None:
                continue
            run = tx.one("run_status_for_retry", {"run_id": r["run_id"]})
            if run is not None and run["status"] != "running":
                tx.run("job_cancel_retry", self._p(job_id=r["id"]))
                cancelled.add(r["id"])
        return cancelled

    def _after_finish(self, tx: Tx, rows: Sequence[Row], status: str) -> None:
        """Advance the workflow runs of jobs that just reached a final status, in the same
        transaction that recorded it (the fan-in guarantee depends on it)."""
        flows = [r for r in rows if r["run_id"] is not None]
        if flows:
            from onceq.workflow.engine import on_jobs_finished

            on_jobs_finished(self, tx, flows, status)

    # -- helpers -------------------------------------------------------------------

    def _log_rejected(self, op: str, keys: Sequence[LeaseKey], kept: set[int]) -> None:
        for job_id, token in keys:
            if job_id not in kept:  # (callers pass the ids whose lease was kept)
                log.warning(
                    "stale %s rejected for job %s: lease %s is no longer held", op, job_id, token
                )

    @staticmethod
    def _job(row: Row) -> Job:
        return Job(
            id=row["id"],
            queue=row["queue"],
            task=row["task"],
            args=_json_or_raw(row["args"]),
            status=row["status"],
            priority=row["priority"],
            run_at=_dt(row["run_at"]),
            key=row["key"],
            attempts=row["attempts"],
            max_attempts=row["max_attempts"],
            lease_token=row["lease_token"],
            lease_expires_at=_dt_or_none(row["lease_expires_at"]),
            worker=row["worker"],
            result=_json_or_raw(row["result"]),
            last_error=row["last_error"],
            last_traceback=row["last_traceback"],
            created_at=_dt(row["created_at"]),
            started_at=_dt_or_none(row["started_at"]),
            finished_at=_dt_or_none(row["finished_at"]),
            run_id=row["run_id"],
            step=row["step"],
            item=row["item"],
        )


def schema_too_new(current: int, known: int) -> str:
    """The one-line refusal for a database migrated by a newer onceq."""
    return (
        f"the database schema is version {current}, newer than this onceq knows "
        f"(up to {known}): upgrade onceq"
    )


def _dt(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(value, UTC)


def _dt_or_none(value: Any) -> datetime | None:
    return None if value is None else _dt(value)


def _json_or_raw(text: str | None) -> Any:
    """Decode stored JSON; a value written around onceq that is not JSON is shown raw."""
    try:
        return jsoncodec.loads(text)
    except ValueError:
        return text
