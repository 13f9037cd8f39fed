"""Retention: finished jobs and runs older than the app's `retention` are deleted, by
the workers themselves (one at a time) and by `onceq prune`.

A pass deletes in small batches (`Store.prune_batch`, one short transaction each) and,
while jobs are waiting, pauses between them so that it spends at most `duty` of the
time in its transactions — on SQLite, holding the one write lock every worker needs:
the fleet keeps its pace while a backlog of months goes. With no job waiting it goes
on at once. One worker at a time prunes: the pass is a duty leased in the store
(`maintenance_take`), due again `every` seconds after the last one ended, and taken
over by another worker if its holder dies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from onceq import logs
from onceq.store import Store
from onceq.store.retention import Pruned

log = logging.getLogger("onceq.retention")

DUTY = "prune"
PRUNE_EVERY = 60.0  # seconds between the end of a pass and the next one, store-wide
CHECK_EVERY = 30.0  # how often each worker looks whether a pass is due
LEASE = 60.0  # how long a holder keeps the duty without renewing it
BATCH = 2000  # rows per transaction: ~20 ms of work (more rows per second than 500 at once)
# While jobs wait: the share of the time a pass may spend in its transactions. On SQLite
# that time is what it costs the workers (the one write lock, held); on PostgreSQL a
# delete also costs what its transaction does not show (WAL, autovacuum of the dead
# rows), so less: on a 2-core machine, pruning a 1M-job backlog at 10% halved a fleet's
# throughput; at 3% the fleet kept the pace it had with the backlog left alone
# (benchmarks/retention.py).
DUTY_CYCLE = {"sqlite": 0.10, "postgres": 0.03}


def prune(store: Store, older_than: float, *, limit: int = BATCH) -> Pruned:
    """Delete everything finished more than `older_than` seconds ago, batch after batch
    without pausing (`onceq prune`); what was deleted."""
    total = Pruned()
    while True:
        total.add(store.prune_batch(older_than, limit))
        if total.done:
            return total


class Pruner:
    """A worker's share of retention: when a pass is due and nobody holds it, it takes
    it and deletes one batch per `run_once`, pausing between batches."""

    def __init__(
        self,
        store: Store,
        holder: str,
        retention: float,
        *,
        every: float = PRUNE_EVERY,
        batch: int = BATCH,
        duty: float | None = None,
        check_every: float = CHECK_EVERY,
        busy: Callable[[], bool] | None = None,
    ) -> None:
        self.store, self.holder, self.retention = store, holder, retention
        # Whether jobs are waiting (then a pass keeps to its duty cycle).
        self.busy = busy or (lambda: store.job_pending_exists(None))
        self.every, self.batch, self.check_every = every, batch, check_every
        self.duty = duty if duty is not None else DUTY_CYCLE.get(store.dialect, 0.03)
        self.holding = False
        self.renewed = 0.0
        self.pass_total = Pruned()

    def run_once(self, now: float) -> float:
        """Take the pass if it is due, or go on with the one held: one batch. Returns
        when to be called again (time.monotonic() seconds)."""
        if not self.holding:
            if not self.store.maintenance_take(DUTY, self.holder, LEASE):
                return now + self.check_every
            self.holding, self.renewed, self.pass_total = True, now, Pruned()
        elif now - self.renewed > LEASE / 3:
            if not self.store.maintenance_take(DUTY, self.holder, LEASE):  # taken over
                self.holding = False
                return now + self.check_every
            self.renewed = now
        batch = self.store.prune_batch(self.retention, self.batch)
        self.pass_total.add(batch)
        if not batch.done:
            if not self.busy():
                return now  # nothing waits for the workers: on at once
            return now + batch.seconds * (1 / self.duty - 1)
        self.store.maintenance_done(DUTY, self.holder, self.every)
        self.holding = False
        if self.pass_total.job_count or self.pass_total.runs:
            logs.event(log, logging.INFO, "retention.pruned", worker=self.holder,
                       jobs=self.pass_total.job_count, runs=self.pass_total.runs)  # fmt: skip
        return now + self.check_every

    def close(self) -> None:
        """A worker stopping mid-pass hands the pass back, due at once for another."""
        if self.holding:
            self.store.maintenance_done(DUTY, self.holder, 0.0)
            self.holding = False
