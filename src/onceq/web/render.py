"""Templates: Jinja2 with autoescape on for every file, so user data (task names,
payload keys, errors) is text wherever it lands, and a few filters for times and JSON."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

import jinja2

from onceq.web.forms import query


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _age(seconds: float | timedelta | None) -> str:
    """A duration, short: 850 ms, 12.5 s, 7 min, 3 h 5 min, 2 d 4 h."""
    if seconds is None:
        return ""
    s = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def _short(text: str | None, width: int = 80) -> str:
    if not text:
        return ""
    lines = text.strip().splitlines()
    line = lines[-1] if lines else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _number(n: float) -> str:
    return f"{int(n):,}"


def environment() -> jinja2.Environment:
    """The dashboard's templates, from the package."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("onceq.web", "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, age=_age, pretty=_pretty, short=_short, number=_number)
    env.globals.update(query=query)
    return env


def static(name: str) -> bytes | None:
    """A file of web/static (the page's script and style), or None."""
    if name not in ("app.js", "app.css"):
        return None
    return resources.files("onceq.web").joinpath("static", name).read_bytes()
