"""The application API of issue 14 on the real servers: async enqueue and wait (psycopg's
AsyncConnection on PostgreSQL, a thread on SQLite), `app.wait()` woken by LISTEN/NOTIFY,
and enqueue in the caller's own transaction — the job exists iff it commits."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from onceq import App, ConfigError
from onceq.store import postgres_app
from tests.helpers import eventually, sql_rows

RELEASE: dict[str, threading.Event] = {}


@pytest.fixture
def app(store_url: str) -> Iterator[App]:
    a = App(store_url)

    @a.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    @a.task(name="gated")
    def gated(gate: str) -> str:
        RELEASE[gate].wait(30)
        return gate

    yield a
    a.close()


@pytest.fixture
def worker(app: App) -> Iterator[Any]:
    w = app.worker(concurrency=2, handle_signals=False)
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    yield w
    w.stop()
    thread.join(30)


def test_enqueue_async_and_wait_async(app: App, worker: Any) -> None:
    async def main() -> list[int | None]:
        jobs = await asyncio.gather(*(app.tasks["add"].enqueue_async(a=n, b=1) for n in range(5)))
        done = await asyncio.gather(*(app.wait_async(j, timeout=30) for j in jobs))
        await app.store.close_async()  # this loop's connections (the worker's stay open)
        return [j.result for j in done]

    assert asyncio.run(main()) == [1, 2, 3, 4, 5]


@pytest.mark.postgres
def test_wait_is_woken_by_notify_not_by_polling(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A re-read only every hour: a wait that returns at all was woken by a notification.
    monkeypatch.setattr(postgres_app, "WAIT_RECHECK", 3600.0)
    app = App(pg_url)
    gate = threading.Event()
    RELEASE["notify"] = gate

    @app.task(name="gated")
    def gated(gate: str) -> str:
        RELEASE[gate].wait(30)
        return gate

    w = app.worker(concurrency=2, handle_signals=False)
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    try:
        # A wait announced before the worker listens is heard by no one (the re-read
        # would find it): the test waits for it to listen.
        eventually(lambda: w._waker is not None and w._waker.listening.is_set(), timeout=60)
        for waits in (app.wait, _wait_async(app)):
            gate.clear()
            job_id = gated.enqueue(gate="notify").id
            got: list[Any] = []
            waiter = threading.Thread(target=_collect, args=(waits, job_id, got))
            waiter.start()
            eventually(lambda j=job_id: j in w._waker._awaited)  # the worker heard the waiter
            gate.set()
            waiter.join(60)
            assert [g.result for g in got] == ["notify"]
    finally:
        w.stop()
        thread.join(30)
        app.close()


def _collect(waits: Any, job_id: int, into: list[Any]) -> None:
    into.append(waits(job_id, timeout=60))


def _wait_async(app: App) -> Any:
    def wait(job: Any, timeout: float) -> Any:
        async def main() -> Any:
            try:
                return await app.wait_async(job, timeout=timeout)
            finally:
                await app.store.close_async()

        return asyncio.run(main())

    return wait


@pytest.mark.postgres
def test_a_job_enqueued_in_the_callers_transaction_exists_iff_it_commits(
    pg_url: str, pg_server: str
) -> None:
    app = App(pg_url)

    @app.task(name="notify_customer")
    def notify_customer(order: int) -> None: ...

    app.store  # noqa: B018 - migrated before the caller's transactions start
    with psycopg.connect(pg_server) as conn:
        conn.execute("CREATE TEMP TABLE orders (id int)")
        conn.commit()
        conn.execute("INSERT INTO orders VALUES (1)")
        with app.using(conn):
            dropped = notify_customer.enqueue(order=1)
        conn.rollback()
        conn.execute("INSERT INTO orders VALUES (2)")
        with app.using(conn):
            kept = notify_customer.enqueue(order=2)
            # the caller's connection still sees its own search_path afterwards
        assert conn.execute("SHOW search_path").fetchone() == ('"$user", public',)
        assert sql_rows(pg_url, "SELECT count(*) FROM onceq_jobs") == [(0,)]  # not yet
        conn.commit()
    ids = [r[0] for r in sql_rows(pg_url, "SELECT id FROM onceq_jobs")]
    assert ids == [kept.id] and dropped.id not in ids
    app.close()


@pytest.mark.postgres
def test_using_with_sqlalchemy_and_the_refusals(pg_url: str, pg_server: str) -> None:
    import sqlalchemy

    app = App(pg_url)

    @app.task(name="audit")
    def audit(what: str) -> None: ...

    engine = sqlalchemy.create_engine(pg_server.replace("postgresql://", "postgresql+psycopg://"))
    try:
        for commit in (False, True):
            with engine.connect() as conn:
                with app.using(conn):  # before any statement of its own: using() begins
                    audit.enqueue(what=f"commit={commit}")
                conn.execute(sqlalchemy.text("SELECT 1"))  # the business write, say
                if commit:
                    conn.commit()
                else:
                    conn.rollback()
        with engine.connect() as conn, app.using(conn), pytest.raises(ConfigError, match="not"):
            app.wait(1)  # a job of an uncommitted transaction cannot be waited for here
    finally:
        engine.dispose()
    assert sql_rows(pg_url, "SELECT args->>'what' FROM onceq_jobs") == [("commit=True",)]
    refused = pytest.raises(ConfigError, match="autocommit mode with no transaction open")
    with psycopg.connect(pg_server, autocommit=True) as idle, app.using(idle), refused:
        audit.enqueue(what="x")
    with pytest.raises(ConfigError, match="needs a psycopg 3 connection"), app.using(object()):
        pass
    app.close()


def test_using_is_refused_on_sqlite(sqlite_url: str) -> None:
    app = App(sqlite_url)
    with pytest.raises(ConfigError, match="needs a PostgreSQL store"), app.using(object()):
        pass
    app.close()
