"""Store URLs: `sqlite:///relative.db`, `sqlite:////abs/path.db`, `postgresql://…`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from onceq.errors import ConfigError

DEFAULT_URL = "sqlite:///onceq.db"


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A parsed store URL. `options` are the query parameters onceq itself reads."""

    dialect: str
    target: str  # SQLite: a file path (or ':memory:'); PostgreSQL: the conninfo URL
    options: dict[str, str]


_SQLITE_OPTIONS = {"synchronous"}
_POSTGRES_OPTIONS = {"schema", "pool_size"}


def resolve(url: str | None) -> str:
    """The URL to use: the one given, else ONCEQ_URL, else the embedded default."""
    return url or os.environ.get("ONCEQ_URL") or DEFAULT_URL


def redact(url: str) -> str:
    """The URL with its password hidden, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = quote(parts.username or "", safe="")
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def parse_url(url: str) -> StoreURL:
    """Parse a store URL, or raise ConfigError naming what is wrong with it."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        if parts.netloc:
            raise ConfigError(
                f"bad SQLite URL {url!r}: use sqlite:///relative.db or sqlite:////absolute.db"
            )
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise ConfigError(f"bad SQLite URL {url!r}: no file path")
        options = _options(url, parts.query, _SQLITE_OPTIONS)
        sync = options.get("synchronous", "full").lower()
        if sync not in ("full", "normal"):
            raise ConfigError(f"bad SQLite URL {url!r}: synchronous must be full or normal")
        return StoreURL("sqlite", path, options)
    if scheme in ("postgresql", "postgres"):
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in _POSTGRES_OPTIONS]
        options = {k: v for k, v in parse_qsl(parts.query) if k in _POSTGRES_OPTIONS}
        # Re-quoted, since a value may hold & or =; %20 for spaces: libpq reads no +.
        rest = urlencode(query, quote_via=quote)
        target = urlunsplit(("postgresql", parts.netloc, parts.path, rest, ""))
        schema = options.get("schema")
        if schema is not None and not schema.replace("_", "a").isalnum():
            raise ConfigError(f"bad PostgreSQL URL {url!r}: schema must be letters, digits or _")
        return StoreURL("postgres", target, options)
    if not scheme:
        raise ConfigError(f"bad store URL {url!r}: expected sqlite:///FILE or postgresql://…")
    raise ConfigError(
        f"unknown store URL scheme {scheme!r} in {url!r}: expected sqlite or postgresql"
    )


def _options(url: str, query: str, known: set[str]) -> dict[str, str]:
    options = dict(parse_qsl(query))
    unknown = set(options) - known
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))} in store URL {url!r}")
    return options
