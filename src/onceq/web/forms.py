"""The dashboard's input: a job filter and paging cursors from a query string or a form,
checked, with one line naming what is wrong."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlencode

from onceq.models import JOB_STATUSES, JobFilter, JobStatus

MAX_ID = 2**63 - 1
MAX_TEXT = 200
FILTER_FIELDS = ("queue", "task", "status", "since", "until", "text", "run_id")


class BadInput(ValueError):
    """Input the dashboard refuses (400), with the reason."""


def _text(params: Mapping[str, Any], name: str, limit: int = MAX_TEXT) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadInput(f"{name} must be text")
    if len(value) > limit:
        raise BadInput(f"{name} is longer than {limit} characters")
    if "\x00" in value:
        raise BadInput(f"{name} holds a NUL character")
    return value


def integer(params: Mapping[str, Any], name: str, low: int = 0) -> int | None:
    """An optional whole number between `low` and the largest id."""
    value = _text(params, name, 20)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadInput(f"{name} must be a whole number, got {value!r}") from None
    if not low <= number <= MAX_ID:
        raise BadInput(f"{name} must be between {low} and {MAX_ID}, got {number}")
    return number


def when(params: Mapping[str, Any], name: str) -> datetime | None:
    """An optional time: ISO 8601, as a datetime-local field sends it; UTC unless it says."""
    value = _text(params, name, 40)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadInput(f"{name} must be a time like 2024-05-01T13:45, got {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def job_filter(params: Mapping[str, Any]) -> JobFilter:
    """The job filter of a query string or form."""
    status = _text(params, "status")
    if status is not None and status not in JOB_STATUSES:
        raise BadInput(f"unknown status {status!r}: expected one of {', '.join(JOB_STATUSES)}")
    since, until = when(params, "since"), when(params, "until")
    if since and until and since >= until:
        raise BadInput("since must be before until")
    return JobFilter(
        queue=_text(params, "queue"),
        task=_text(params, "task"),
        status=cast(JobStatus | None, status),
        since=since,
        until=until,
        text=_text(params, "text"),
        run_id=integer(params, "run_id", 1),
    )


def filter_fields(f: JobFilter) -> dict[str, str]:
    """The filter as form fields (only those set), to carry it to the next request."""
    raw = {
        "queue": f.queue,
        "task": f.task,
        "status": f.status,
        "since": f.since.strftime("%Y-%m-%dT%H:%M:%S") if f.since else None,
        "until": f.until.strftime("%Y-%m-%dT%H:%M:%S") if f.until else None,
        "text": f.text,
        "run_id": str(f.run_id) if f.run_id is not None else None,
    }
    return {k: v for k, v in raw.items() if v is not None}


def query(f: JobFilter, **extra: Any) -> str:
    """A query string: the filter and `extra` (None values left out)."""
    fields: dict[str, Any] = {
        **filter_fields(f),
        **{k: v for k, v in extra.items() if v is not None},
    }
    return urlencode(fields)


def describe(f: JobFilter) -> str:
    """The filter in words, for a confirmation."""
    parts = [f"{k} = {v!r}" for k, v in filter_fields(f).items()]
    return ", ".join(parts) if parts else "every job"
