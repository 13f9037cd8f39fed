"""References in step arguments: plain paths into a run's data, never evaluated code.

`$input`, `$input.a.b`, `$item`, `$item.field`, `$steps.x.result`, `$steps.x.results`,
`$steps.x.result.field`; a numeric segment indexes a list (`$input.urls.0`). `$$` at
the start escapes a literal dollar. Anything else is a literal. Values nested in lists
and objects are resolved too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from onceq.errors import WorkflowError


@dataclass(frozen=True, slots=True)
class Ref:
    """A parsed reference: its root ('input', 'item', 'steps'), step, and path."""

    text: str
    root: str
    step: str | None
    field: str | None  # 'result' or 'results' for $steps
    path: tuple[str, ...]


def parse(text: str) -> Ref:
    """Parse a `$…` reference, or raise WorkflowError naming what is wrong."""
    parts = text[1:].split(".")
    if any(not p for p in parts):
        raise WorkflowError(f"bad reference {text!r}: empty path segment")
    root = parts[0]
    if root in ("input", "item"):
        return Ref(text, root, None, None, tuple(parts[1:]))
    if root == "steps":
        if len(parts) < 3 or parts[2] not in ("result", "results"):
            raise WorkflowError(
                f"bad reference {text!r}: expected $steps.NAME.result or $steps.NAME.results"
            )
        return Ref(text, root, parts[1], parts[2], tuple(parts[3:]))
    raise WorkflowError(f"bad reference {text!r}: it must start with $input, $item or $steps")


def is_ref(value: Any) -> bool:
    """A string that starts with one `$` (not the `$$` escape)."""
    return isinstance(value, str) and value.startswith("$") and not value.startswith("$$")


def refs_in(value: Any) -> list[Ref]:
    """Every reference in a literal (walking lists and objects)."""
    if is_ref(value):
        return [parse(value)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in refs_in(v)]
    if isinstance(value, list):
        return [r for v in value for r in refs_in(v)]
    return []


def resolve(value: Any, lookup: Callable[[Ref], Any]) -> Any:
    """Replace every reference in `value` by its value; `$$x` becomes `$x`."""
    if isinstance(value, str):
        if value.startswith("$$"):
            return value[1:]
        if value.startswith("$"):
            ref = parse(value)
            return follow(lookup(ref), ref.path, ref.text)
        return value
    if isinstance(value, dict):
        return {k: resolve(v, lookup) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, lookup) for v in value]
    return value


def follow(data: Any, path: tuple[str, ...], text: str) -> Any:
    """Walk `path` into `data`: keys into objects, numbers into lists."""
    for segment in path:
        if isinstance(data, dict) and segment in data:
            data = data[segment]
        elif isinstance(data, list) and segment.isdigit() and int(segment) < len(data):
            data = data[int(segment)]
        else:
            raise WorkflowError(f"reference {text!r}: nothing at {segment!r} in {_kind(data)}")
    return data


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        keys = ", ".join(sorted(value)[:5])
        return f"an object with keys [{keys}]"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return f"a {type(value).__name__}"
