"""One structured line per job event: `event key=value …`, easy to grep and to parse."""

from __future__ import annotations

import logging
import sys
from typing import Any


def event(logger: logging.Logger, level: int, name: str, **fields: Any) -> None:
    """Log `name` with its fields as key=value pairs (values with spaces are quoted)."""
    if not logger.isEnabledFor(level):
        return
    parts = [name]
    for key, value in fields.items():
        text = str(value)
        if not text or any(c in text for c in ' ="'):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    logger.log(level, " ".join(parts), extra={"onceq_event": name, "onceq_fields": fields})


def setup(level: str = "INFO") -> None:
    """Log to stderr with timestamps, for the CLI."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s %(processName)s %(message)s")
    )
    root = logging.getLogger("onceq")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
