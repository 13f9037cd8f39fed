"""When a periodic task's ticks fall: every N seconds, or a cron expression in a time
zone, evaluated by cronsim (a maintained cron library that follows Debian's cron).

A tick is an instant. `every=N` ticks at the multiples of N seconds since the Unix
epoch, so every worker computes the same instants whatever its start time. A cron
expression is read on the *wall clock* of its time zone: each local time the
expression matches is one tick, and around a DST change

- a local time that does not exist (the hour skipped in spring) is no tick: a daily
  `30 2 * * *` does not run on that day;
- a local time that happens twice (the hour repeated in autumn) is one tick, at its
  first occurrence: `30 1 * * *` runs once, and `*/15 * * * *` runs four times in the
  repeated hour, not eight. (For a steady interval of real time, use `every=`.)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from onceq.durations import bounded
from onceq.errors import ConfigError

# How far back a clock change may still matter to a reverse walk (no zone has ever
# moved its clock back by more than two hours at once).
SHIFT = timedelta(hours=3)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Schedule(Protocol):
    """The ticks of a periodic task."""

    def after(self, t: datetime) -> datetime | None:
        """The first tick after instant `t` (None: no tick for 50 years)."""
        ...

    def due(self, lower: datetime, now: datetime, most: int) -> list[datetime]:
        """The latest `most` ticks in (lower, now], oldest first."""
        ...

    def local(self, tick: datetime) -> datetime:
        """A tick as its handler sees it (in the schedule's time zone)."""
        ...

    def spec(self) -> dict[str, Any]:
        """What to store to compute the ticks again (onceq periodic)."""
        ...


class Every:
    """Ticks at the multiples of `seconds` since the epoch (UTC)."""

    def __init__(self, seconds: float) -> None:
        if not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds <= 0:
            raise ConfigError(f"every= must be a positive number of seconds, got {seconds!r}")
        self.seconds = bounded(float(seconds), seconds)

    def _at(self, k: int) -> datetime:
        return EPOCH + timedelta(seconds=k * self.seconds)

    def _index(self, t: datetime) -> int:
        """The index of the last tick at or before `t`."""
        return math.floor((t - EPOCH).total_seconds() / self.seconds + 1e-9)

    def after(self, t: datetime) -> datetime | None:
        return self._at(self._index(t) + 1)

    def due(self, lower: datetime, now: datetime, most: int) -> list[datetime]:
        last = self._index(now)
        first = max(self._index(lower) + 1, last - most + 1)
        return [self._at(k) for k in range(first, last + 1)]

    def local(self, tick: datetime) -> datetime:
        return tick

    def spec(self) -> dict[str, Any]:
        return {"every": self.seconds}


class Cron:
    """Ticks at the local times a cron expression matches, in `timezone` (UTC if None)."""

    def __init__(self, expression: str, timezone: str | None = None) -> None:
        if not isinstance(expression, str):
            raise ConfigError(f"cron= must be a cron expression, got {expression!r}")
        try:
            self.zone = ZoneInfo(timezone) if timezone else ZoneInfo("UTC")
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"unknown time zone {timezone!r} (an IANA name, e.g. "
                              "'Europe/Paris')") from None  # fmt: skip
        if len(expression.split()) != 5:
            raise ConfigError(f"bad cron expression {expression!r}: it needs 5 fields "
                              "(minute hour day-of-month month day-of-week)")  # fmt: skip
        try:
            CronSim(expression, datetime(2000, 1, 1))
        except CronSimError as exc:
            raise ConfigError(f"bad cron expression {expression!r}: {exc}") from None
        self.expression, self.timezone = expression, timezone

    def _wall(self, t: datetime) -> datetime:
        return t.astimezone(self.zone).replace(tzinfo=None)

    def _instant(self, wall: datetime) -> datetime | None:
        """The instant of a local wall time: its first occurrence; None if the clock
        skipped it."""
        aware = wall.replace(tzinfo=self.zone, fold=0)
        if self._wall(aware.astimezone(UTC)) != wall:
            return None
        return aware.astimezone(UTC)

    def _walk(self, start: datetime, reverse: bool) -> Iterator[datetime]:
        """Instants of the matching local times from wall time `start`, either way."""
        try:
            for wall in CronSim(self.expression, start, reverse=reverse):
                instant = self._instant(wall)
                if instant is not None:
                    yield instant
        except StopIteration:  # (raised from inside cronsim's own loop)
            return

    def after(self, t: datetime) -> datetime | None:
        for instant in self._walk(self._wall(t), reverse=False):
            if instant > t:  # a wall time of the repeated hour may come earlier
                return instant
        return None

    def due(self, lower: datetime, now: datetime, most: int) -> list[datetime]:
        # After the clock went back, the ticks of the repeated hour's first pass have
        # later wall times than now's: the walk back starts that much ahead.
        ahead = (now - SHIFT).astimezone(self.zone).utcoffset() or timedelta()
        ahead -= now.astimezone(self.zone).utcoffset() or timedelta()
        start = (self._wall(now) + max(ahead, timedelta())).replace(microsecond=0)
        found: list[datetime] = []
        for instant in self._walk(start + timedelta(seconds=1), reverse=True):
            if instant > now:
                continue
            if instant <= lower or len(found) >= most:
                break
            found.append(instant)
        return found[::-1]

    def local(self, tick: datetime) -> datetime:
        return tick.astimezone(self.zone)

    def spec(self) -> dict[str, Any]:
        return {"cron": self.expression, "timezone": self.timezone}


def from_spec(spec: dict[str, Any]) -> Schedule:
    """The schedule a stored spec describes."""
    if "every" in spec:
        return Every(spec["every"])
    return Cron(spec["cron"], spec.get("timezone"))
