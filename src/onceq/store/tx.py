"""What a dialect hands the store's verbs: one open transaction that runs named queries.

Every query gets `now` (SQLite: the time the write lock was taken; PostgreSQL uses its
own now()) and `channel` (PostgreSQL's NOTIFY channel) without the caller passing them.
`notes` collects what to log once the transaction has committed (a transaction that is
re-run starts with none, so nothing is logged twice).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

Row = Mapping[str, Any]
Params = dict[str, Any]
LeaseKey = tuple[int, int]  # (job id, lease token): one attempt of one job, forever
Note = tuple[int, str, dict[str, Any]]  # (log level, event, fields)


def note(level: int, event: str, **fields: Any) -> Note:
    """Something to log once the transaction has committed."""
    return (level, event, fields)


class Tx(Protocol):
    """One open transaction: runs named queries of the store's dialect."""

    notes: list[Note]

    def all(self, name: str, params: Params) -> list[Row]:
        """Run a query and return every row."""
        ...

    def one(self, name: str, params: Params) -> Row | None:
        """Run a query and return its first row, if any."""
        ...

    def run(self, name: str, params: Params) -> int:
        """Run a statement and return the number of rows it changed."""
        ...

    def savepoint(self) -> AbstractContextManager[None]:
        """A block whose writes are rolled back, alone, if it raises."""
        ...
