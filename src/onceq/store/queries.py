"""Named SQL statements, one folder per dialect, parsed once at import.

A dialect's statements are every `*.sql` file of its folder (`queries.sql`, the job
store's; `operating.sql`, what keeps a store running for months; `stats.sql` and
`views.sql`, the dashboard's), under one set of names. A statement starts at a
`-- name: NAME` line and runs to the next one; the comment lines right under the name
describe it.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """Split a queries file into {name: sql}."""
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = body.strip()
    return queries


@cache
def load(dialect: str) -> dict[str, str]:
    """The named queries of one dialect ('sqlite' or 'postgres'), from all its files."""
    folder = resources.files("onceq.store").joinpath("sql", dialect)
    found: dict[str, str] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        for name, sql in parse(entry.read_text()).items():
            if name in found:
                raise ValueError(f"query {name!r} is defined twice ({entry.name})")
            found[name] = sql
    return found


@cache
def migrations(dialect: str) -> tuple[tuple[int, str], ...]:
    """(version, sql) of every migration file of a dialect, in order: numbered 1..n."""
    folder = resources.files("onceq.store").joinpath("sql", dialect, "migrations")
    found = []
    for entry in folder.iterdir():
        match = re.match(r"^(\d{4})_\w+\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text()))
    found.sort()
    if [v for v, _ in found] != list(range(1, len(found) + 1)):
        raise ValueError(f"{dialect} migrations are not numbered 1..n: {[v for v, _ in found]}")
    return tuple(found)


def latest(dialect: str) -> int:
    """The schema version this code migrates a database of `dialect` to."""
    return migrations(dialect)[-1][0]
