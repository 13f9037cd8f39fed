"""Advancing workflow runs, inside the transaction that records a job's outcome.

Bug 2 of SPEC.md was a fan-in that read "how many siblings remain" outside the
transaction recording a completion: items finishing together each saw themselves as
the last one and each dispatched the successor. Here, for every job that reaches a
final status:

1. the job's new status is written (by the store, in this transaction);
2. the run's row is locked (PostgreSQL: FOR UPDATE; SQLite: the transaction already
   holds the only write lock), so completions of one run advance it one at a time,
   each seeing what the ones before it committed;
3. what remains of the step is counted from the job rows, the next items start up to
   the step's concurrency, and a step that is done starts every successor whose
   predecessors have all succeeded;
4. every dispatch inserts a job under the unique (run, step, item) index, so a second
   dispatch of the same item cannot happen: it would insert nothing.

The lock makes a duplicate dispatch impossible by timing; the index makes it impossible
by construction, should the logic above ever be wrong.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from onceq.errors import WorkflowError
from onceq.store import jsoncodec
from onceq.workflow import refs
from onceq.workflow.model import Definition

if TYPE_CHECKING:
    from onceq.store.base import Row, Store, Tx

log = logging.getLogger("onceq.workflow")


def start_run(store: Store, tx: Tx, definition: Definition, data: dict[str, Any]) -> int:
    """Create a run (one row per step) and start its root steps; returns its id."""
    row = tx.one("run_insert", store._p(
        name=definition.name,
        definition=definition.model_dump_json(),
        input=jsoncodec.dumps(data, f"input of workflow {definition.name}"),
    ))  # fmt: skip
    assert row is not None
    run_id: int = row["id"]
    for name in definition.steps:
        tx.run("step_insert", {"run_id": run_id, "step": name})
    run = _Run(store, tx, run_id, definition, data)
    for name in definition.roots():
        run.start_step(name)
    run.settle()
    return run_id


def on_jobs_finished(store: Store, tx: Tx, rows: Sequence[Row], status: str) -> None:
    """Advance the runs of workflow jobs that just reached `status` (a final one)."""
    by_run: dict[int, list[Row]] = {}
    for r in rows:
        by_run.setdefault(r["run_id"], []).append(r)
    for run_id in sorted(by_run):  # one lock order for every transaction
        locked = tx.one("run_lock", {"run_id": run_id})
        if locked is None or locked["status"] != "running":
            continue  # a cancelled run: its running jobs finish, and nothing follows
        run = _Run(store, tx, run_id, _definition(locked["definition"]),
                   json.loads(locked["input"]))  # fmt: skip
        for r in by_run[run_id]:
            run.job_finished(r["step"], r["item"], r["id"], status)
        for step in dict.fromkeys(r["step"] for r in by_run[run_id]):
            run.advance(step)  # once per step, however many of its jobs just finished
        run.settle()


def cancel_run(store: Store, tx: Tx, run_id: int) -> str | None:
    """Cancel a run: pending jobs are cancelled, running ones finish without advancing it
    (and are not retried). Returns the status it had, or None when there is no such run.

    Lock order as everywhere else, job rows before the run's row: the pending jobs are
    cancelled first, then the run is locked, then any job that became pending meanwhile
    (a retry, or a dispatch that committed first) is cancelled too.
    """
    tx.all("run_cancel_jobs", store._p(run_id=run_id))
    locked = tx.one("run_lock", {"run_id": run_id})
    if locked is None:
        return None
    before: str = locked["status"]
    if before != "running":
        return before
    tx.all("run_cancel_jobs", store._p(run_id=run_id))
    tx.run("step_cancel_open", store._p(run_id=run_id))
    tx.run("run_finish", store._p(run_id=run_id, status="cancelled", error="cancelled"))
    return before


class _Run:
    """One run's state within one transaction (the run's row is locked)."""

    def __init__(
        self, store: Store, tx: Tx, run_id: int, definition: Definition, data: dict[str, Any]
    ) -> None:
        self.store, self.tx, self.id = store, tx, run_id
        self.definition = definition
        self.input = data
        self.steps = {r["step"]: dict(r) for r in tx.all("step_list", {"run_id": run_id})}
        self._items: dict[str, list[Any]] = {}  # each step's fan-out list, parsed once
        self._results: dict[str, list[Any]] = {}  # finished steps' results, read once

    # -- events --------------------------------------------------------------------

    def job_finished(self, step: str, item: int, job_id: int, status: str) -> None:
        """A job of `step` reached a final status: a failure becomes the step's error."""
        state = self.steps[step]
        if state["status"] != "running":
            return
        if status != "succeeded" and state["error"] is None:
            job = self.tx.one("job_get", {"job_id": job_id})
            detail = (job["last_error"] if job else None) or status
            label = f"item {item}" if self.definition.steps[step].with_items else "job"
            self._set_error(step, f"{label} (job {job_id}) {status}: {detail}")

    def advance(self, step: str) -> None:
        """Start more items while it may; finish the step once nothing is active."""
        state = self.steps[step]
        if state["status"] != "running":
            return
        progress = self.tx.one("job_step_progress", {"run_id": self.id, "step": step})
        assert progress is not None
        active: int = progress["active"]
        dispatched: int = progress["dispatched"]
        total: int = state["total"]
        if state["error"] is None and dispatched < total:
            room = (self.definition.steps[step].concurrency or total) - active
            for item in range(dispatched, min(total, dispatched + max(0, room))):
                if not self._dispatch(step, item):
                    break  # its arguments cannot be resolved: the step fails
                active += 1
        if active:
            return
        # Nothing active: every dispatched job is final, and any that did not succeed
        # set the step's error.
        if state["error"] is not None:
            self._finish(step, "failed")
        elif dispatched == total:
            self._finish(step, "succeeded")

    def start_step(self, name: str) -> None:
        """Start a waiting step: resolve its fan-out, dispatch its first items."""
        state = self.steps[name]
        if state["status"] != "waiting":
            return  # already started: a step starts once
        step = self.definition.steps[name]
        items: list[Any] | None = None
        total = 1
        if step.with_items is not None:
            try:
                found = self._resolve(step.with_items, None)
            except WorkflowError as exc:
                self._start_failed(name, str(exc))
                return
            if not isinstance(found, list):
                self._start_failed(name, f"with_items {step.with_items!r} of step {name!r} "
                                         f"is not a list (got {_kind(found)})")  # fmt: skip
                return
            items, total = found, len(found)
        items_json = None if items is None else jsoncodec.dumps(items, f"items of step {name}")
        self.tx.run("step_start", self.store._p(
            run_id=self.id, step=name, items=items_json, total=total))  # fmt: skip
        state.update(status="running", items=items_json, total=total)
        if total == 0:
            self._finish(name, "succeeded")  # an empty fan-out succeeds at once, with []
            return
        self.advance(name)

    def settle(self) -> None:
        """End the run once no step is running: failed if any step failed."""
        if any(s["status"] == "running" for s in self.steps.values()):
            return
        self.tx.run("step_close_waiting", {"run_id": self.id, "status": "skipped"})
        order = self.definition.order()
        failed = [n for n in order if self.steps[n]["status"] == "failed"]
        status = "failed" if failed else "succeeded"
        error = f"step {failed[0]!r} failed: {self.steps[failed[0]]['error']}" if failed else None
        self.tx.run("run_finish", self.store._p(run_id=self.id, status=status, error=error))

    # -- steps ---------------------------------------------------------------------

    def _dispatch(self, step: str, item: int) -> bool:
        """Insert the job of one item; False (and the step fails) if its arguments
        cannot be resolved."""
        spec = self.definition.steps[step]
        state = self.steps[step]
        value = None
        if spec.with_items is not None:
            if step not in self._items:
                self._items[step] = json.loads(state["items"])
            value = self._items[step][item]
        try:
            args = self._resolve(spec.args, value)
            payload = jsoncodec.dumps(args, f"arguments of step {step}")
        except Exception as exc:  # a reference into data that is not there
            self._set_error(step, f"item {item}: {exc}")
            return False
        inserted = self.tx.one("job_dispatch", self.store._p(
            queue=spec.queue, task=spec.task, args=payload, priority=spec.priority,
            max_attempts=spec.max_attempts, run_id=self.id, step=step, item=item,
        ))  # fmt: skip
        if inserted is None:  # the unique index held: this item was dispatched already
            log.error("run %s step %s item %s: second dispatch refused", self.id, step, item)
        return True

    def _finish(self, name: str, status: str) -> None:
        self.tx.run("step_finish", self.store._p(run_id=self.id, step=name, status=status))
        self.steps[name]["status"] = status
        step = self.definition.steps[name]
        if status == "succeeded":
            for target in step.next:
                if all(
                    self.steps[p]["status"] == "succeeded" for p in self.definition.preds[target]
                ):
                    self.start_step(target)  # a join: the last predecessor starts it
        else:
            for target in step.on_failure:
                self.start_step(target)

    def _start_failed(self, name: str, error: str) -> None:
        self.tx.run("step_start", self.store._p(
            run_id=self.id, step=name, items=None, total=0))  # fmt: skip
        self.steps[name].update(status="running", total=0)
        self._set_error(name, error)
        self._finish(name, "failed")

    def _set_error(self, name: str, error: str) -> None:
        self.tx.run("step_set_error", {"run_id": self.id, "step": name, "error": error})
        if self.steps[name]["error"] is None:
            self.steps[name]["error"] = error

    # -- references ----------------------------------------------------------------

    def _resolve(self, value: Any, item: Any) -> Any:
        def lookup(ref: refs.Ref) -> Any:
            if ref.root == "input":
                return self.input
            if ref.root == "item":
                return item
            assert ref.step is not None
            if ref.step not in self._results:  # it has succeeded: its results are final
                self._results[ref.step] = [jsoncodec.loads(r["result"]) for r in self.tx.all(
                    "job_step_results", {"run_id": self.id, "step": ref.step})]  # fmt: skip
            results = self._results[ref.step]
            return results if ref.field == "results" else results[0]

        return refs.resolve(value, lookup)


@functools.lru_cache(maxsize=256)
def _definition(text: str) -> Definition:
    """A run's stored definition, parsed once per process (it never changes)."""
    return Definition.model_validate_json(text)


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {json.dumps(value)[:40]}"
