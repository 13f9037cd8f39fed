"""The store's verbs for periodic tasks: each tick enqueued once, by whichever worker
gets there first, and never again.

Every worker may enqueue a due tick. In one transaction, `tick_insert` moves the task's
`last_tick` forward by compare-and-set (only if it was earlier), then inserts the tick's
job under a key unique to (task, tick). A second worker's compare-and-set finds the
tick taken and inserts nothing — with no leader to elect or hand over. Because
`last_tick` only moves forward, a tick whose job was pruned (its key free again) is
never enqueued twice either.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from onceq.models import NewJob, PeriodicRecord
from onceq.store import rows
from onceq.store.tx import Params, Tx


class PeriodicVerbs:
    """Mixed into Store: the dialect supplies _in_tx, _read, _time_param, _insert_params."""

    _in_tx: Callable[..., Any]
    _read: Callable[..., Any]
    _time_param: Callable[..., Any]
    _insert_params: Callable[[NewJob], Params]

    def periodic_register(
        self, specs: Mapping[str, dict[str, Any]]
    ) -> dict[str, tuple[datetime | None, datetime]]:
        """Make or update the rows of these periodic tasks ({name: schedule spec});
        returns, for each, its last tick enqueued and when it was first registered
        (its first tick is the first one after that)."""

        def register(tx: Tx) -> dict[str, tuple[datetime | None, datetime]]:
            found = {}
            for name, spec in sorted(specs.items()):
                row = tx.one("periodic_register", {"name": name, "spec": json.dumps(spec)})
                assert row is not None
                found[name] = (rows.dt_or_none(row["last_tick"]), rows.dt(row["created_at"]))
            return found

        done: dict[str, tuple[datetime | None, datetime]] = self._in_tx(register, ("periodic",))
        return done

    def tick_insert(
        self, name: str, ticks: Sequence[tuple[datetime, NewJob]]
    ) -> tuple[list[int], datetime | None]:
        """Enqueue the jobs of these ticks of `name` (oldest first) that no one enqueued
        yet, in one transaction; returns their ids and the task's last tick after it."""
        inserts = [(self._time_param(tick), self._insert_params(new)) for tick, new in ticks]

        def insert(tx: Tx) -> tuple[list[int], datetime | None]:
            made = []
            for tick, params in inserts:
                if tx.one("periodic_advance", {"name": name, "tick": tick}) is None:
                    continue  # taken: by another worker, or a later tick was enqueued
                row = tx.one("job_insert", params)
                if row is None:  # its key exists already (a job outlived its row)
                    row = tx.one("job_get_by_key", {"key": params["key"]})
                assert row is not None
                tx.run("periodic_set_job", {"name": name, "job_id": row["id"]})
                made.append(row["id"])
            last = tx.one("periodic_last_tick", {"name": name})
            return made, rows.dt_or_none(last["last_tick"] if last else None)

        done: tuple[list[int], datetime | None] = self._in_tx(insert, ("tick",))
        return done

    def periodic_list(self) -> list[PeriodicRecord]:
        """Every periodic task the store knows, by name."""
        found: list[Any] = self._read(lambda tx: tx.all("periodic_list", {}))
        return [rows.periodic(r) for r in found]
