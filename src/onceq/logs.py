"""Logging the standard way: onceq logs to `onceq.*` loggers and configures nothing.

- `event()`: one structured line per job event, `event key=value …`, easy to grep; the
  fields also ride on the record (`onceq_event`, `onceq_fields`) for JSON output.
- Inside a handler, every record — onceq's and the app's own — carries the job it runs
  for (`job_id`, `job_task`, `job_attempt`): `attach_job_context()` wraps the record
  factory once, when a worker starts.
- `setup()` is for the CLI alone, which owns its process: it gives the root logger a
  handler (text or JSON lines on stderr) unless the app configured logging itself when
  it was imported, in which case the app's configuration wins, untouched.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from onceq.context import _current

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")
JOB_FIELDS = ("job_id", "job_task", "job_attempt")
# The attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_installed = threading.Lock()
_factory_wrapped = False

logging.getLogger("onceq").addHandler(logging.NullHandler())  # a library's manners


def event(logger: logging.Logger, level: int, name: str, **fields: Any) -> None:
    """Log `name` with its fields as key=value pairs (values with spaces are quoted); a
    `traceback` field is shown under the line instead, as an exception's would be."""
    if not logger.isEnabledFor(level):
        return
    traceback = fields.pop("traceback", None)
    parts = [name]
    for key, value in fields.items():
        text = str(value)
        if not text or any(c in text for c in ' ="'):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    extra = {"onceq_event": name, "onceq_fields": fields}
    record = logger.makeRecord(logger.name, level, "(onceq)", 0, " ".join(parts), (), None,
                               extra=extra)  # fmt: skip
    if traceback:
        record.exc_text = traceback.rstrip("\n")  # formatters print it like exc_info's
    logger.handle(record)


def attach_job_context() -> None:
    """Put the running job (id, task, attempt) on every record created inside a handler,
    whoever logs it and whichever handler formats it. Idempotent; chains the current
    record factory."""
    global _factory_wrapped
    with _installed:
        if _factory_wrapped:
            return
        previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            ctx = _current.get()
            if ctx is not None:
                record.job_id = ctx.job_id
                record.job_task = ctx.task
                record.job_attempt = f"{ctx.attempt}/{ctx.max_attempts}"
            return record

        logging.setLogRecordFactory(factory)
        _factory_wrapped = True


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message [job=… task=… attempt=…]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        job = getattr(record, "job_id", None)
        if job is None:
            return text
        head, sep, rest = text.partition("\n")
        task, attempt = getattr(record, "job_task", ""), getattr(record, "job_attempt", "")
        suffix = f" [job={job} task={task} attempt={attempt}]"
        return head + suffix + sep + rest


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the job a handler runs,
    an onceq event's fields, the app's `extra=` fields, and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in ("onceq_fields",) and not key.startswith("_"):
                doc[key.removeprefix("onceq_")] = value
        fields = getattr(record, "onceq_fields", None)
        if fields:
            doc["fields"] = fields
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["traceback"] = record.exc_text
        return json.dumps(doc, default=str, ensure_ascii=False)


def check(level: str, fmt: str = "text") -> str | None:
    """The one-line problem with a --log-level or --log-format, or None."""
    if level.upper() not in LEVELS:
        return f"unknown --log-level {level!r}: expected one of {', '.join(LEVELS)}"
    if fmt not in FORMATS:
        return f"unknown --log-format {fmt!r}: expected text or json"
    return None


def setup(level: str = "INFO", fmt: str = "text") -> bool:
    """For the CLI, which owns its process: log to stderr at `level` in `fmt` (text or
    json), unless the app already configured logging (the root logger has handlers),
    which then wins. Call it after importing the app. True if it configured."""
    root = logging.getLogger()
    if root.handlers:
        return False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    return True
