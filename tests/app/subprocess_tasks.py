"""A handler importable by a subprocess child (tests/app/test_results.py)."""

from __future__ import annotations

from datetime import UTC, datetime


def stamp(year: int) -> datetime:
    return datetime(year, 1, 2, tzinfo=UTC)
