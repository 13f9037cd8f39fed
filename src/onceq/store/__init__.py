"""The job store: open one from a URL. See base.Store for the verbs."""

from __future__ import annotations

from onceq.errors import SchemaError
from onceq.store import queries
from onceq.store.base import Store, schema_too_new
from onceq.store.urls import parse_url, resolve

__all__ = ["Store", "open_store"]


def open_store(url: str | None = None, *, migrate: bool = True, check_schema: bool = True) -> Store:
    """Open the store at `url` (else ONCEQ_URL, else sqlite:///onceq.db).

    A database without the current schema is migrated (`migrate=False` refuses instead);
    one whose schema is newer than this code is refused with a SchemaError.
    `check_schema=False` skips both (for `onceq migrate` itself).
    """
    url = resolve(url)
    parsed = parse_url(url)
    store: Store
    if parsed.dialect == "sqlite":
        from onceq.store.sqlite import SqliteStore

        store = SqliteStore(url, parsed)
    else:
        from onceq.store.postgres import PostgresStore

        store = PostgresStore(url, parsed)
    if not check_schema:
        return store
    try:
        known = len(queries.migrations(store.dialect))
        current = store.schema_version()
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
