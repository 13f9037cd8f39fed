"""Bad input: one line naming the problem, and nothing partially written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from onceq.errors import ConfigError, OnceqError, PayloadError, SchemaError
from onceq.models import NewJob
from onceq.store import Store, open_store, queries
from onceq.store.urls import parse_url
from tests.helpers import sql_rows


def _one_line(exc: pytest.ExceptionInfo[OnceqError]) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost/0", "unknown store URL scheme 'redis'"),
        ("onceq.db", "expected sqlite:///FILE or postgresql://"),
        ("sqlite://host/x.db", "use sqlite:///relative.db"),
        ("sqlite:///x.db?synchronous=off", "synchronous must be full or normal"),
        ("sqlite:///x.db?journal=delete", "unknown option(s) journal"),
        ("postgresql://u@h/db?schema=a;drop", "schema must be letters, digits or _"),
    ],
)
def test_bad_urls_are_named(url: str, expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        open_store(url)
    assert expected in _one_line(exc)


def test_unreachable_postgres_is_named() -> None:
    with pytest.raises(ConfigError) as exc:
        open_store("postgresql://postgres@127.0.0.1:1/test")
    assert "cannot reach PostgreSQL at 127.0.0.1:1/test" in _one_line(exc)


def test_sqlite_in_a_missing_folder_is_named_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(ConfigError) as exc:
        open_store(f"sqlite:///{missing}/onceq.db")
    assert f"folder '{missing}' does not exist" in _one_line(exc)
    assert not (tmp_path / "no").exists()


def test_sqlite_in_a_read_only_folder_is_named(tmp_path: Path) -> None:
    # /proc refuses new files even to root; a chmod'ed folder does so for other users.
    folder = Path("/proc") if os.geteuid() == 0 else tmp_path / "ro"
    if folder != Path("/proc"):
        folder.mkdir()
        folder.chmod(0o555)
    with pytest.raises(ConfigError) as exc:
        open_store(f"sqlite:///{folder}/onceq.db")
    assert f"cannot open SQLite database '{folder}/onceq.db'" in _one_line(exc)


def test_status_is_checked_by_the_database(store: Store) -> None:
    job = store.job_insert(NewJob(task="t"))
    for bad in ("Running", "TaskStatus.RUNNING", "done"):
        with pytest.raises(Exception, match=r"(?i)check"):
            sql_rows(store.url, "UPDATE onceq_jobs SET status = ? WHERE id = ?", (bad, job.id))
    assert store.job_get(job.id).status == "pending"


def test_a_non_json_payload_writes_nothing(store: Store) -> None:
    with pytest.raises(PayloadError) as exc:
        store.job_insert(NewJob(task="t", args={"blob": b"bytes"}))
    assert "payload of t.blob is not JSON-serializable: bytes" in _one_line(exc)
    assert store.job_list() == []


def test_a_schema_newer_than_the_code_is_refused(store: Store) -> None:
    newer = queries.latest(store.dialect) + 1
    sql_rows(
        store.url,
        "INSERT INTO onceq_migrations (version, applied_at) VALUES (?, ?)",
        (newer, "2030-01-01T00:00:00+00:00" if store.dialect == "postgres" else 0.0),
    )
    with pytest.raises(SchemaError) as exc:
        open_store(store.url)
    assert f"schema is version {newer}, newer than this onceq knows" in _one_line(exc)


def test_without_migrate_an_empty_database_is_refused(sqlite_url: str) -> None:
    with pytest.raises(SchemaError) as exc:
        open_store(sqlite_url, migrate=False)
    assert "run `onceq migrate`" in _one_line(exc)


def test_postgres_url_options_are_passed_on_quoted() -> None:
    """onceq's own options are taken out; the rest reach libpq still quoted."""
    parsed = parse_url("postgresql://u@h/db?options=-c%20search_path%3Dx%26y&schema=s&sslmode=off")
    assert parsed.options == {"schema": "s"}
    assert parsed.target == "postgresql://u@h/db?options=-c%20search_path%3Dx%26y&sslmode=off"
