"""The job store: open one from a URL. See base.Store for the verbs."""

from __future__ import annotations

from pathlib import Path

from onceq.errors import ConfigError, SchemaError
from onceq.store import queries
from onceq.store.base import Store, schema_too_new
from onceq.store.urls import parse_url, redact, resolve

__all__ = ["Store", "open_store"]


def open_store(
    url: str | None = None,
    *,
    migrate: bool = True,
    check_schema: bool = True,
    create: bool = True,
) -> Store:
    """Open the store at `url` (else ONCEQ_URL, else sqlite:///onceq.db).

    A database without the current schema is migrated (`migrate=False` refuses instead);
    one whose schema is newer than this code is refused with a SchemaError.
    `check_schema=False` skips both (for `onceq migrate` itself). `create=False` (the
    commands that only read) refuses, with a ConfigError, a URL where no store exists
    yet — no SQLite file, or no onceq schema — instead of creating one.
    """
    url = resolve(url)
    parsed = parse_url(url)
    missing = ConfigError(f"no store at {redact(url)} (a typo in --url or ONCEQ_URL?)")
    store: Store
    if parsed.dialect == "sqlite":
        from onceq.store.sqlite import SqliteStore

        if not create and parsed.target != ":memory:" and not Path(parsed.target).exists():
            raise missing
        store = SqliteStore(url, parsed)
    else:
        try:
            from onceq.store.postgres import PostgresStore
        except ImportError as exc:
            raise ConfigError(
                f"a PostgreSQL store needs psycopg ({exc.name} is missing): "
                "pip install 'onceq[postgres]'"
            ) from None
        store = PostgresStore(url, parsed)
    if not check_schema:
        return store
    try:
        known = queries.latest(store.dialect)
        current = store.schema_version()
        if current == 0 and not create:
            raise missing
        if current > known:
            raise SchemaError(schema_too_new(current, known))
        if current < known:
            if not migrate:
                raise SchemaError(
                    f"the database schema is version {current}, this onceq needs {known}: "
                    "run `onceq migrate`"
                )
            store.migrate()
    except BaseException:
        store.close()
        raise
    return store
