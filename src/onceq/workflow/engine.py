"""Advancing workflow runs, inside the transaction that records a job's outcome.

The store calls this engine (it registers itself: the store does not import it) from
its one transition path, with the run's row locked, for every workflow job that reached
a final status, and once when a run starts.

Bug 2 of SPEC.md was a fan-in that read "how many siblings remain" outside the
transaction recording a completion: items finishing together each saw themselves as
the last one and each dispatched the successor. Here, for every job that reaches a
final status:

1. the job's new status is written (by the store, in this transaction);
2. the store locks the run's row (PostgreSQL: FOR UPDATE, under READ COMMITTED, so the
   next statement sees everything committed before the lock was granted; SQLite: the
   transaction already holds the only write lock), so completions of one run advance it
   one at a time, each seeing what the ones before it committed;
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
from typing import Any

from onceq.errors import WorkflowError
from onceq.store import jsoncodec, stats
from onceq.store.transitions import Change, set_run_engine
from onceq.store.tx import Row, Tx
from onceq.workflow import refs
from onceq.workflow.model import Definition

log = logging.getLogger("onceq.workflow")
# A fan-out's items go in by statements of this many: each well under a worker's
# statement bound, however long the list (the transaction has no such bound).
ITEMS_PER_STATEMENT = 5000


class Engine:
    """The store's RunEngine: starts runs and advances them as their jobs finish."""

    def run_started(self, tx: Tx, run: Row) -> None:
        """Start the root steps of a run whose rows were just inserted."""
        state = _Run(tx, run)
        for name in state.definition.roots():
            state.start_step(name)
        state.settle()

    def jobs_finished(self, tx: Tx, run: Row, changes: Sequence[Change]) -> None:
        """Jobs of `run` (locked, running) reached a final status: record what failed,
        start more items or the steps that follow, end the run once nothing runs."""
        state = _Run(tx, run)
        for c in changes:
            assert c.step is not None and c.item is not None
            state.job_finished(c.step, c.item, c.job_id, c.status)
        for step in dict.fromkeys(c.step for c in changes if c.step is not None):
            state.advance(step)  # once per step, however many of its jobs just finished
        state.settle()


set_run_engine(Engine())


class _Run:
    """One run's state within one transaction (the run's row is locked).

    What a completion reads does not grow with the size of a fan-out: the step rows, a
    count of the step's active jobs, and the row of each item it dispatches — whose job
    arguments were resolved when the step started (every reference but `$item` points
    at data that is final by then: the input, and steps that have succeeded)."""

    def __init__(self, tx: Tx, run: Row) -> None:
        self.tx, self.id = tx, run["id"]
        self.definition = _definition(run["definition"])
        self.steps = {r["step"]: dict(r) for r in tx.all("step_list", {"run_id": self.id})}
        self._input: Any = None  # read on first use: it may hold a whole fan-out list
        self._results: dict[str, list[Any]] = {}  # finished steps' results, read once

    # -- events --------------------------------------------------------------------

    def job_finished(self, step: str, item: int, job_id: int, status: str) -> None:
        """A job of `step` reached a final status: a failure becomes the step's error."""
        state = self.steps[step]
        if state["status"] != "running":
            return
        if status != "succeeded" and state["error"] is None:
            job = self.tx.one("job_error", {"job_id": job_id})
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
        legacy = None  # the list as schema v1 workers read it, during an upgrade
        if items:
            self._store_items(name, items)
            legacy = jsoncodec.dumps(items, f"items of step {name}")
        params = {"run_id": self.id, "step": name, "items": legacy, "total": total}
        self.tx.run("step_start", params)
        state.update(status="running", total=total)
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
        self.tx.run("run_finish", {"run_id": self.id, "status": status, "error": error})

    # -- steps ---------------------------------------------------------------------

    def _store_items(self, step: str, items: list[Any]) -> None:
        """Resolve the job arguments of every item of a fan-out and store them, one row
        each, up to the first item whose arguments cannot be resolved (its row holds
        why: the step fails when its turn comes, after the items before it ran)."""
        payloads: list[str] = []
        error = None
        for value in items:
            try:
                payloads.append(self._payload(step, value))
            except Exception as exc:  # a reference into data that is not there
                error = f"item {len(payloads)}: {exc}"
                break
        params = {"run_id": self.id, "step": step}
        for start in range(0, len(payloads), ITEMS_PER_STATEMENT):
            chunk = payloads[start : start + ITEMS_PER_STATEMENT]
            self.tx.run("step_items_insert", {**params, "first": start, "items": json.dumps(chunk)})
        if error is not None:
            self.tx.run("step_item_error_insert", {**params, "item": len(payloads), "error": error})

    def _payload(self, step: str, value: Any) -> str:
        args = self._resolve(self.definition.steps[step].args, value)
        return jsoncodec.dumps(args, f"arguments of step {step}")

    def _dispatch(self, step: str, item: int) -> bool:
        """Insert the job of one item; False (and the step fails) if its arguments
        could not be resolved."""
        spec = self.definition.steps[step]
        if spec.with_items is not None:
            params = {"run_id": self.id, "step": step, "item": item}
            row = self.tx.one("step_item_get", params)
            if row is None:  # a step that was running when the schema moved to v2
                self._store_legacy_items(step)
                row = self.tx.one("step_item_get", params)
            assert row is not None, f"run {self.id} step {step}: no item {item}"
            payload, error = row["args"], row["error"]
        else:
            try:
                payload, error = self._payload(step, None), None
            except Exception as exc:
                payload, error = None, f"item {item}: {exc}"
        if error is not None:
            self._set_error(step, error)
            return False
        inserted = self.tx.one("job_dispatch", {
            "queue": spec.queue, "task": spec.task, "args": payload, "priority": spec.priority,
            "max_attempts": spec.max_attempts, "run_id": self.id, "step": step, "item": item,
        })  # fmt: skip
        if inserted is None:  # the unique index held: this item was dispatched already
            log.error("run %s step %s item %s: second dispatch refused", self.id, step, item)
            stats.add(self.tx, [(spec.queue or "", spec.task, "dispatch_suppressed", 1)])
        return True

    def _finish(self, name: str, status: str) -> None:
        self.tx.run("step_finish", {"run_id": self.id, "step": name, "status": status})
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

    def _store_legacy_items(self, step: str) -> None:
        row = self.tx.one("step_items_legacy", {"run_id": self.id, "step": step})
        assert row is not None and row["items"] is not None, f"step {step} has no items"
        self._store_items(step, json.loads(row["items"]))

    def _start_failed(self, name: str, error: str) -> None:
        self.tx.run("step_start", {"run_id": self.id, "step": name, "items": None, "total": 0})
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
                if self._input is None:
                    row = self.tx.one("run_input", {"run_id": self.id})
                    assert row is not None
                    self._input = jsoncodec.loads(row["input"])
                return self._input
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
