"""Durations as people write them: `30s`, `15m`, `12h`, `7d` (and `1.5h`)."""

from __future__ import annotations

import math
import re
from datetime import timedelta

from onceq.errors import ConfigError

# The longest duration onceq takes: 100 years. Beyond, `now + d` leaves what a datetime
# (and a timestamptz) holds, and a worker's clock or a schedule would fail at run time.
MAX_SECONDS = 100 * 365.25 * 86400
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def parse_duration(text: str) -> float:
    """Seconds in `text`; ConfigError naming it when it is not one."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(
            f"bad duration {text!r}: expected a number and a unit, e.g. 30s, 15m, 12h or 7d"
        )
    return bounded(float(match.group(1)) * _UNITS[match.group(2)], text)


def seconds(value: float | int | str | timedelta, what: str) -> float:
    """A duration given as seconds, a timedelta or text (`7d`), in seconds (>= 0)."""
    if isinstance(value, str):
        out = parse_duration(value)
    elif isinstance(value, timedelta):
        out = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out = float(value)
    else:
        raise ConfigError(f"{what} must be seconds, a timedelta or text like '7d', got {value!r}")
    if not math.isfinite(out) or out < 0:
        raise ConfigError(f"{what} must be a duration of 0 or more, got {value!r}")
    return bounded(out, value)


def bounded(out: float, given: object) -> float:
    """`out` seconds, refused (ConfigError naming `given`) past MAX_SECONDS."""
    if out > MAX_SECONDS:
        raise ConfigError(f"duration {given!r} is too long: at most 100 years")
    return out
