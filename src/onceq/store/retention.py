"""The store's verbs for retention: finished jobs and runs deleted in small batches, and
the leased rows that let one worker at a time do such a duty for all.

What goes: finished jobs outside workflow runs (succeeded, failed, cancelled) that
finished more than `older_than` seconds ago, with their attempts; workflow runs that
ended that long ago, with their jobs, steps and fan-out items. Never a pending or
running job, never a running run (nor a finished job of one: its run still reads it).
A pruned job's idempotency key is free again.

Each `prune_batch` is one transaction that deletes at most `limit` rows of each kind,
oldest first: it holds SQLite's write lock, or PostgreSQL's row locks, briefly, and
workers keep running between batches. What a batch deletes passes `_pruned` in the same
transaction: the one place where counters that must outlive the rows fold them in. Only
jobs the dashboard's totals have folded are deleted (store/stats.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from onceq.store.tx import Row, Tx

PruneKey = tuple[str, str, str]  # (queue, task, status) of a deleted job


@dataclass(slots=True)
class Pruned:
    """What pruning deleted: jobs (with their attempts) counted by queue, task and
    status, workflow runs, and fan-out items. `done`: nothing more was old enough (the
    last batch deleted less than it could)."""

    jobs: dict[PruneKey, int] = field(default_factory=dict)
    runs: int = 0
    items: int = 0
    done: bool = True
    seconds: float = 0.0  # spent in its transactions (and its fold: store/stats.py)

    @property
    def job_count(self) -> int:
        return sum(self.jobs.values())

    def add(self, other: Pruned) -> None:
        """Fold another batch's counts into these."""
        for key, n in other.jobs.items():
            self.jobs[key] = self.jobs.get(key, 0) + n
        self.runs += other.runs
        self.items += other.items
        self.done = other.done
        self.seconds += other.seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "jobs": self.job_count,
            "runs": self.runs,
            "items": self.items,
            "by_status": {
                s: sum(n for (_, _, st), n in self.jobs.items() if st == s)
                for s in sorted({st for _, _, st in self.jobs})
            },
        }


class RetentionVerbs:
    """Mixed into Store: the dialect supplies _in_tx and _read; StatsVerbs, the fold."""

    _in_tx: Callable[..., Any]
    _read: Callable[..., Any]
    stats_fold: Callable[..., int]
    _stats_pruned: Callable[[Tx, Mapping[PruneKey, int]], None]

    def prune_batch(self, older_than: float, limit: int = 2000) -> Pruned:
        """One transaction of retention: up to `limit` finished jobs outside runs, then,
        in what is left of `limit`, jobs of ended runs, their fan-out items, and the
        runs left without jobs. `done` when it found less than `limit` to delete.

        Only jobs the dashboard's totals have folded already are deleted (their rows are
        no longer needed to count them: store/stats.py), so while a job old enough to go
        is not folded yet, each batch first folds the next part of the history, in a
        transaction of its own, and a pass is not `done` before it is. The newest
        history is not folded here: a fleet finishing jobs at full speed kept retention
        folding it without end, at its full share of the time (a third of a SQLite
        fleet's throughput); dashboards fold it when they read."""
        if older_than < 0 or limit < 1:
            raise ValueError("older_than must be >= 0 and limit >= 1")
        params = {"older_than": float(older_than)}
        folding = time.perf_counter()
        behind = False
        unfolded = self._read(lambda tx: tx.one("prune_unfolded", params))
        if unfolded is not None and unfolded["needed"]:
            behind = self.stats_fold() > 0
        folding = time.perf_counter() - folding

        def prune(tx: Tx) -> Pruned:
            started = time.perf_counter()
            out = Pruned()
            left = limit
            for name in ("job_prune", "run_jobs_prune"):
                if left > 0:
                    left -= _count(tx.all(name, {**params, "limit": left}), out.jobs)
            if left > 0:
                out.items = tx.run("step_items_prune", {**params, "limit": left})
                left -= out.items
            if left > 0:
                out.runs = len(tx.all("run_prune", {**params, "limit": left}))
                left -= out.runs
            out.done = left > 0 and not behind
            tx.run("slot_reap", {})  # slots of keys no claim has come back to
            self._pruned(tx, out.jobs)
            out.seconds = time.perf_counter() - started + folding
            return out

        result: Pruned = self._in_tx(prune, ("prune",))
        return result

    def _pruned(self, tx: Tx, jobs: Mapping[PruneKey, int]) -> None:
        """Jobs a prune is deleting, by (queue, task, status), in its transaction: the
        dashboard's totals keep them, its gauge forgets them."""
        self._stats_pruned(tx, jobs)

    # -- duties one worker does for all ------------------------------------------------

    def maintenance_take(self, name: str, holder: str, lease: float) -> bool:
        """Hold the duty `name` for `lease` seconds: True if `holder` holds it already
        (the lease is extended), or it is due and free (or its holder's lease ran out)."""
        params = {"name": name, "holder": holder, "lease": float(lease)}

        def take(tx: Tx) -> bool:
            tx.run("maintenance_insert", {"name": name})
            return tx.one("maintenance_take", params) is not None

        taken: bool = self._in_tx(take, ("maintenance",))
        return taken

    def maintenance_done(self, name: str, holder: str, every: float) -> None:
        """`holder`'s pass of `name` is over: the duty is free, and due in `every` s."""
        params = {"name": name, "holder": holder, "every": float(every)}
        self._in_tx(lambda tx: tx.run("maintenance_done", params), ("maintenance",))


def _count(found: list[Row], into: dict[PruneKey, int]) -> int:
    """Add deleted-job rows (queue, task, status, n) into `into`; how many jobs."""
    total = 0
    for r in found:
        key = (r["queue"], r["task"], r["status"])
        into[key] = into.get(key, 0) + r["n"]
        total += r["n"]
    return total
