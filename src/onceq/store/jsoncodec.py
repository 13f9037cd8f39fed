"""JSON in and out of the store: strict (no NaN, no objects), with errors that name the value."""

from __future__ import annotations

import json
from typing import Any

from onceq.errors import PayloadError

_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)


DEFAULT_MAX_PAYLOAD = 1024 * 1024  # bytes of JSON, for a payload or a result (1 MiB)


def dumps(value: Any, what: str, limit: int | None = None) -> str:
    """Encode `value` as JSON, or raise PayloadError naming the first value that is not
    JSON, or saying how far the text is over `limit` bytes."""
    try:
        text = _ENCODER.encode(value)
        size = len(text.encode("utf-8"))  # a lone surrogate (e.g. from surrogateescape) fails
    except UnicodeEncodeError as exc:
        raise PayloadError(
            f"{what} holds a lone surrogate {text[exc.start : exc.end]!r}, which is not valid "
            "UTF-8 (decode bytes with errors='replace', or pass them as base64)"
        ) from exc
    except RecursionError as exc:
        raise PayloadError(f"{what} is nested too deeply to be stored") from exc
    except (TypeError, ValueError) as exc:
        path, bad = _first_bad(value, what)
        if not path:
            raise PayloadError(f"{what} is not JSON-serializable: {exc}") from exc
        raise PayloadError(
            f"{path} is not JSON-serializable: {type(bad).__name__} {_short(bad)}"
        ) from exc
    check_size(size, what, limit)
    return text


def check_size(size: int, what: str, limit: int | None) -> None:
    """PayloadError if `size` bytes of JSON are over `limit` (None: no limit)."""
    if limit is not None and size > limit:
        raise PayloadError(
            f"{what} is {size:,} bytes of JSON, over the limit of {limit:,} "
            "(App(max_payload=...) sets it)"
        )


def loads(text: str | None) -> Any:
    """Decode JSON text from the store (None stays None). Another program may have
    written JSON nested deeper than Python can decode: that is a ValueError too."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply for Python to decode") from None


def _first_bad(value: Any, path: str) -> tuple[str, Any]:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} key {key!r}", key
            found = _first_bad(item, f"{path}.{key}")
            if found[0]:
                return found
        return "", None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _first_bad(item, f"{path}[{index}]")
            if found[0]:
                return found
        return "", None
    if value is None or isinstance(value, str | bool | int):
        return "", None
    if isinstance(value, float) and value == value and value not in (float("inf"), float("-inf")):
        return "", None
    return path, value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
