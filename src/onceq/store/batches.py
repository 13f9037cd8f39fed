"""The store's verbs for code-task batches (onceq.batch): the batch's rows, its pool of
worktree slots and its merge queue's turn.

A batch's tasks run as the jobs of one workflow run, so a task's lease is its job's
lease. Every write a task's job makes here is fenced by it: the job row is read (and, on
PostgreSQL, share-locked, so a rescue of that job waits) in the same transaction, and
nothing is written once the job no longer runs under that token. A worktree slot or the
merge turn is held by such a lease: when the job is rescued, re-claimed or ended, the
slot and the turn are free again without anyone releasing them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from onceq.errors import BatchError, LeaseLost, OnceqError
from onceq.models import BatchRecord
from onceq.store import rows
from onceq.store.tx import LeaseKey, Params, Row, Tx

# What a new run of a batch is made of: (name, definition JSON, input, step names), from
# the numbers of the tasks still to merge, by batch number.
RunMaker = Callable[[dict[int, list[str]]], tuple[str, str, Any, list[str]]]


@dataclass(frozen=True, slots=True)
class NewBatch:
    name: str
    repo: str
    base: str
    base_start: str
    definition: str
    tasks: Sequence[Params]  # number, title, batch_no, position, branch
    slots: Sequence[tuple[int, str]]  # (slot, path)


class BatchVerbs:
    """Mixed into Store: the dialect supplies _in_tx, _read and _start_run."""

    _in_tx: Callable[..., Any]
    _read: Callable[..., Any]
    _start_run: Callable[[Tx, str, str, Any, Sequence[str]], int]

    def batch_submit(self, new: NewBatch, make_run: RunMaker) -> tuple[int | None, bool]:
        """Create a batch, or take up one of that name again, in one transaction: its
        rows, its slots, and a run for its unmerged tasks unless one still runs. Returns
        (the run to wait for, or None when every task is merged; whether it is new)."""

        def submit(tx: Tx) -> tuple[int | None, bool]:
            made = tx.run("batch_insert", {"name": new.name, "repo": new.repo, "base": new.base,
                                           "base_start": new.base_start,
                                           "definition": new.definition})  # fmt: skip
            found = None if made else tx.one("batch_lock", {"name": new.name})
            if found is None:
                tx.one("batch_lock", {"name": new.name})
            elif (found["repo"], found["base"]) != (new.repo, new.base):
                raise OnceqError(
                    f"batch {new.name!r} exists for {found['repo']} (base {found['base']}): "
                    "give this one another name"
                )
            else:
                tx.run("batch_set_definition", {"name": new.name, "definition": new.definition})
            known = {r["number"]: r for r in tx.all("batch_tasks", {"name": new.name})}
            wanted = {t["number"] for t in new.tasks}
            current = found["run_id"] if found else None
            run = tx.one("run_get", {"run_id": current}) if current is not None else None
            running = run is not None and run["status"] == "running"
            if running and wanted != set(known):
                added, removed = sorted(wanted - set(known)), sorted(set(known) - wanted)
                change = "; ".join(
                    [f"adds {', '.join(added)}"] * bool(added)
                    + [f"drops {', '.join(removed)}"] * bool(removed)
                )
                raise BatchError(
                    f"batch {new.name!r} is still running (run {current}) and "
                    f"this file {change}: run the file it started with to its end first"
                )
            for number, row in known.items():  # no longer in the file: forgotten
                if number not in wanted and row["status"] != "merged":
                    tx.run("batch_task_delete", {"name": new.name, "number": number})
            for task in new.tasks:
                tx.run("batch_task_insert", {"name": new.name, **task})
            for slot, path in new.slots:
                tx.run("batch_slot_insert", {"name": new.name, "slot": slot, "path": path})
            if running:
                return current, False  # it goes on: its jobs are still there
            tx.run("batch_tasks_reopen", {"name": new.name})
            todo: dict[int, list[str]] = {}
            for row in tx.all("batch_tasks", {"name": new.name}):
                if row["status"] != "merged":
                    todo.setdefault(row["batch_no"], []).append(row["number"])
            if not todo:
                return None, False
            run_id = self._start_run(tx, *make_run(todo))
            tx.run("batch_set_run", {"name": new.name, "run_id": run_id})
            return run_id, True

        result: tuple[int | None, bool] = self._in_tx(submit, ("batch_submit",))
        return result

    def batch_get(self, name: str) -> BatchRecord | None:
        """A batch with its tasks in file order, or None."""

        def read(tx: Tx) -> BatchRecord | None:
            row = tx.one("batch_get", {"name": name})
            if row is None:
                return None
            run = tx.one("run_get", {"run_id": row["run_id"]}) if row["run_id"] else None
            tasks, slots = (
                tx.all("batch_tasks", {"name": name}),
                tx.all("batch_slots", {"name": name}),
            )
            return rows.batch(
                row, tasks, run["status"] if run else None, [s["path"] for s in slots]
            )

        record: BatchRecord | None = self._read(read)
        return record

    def batch_list(self) -> list[tuple[BatchRecord, dict[str, int]]]:
        """Every batch (without its tasks) and how many of its tasks are in each status."""

        def read(tx: Tx) -> tuple[list[Row], list[Row]]:
            return tx.all("batch_list", {}), tx.all("batch_task_counts", {})

        found, counts = self._read(read)
        by_batch: dict[str, dict[str, int]] = {}
        for c in counts:
            by_batch.setdefault(c["batch"], {})[c["status"]] = c["n"]
        return [
            (rows.batch({**r, "base_start": "", "definition": "{}"}, [], r["run_status"], []),
             by_batch.get(r["name"], {}))
            for r in found
        ]  # fmt: skip

    def batch_settle(self, name: str) -> None:
        """After its run has ended, no task of the batch is left looking in progress."""

        def settle(tx: Tx) -> None:
            row = tx.one("batch_lock", {"name": name})
            run = tx.one("run_get", {"run_id": row["run_id"]}) if row and row["run_id"] else None
            if run is None or run["status"] == "running":
                return
            reason = run["error"] or f"the batch's run was {run['status']}"
            tx.run("batch_tasks_settle", {"name": name, "reason": reason,
                                          "skipped": f"not started: {reason}"})  # fmt: skip

        self._in_tx(settle, ("batch_settle",))

    def batch_delete(self, name: str) -> bool:
        """Forget a batch (its tasks and slots with it); False if there was none."""

        def delete(tx: Tx) -> bool:
            for query in ("batch_slots_delete", "batch_tasks_delete"):
                tx.run(query, {"name": name})
            return bool(tx.run("batch_delete", {"name": name}))

        done: bool = self._in_tx(delete, ("batch_delete",))
        return done

    # -- the writes of a task's job, fenced by its lease -------------------------------

    def batch_task_update(
        self, name: str, number: str, lease: LeaseKey, *, turn_done: bool = False, **state: Any
    ) -> None:
        """Record where a task stands (every field of batch_task_update), and with
        `turn_done` give the merge turn back in the same transaction; LeaseLost if the
        job no longer holds this lease."""
        params = {"name": name, "number": number, **state}
        turn = {"name": name, "job_id": lease[0], "token": lease[1]}

        def update(tx: Tx) -> None:
            tx.run("batch_task_update", params)
            if turn_done:
                tx.run("batch_merge_free", turn)

        self._fenced(name, lease, update, "batch_task")

    def batch_slot_take(self, name: str, lease: LeaseKey) -> tuple[int, str] | None:
        """A worktree slot for this lease: the one it holds already, else a free one (its
        holder's lease is gone, or it never had one); None when every slot is held."""

        def take(tx: Tx) -> tuple[int, str] | None:
            tx.one("batch_lock", {"name": name})
            free = None
            for s in tx.all("batch_slots", {"name": name}):
                if (s["job_id"], s["token"]) == lease:
                    return s["slot"], s["path"]
                if not s["live"] and free is None:
                    free = s
            if free is None:
                return None
            tx.run("batch_slot_hold", {"name": name, "slot": free["slot"],
                                       "job_id": lease[0], "token": lease[1]})  # fmt: skip
            return free["slot"], free["path"]

        found: tuple[int, str] | None = self._fenced(name, lease, take, "batch_slot")
        return found

    def batch_slot_free(self, name: str, slot: int, lease: LeaseKey) -> None:
        """Give a slot back (its holder's job ending frees it too)."""
        params = {"name": name, "slot": slot, "job_id": lease[0], "token": lease[1]}
        self._in_tx(lambda tx: tx.run("batch_slot_free", params), ("batch_slot",))

    def batch_merge_take(self, name: str, lease: LeaseKey) -> bool:
        """The merge queue's turn for this lease, if nobody live has it."""

        def take(tx: Tx) -> bool:
            holder = tx.one("batch_merge_holder", {"name": name})
            assert holder is not None
            if (holder["merge_job"], holder["merge_token"]) == lease:
                return True
            if holder["live"]:
                return False
            tx.run("batch_merge_hold", {"name": name, "job_id": lease[0], "token": lease[1]})
            return True

        taken: bool = self._fenced(name, lease, take, "batch_merge")
        return taken

    def batch_merge_free(self, name: str, lease: LeaseKey) -> None:
        """Give the merge turn back (its holder's job ending frees it too)."""
        params = {"name": name, "job_id": lease[0], "token": lease[1]}
        self._in_tx(lambda tx: tx.run("batch_merge_free", params), ("batch_merge",))

    def _fenced(self, name: str, lease: LeaseKey, fn: Callable[[Tx], Any], label: str) -> Any:
        params = {"name": name, "job_id": lease[0], "token": lease[1]}

        def fenced(tx: Tx) -> Any:
            if tx.one("job_lease_live", params) is None:
                raise LeaseLost(f"job {lease[0]} no longer runs under lease {lease[1]} "
                                f"for batch {name!r}")  # fmt: skip
            return fn(tx)

        return self._in_tx(fenced, (label,))
