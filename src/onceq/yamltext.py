"""YAML for onceq's files (workflows, batches): safe loading only, and a syntax error
as one line that says where."""

from __future__ import annotations

from typing import Any

import yaml

from onceq.errors import OnceqError


def safe_load(text: str, source: str, error: type[OnceqError]) -> Any:
    """Plain data from YAML text, or `error` naming the source, line and column."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{source}: invalid YAML{at}: {problem}") from None
