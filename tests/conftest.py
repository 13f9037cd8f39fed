"""Shared fixtures: one store fixture parametrized over SQLite and PostgreSQL.

PostgreSQL tests use the server at ONCEQ_TEST_POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432/test), each test in a schema of its own, dropped
afterwards. Without the server they skip with the reason; under CI=true they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from onceq.store import Store, open_store

PG_URL = os.environ.get("ONCEQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The PostgreSQL test server's URL, once it is known to answer."""
    try:
        psycopg.connect(PG_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL not reachable at {PG_URL} ({str(exc).strip()[:200]})"
        if IN_CI:
            pytest.fail(f"{reason}; CI=true requires it (set ONCEQ_TEST_POSTGRES_URL)")
        pytest.skip(f"{reason}; set ONCEQ_TEST_POSTGRES_URL to run the PostgreSQL tests")
    return PG_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A store URL on PostgreSQL in a fresh schema of its own, dropped after the test."""
    schema = f"onceq_test_{uuid.uuid4().hex[:12]}"
    yield with_schema(pg_server, schema)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


# Databases whose default isolation level is not PostgreSQL's READ COMMITTED, as some
# teams set it (ALTER DATABASE … SET default_transaction_isolation).
ISOLATION_DATABASES = {
    "repeatable read": "onceq_test_repeatable_read",
    "serializable": "onceq_test_serializable",
}


@pytest.fixture(scope="session")
def pg_isolation_servers(pg_server: str) -> dict[str, str]:
    """Server URLs of a database per isolation level, created once."""
    urls = {}
    with psycopg.connect(pg_server, autocommit=True) as conn:
        for level, name in ISOLATION_DATABASES.items():
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(f"CREATE DATABASE {name}")
            conn.execute(f"ALTER DATABASE {name} SET default_transaction_isolation = '{level}'")
            urls[level] = urlunsplit(urlsplit(pg_server)._replace(path=f"/{name}"))
    return urls


@pytest.fixture(params=sorted(ISOLATION_DATABASES))
def pg_isolation_url(
    request: pytest.FixtureRequest, pg_isolation_servers: dict[str, str]
) -> Iterator[str]:
    """A store URL (a fresh schema) in a database defaulting to each isolation level."""
    server = pg_isolation_servers[request.param]
    with psycopg.connect(server) as conn:
        shown = conn.execute("SHOW default_transaction_isolation").fetchone()
    assert shown == (request.param,), shown
    schema = f"onceq_test_{uuid.uuid4().hex[:12]}"
    yield with_schema(server, schema)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    """A store URL on a fresh SQLite file."""
    return f"sqlite:///{tmp_path}/onceq.db"


@pytest.fixture
def ledger(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> Path:
    """An append-only file where test handlers record each execution (ONCEQ_TEST_LEDGER)."""
    path = Path(tmp_path) / "ledger.txt"
    monkeypatch.setenv("ONCEQ_TEST_LEDGER", str(path))
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """A fresh store URL on each backend in turn."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An open, migrated store on each backend in turn."""
    s = open_store(store_url)
    yield s
    s.close()
