"""huey on SqliteHuey. `build()` makes an instance on a given file; the worker's
instance is `huey` (on $PEERS_HUEY_FILE). Task names are module.function either way."""

from __future__ import annotations

import os
import time
from typing import Any

from huey import SqliteHuey

from apps import ledger


def build(filename: str) -> tuple[SqliteHuey, Any, Any]:
    """A SqliteHuey on `filename` with the two benchmark tasks registered."""
    huey = SqliteHuey("peers", filename=filename)

    @huey.task(context=True)
    def noop(i: int, task: Any = None) -> None:
        ledger.record(i, task.id, time.time())

    @huey.task(context=True)
    def stamp(i: int, t: float, task: Any = None) -> None:
        started = time.time()
        ledger.record(i, task.id, started, t)

    return huey, noop, stamp


if "PEERS_HUEY_FILE" in os.environ:
    huey, noop, stamp = build(os.environ["PEERS_HUEY_FILE"])
