"""The store's verbs for the dashboard: filtered keyset pages of jobs, a fan-out's items,
and bulk actions on everything a filter matches.

A bulk action is bounded twice: by the highest id the operator saw counted (jobs that
match later are not touched), and by batches of `BULK_BATCH` jobs, each its own short
transaction, so a retry of a hundred thousand jobs never holds a lock for long.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from onceq.errors import RunNotFound
from onceq.models import Job, JobFilter, JobStatus, StepItem
from onceq.store import rows
from onceq.store.transitions import CANCEL_PENDING, RETRY
from onceq.store.tx import Params, Row, Tx

BULK_BATCH = 500
NO_ID = 2**63 - 1  # above any id: the first page

Action = Literal["retry", "cancel"]
# What each bulk action applies to, and whether it leaves workflow jobs alone (a run's
# step decides what runs next: a retry of one of its jobs is refused, as by job_retry).
ACTIONS: dict[Action, tuple[tuple[JobStatus, ...], bool]] = {
    "retry": (("failed", "cancelled"), True),
    "cancel": (("pending", "running"), False),
}


@dataclass(frozen=True, slots=True)
class JobPage:
    """A page of jobs, newest first, and the cursors of the pages around it (None: there
    is none that way)."""

    jobs: list[Job]
    older: int | None  # pass as `before` for the next page
    newer: int | None  # pass as `after` for the page before


class ViewVerbs:
    """Mixed into Store: the dialect supplies _in_tx, _read and _time_param."""

    _in_tx: Callable[..., Any]
    _read: Callable[..., Any]
    _time_param: Callable[[datetime | None], Any]
    _cancel: Callable[[Tx, int], JobStatus]
    _transition: Callable[..., Any]
    _stats_reopen: Callable[[Tx, Any], None]

    def _filter_params(self, f: JobFilter) -> Params:
        return {
            "queue": f.queue,
            "task": f.task,
            "status": f.status,
            "run_id": f.run_id,
            "since": self._time_param(f.since),
            "until": self._time_param(f.until),
            "text": f.text or None,
        }

    def job_page(
        self,
        f: JobFilter,
        *,
        before: int | None = None,
        after: int | None = None,
        limit: int = 50,
    ) -> JobPage:
        """The jobs matching `f`, newest first: those below id `before`, or the page just
        above id `after` (keyset paging: as fast on the thousandth page as on the first)."""
        params = {**self._filter_params(f), "limit": limit + 1, "upto": NO_ID,
                  "statuses": None, "plain": False}  # fmt: skip
        if after is not None:
            found = self._read(lambda tx: tx.all("job_page_newer", {**params, "after": after}))
            more = len(found) > limit
            jobs = [rows.job(r) for r in reversed(found[:limit])]
            newer = jobs[0].id if more and jobs else None
            return JobPage(jobs, jobs[-1].id if jobs else None, newer)
        name = "job_page_failed" if f.status in ("failed", "cancelled") else "job_page"
        start = NO_ID if before is None else before
        found = self._read(lambda tx: tx.all(name, {**params, "before": start}))
        jobs = [rows.job(r) for r in found[:limit]]
        older = jobs[-1].id if len(found) > limit else None
        return JobPage(jobs, older, jobs[0].id if before is not None and jobs else None)

    def job_match_count(self, f: JobFilter, action: Action) -> tuple[int, int]:
        """How many jobs matching `f` the action applies to now, and the highest id
        among them (pass it to the action: what matches later is left alone)."""
        statuses, plain = ACTIONS[action]
        params = {**self._filter_params(f), "upto": NO_ID, "statuses": json.dumps(statuses),
                  "plain": plain}  # fmt: skip
        row = self._read(lambda tx: tx.one("job_match_count", params))
        return int(row["n"]), int(row["upto"] or 0)

    def job_bulk_retry(self, f: JobFilter, upto: int, extra_attempts: int = 1) -> int:
        """Retry every failed or cancelled job (not of a workflow) matching `f` with id up
        to `upto`, in batches; how many went back to pending."""
        if extra_attempts < 1:
            raise ValueError("extra_attempts must be at least 1")

        def retry(tx: Tx, ids: str) -> int:
            locked = tx.all("job_retry_many_lock", {"ids": ids})
            if not locked:
                return 0
            keep = json.dumps([r["id"] for r in locked])
            done = tx.all("job_retry_many", {"ids": keep, "extra": extra_attempts})
            self._transition(tx, RETRY, done)
            self._stats_reopen(tx, locked)
            return len(done)

        return self._bulk(f, upto, "retry", lambda ids: self._in_tx(
            lambda tx: retry(tx, json.dumps(ids)), ("bulk_retry",)))  # fmt: skip

    def job_bulk_cancel(self, f: JobFilter, upto: int) -> int:
        """Cancel every pending or running job matching `f` with id up to `upto`, in
        batches; how many were cancelled. A running one's holder can record nothing more.
        A job is cancelled in the status the filter asks for, whatever it was listed in:
        one that a worker started between the listing and the cancel is spared by a
        filter of pending jobs (its result would be thrown away)."""
        statuses = ACTIONS["cancel"][0] if f.status is None else (f.status,)

        def cancel(ids: list[int]) -> int:
            listed = json.dumps(ids)
            running: list[Row] = []
            if "running" in statuses:
                running = self._read(lambda tx: tx.all("job_running_of", {"ids": listed}))
            n = 0
            for r in running:  # one at a time, as job_cancel: few run at once
                before = self._in_tx(lambda tx, i=r["id"]: self._cancel(tx, i), ("cancel",))
                n += before in ("pending", "running")

            def pending(tx: Tx) -> int:
                done = tx.all("job_cancel_many", {"ids": listed})
                self._transition(tx, CANCEL_PENDING, done)
                return len(done)

            if "pending" not in statuses:
                return n
            return n + int(self._in_tx(pending, ("bulk_cancel",)))

        return self._bulk(f, upto, "cancel", cancel)

    def _bulk(
        self, f: JobFilter, upto: int, action: Action, act: Callable[[list[int]], int]
    ) -> int:
        statuses, plain = ACTIONS[action]
        params = {**self._filter_params(f), "upto": upto, "statuses": json.dumps(statuses),
                  "plain": plain, "limit": BULK_BATCH}  # fmt: skip
        before, done = upto + 1, 0
        while True:
            found = self._read(lambda tx, b=before: tx.all("job_page", {**params, "before": b}))
            if not found:
                return done
            ids = [r["id"] for r in found]
            before = min(ids)
            done += act(ids)

    def step_items(self, run_id: int, step: str, first: int = 0, limit: int = 50) -> list[StepItem]:
        """A step's items from item `first` on, with their jobs (a plain step: its job)."""
        params = {"run_id": run_id, "step": step, "first": first, "limit": limit}

        def read(tx: Tx) -> list[Row]:
            return tx.all("step_items", params) or tx.all("step_jobs", params)

        return [
            StepItem(r["item"], rows.json_or_raw(r["args"]), r["error"], r["job_id"], r["status"])
            for r in self._read(read)
        ]

    def run_definition(self, run_id: int) -> Any:
        """A run's definition as stored (JSON: its steps and their edges)."""
        row = self._read(lambda tx: tx.one("run_get", {"run_id": run_id}))
        if row is None:
            raise RunNotFound(f"no workflow run with id {run_id}")
        return rows.json_or_raw(row["definition"])
