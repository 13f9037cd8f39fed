"""PostgreSQL for an application's own code: async calls, waits, and the caller's
transaction (mixed into PostgresStore).

- **Async**: psycopg's AsyncConnection, from a pool per event loop (a pool belongs to the
  loop that opened it), opened on first use and closed by `close_async()` on that loop
  (`await app.aclose()`). A commit whose answer was lost is settled as the sync path
  does, then raises OutcomeUnknown.
- **Waits** (`app.wait`, `app.wait_async`): the waiter LISTENs on `<channel>_done` and
  announces the job it waits for on `<channel>_wait`; a worker that hears it keeps the id
  and, when it records that job's end, NOTIFYs `<channel>_done` in a transaction of its
  own (`job_done_notify`). So waits cost the workers nothing when nobody waits — no
  NOTIFY on the completion path, whose commits it would serialize (NOTIFY takes a
  database-wide lock until commit). A job that ends some other way (cancelled, rescued)
  or whose worker heard the announcement too late is seen by a re-read every
  WAIT_RECHECK seconds.
- **The caller's transaction** (`using(connection)`, the outbox pattern): within the
  block, every transaction of this store in this context runs on the caller's
  connection, inside a savepoint of the caller's transaction, and commits when — and
  only if — the caller commits. onceq's tables are reached through its schema's
  search_path for the duration of each call, set back afterwards.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from onceq.errors import ConfigError, JobNotFound, OutcomeUnknown, StoreUnavailable
from onceq.models import FINISHED, Job, NewJob
from onceq.store import rows
from onceq.store.tx import Note, Params, Row, Tx

T = TypeVar("T")
WAIT_RECHECK = 1.0  # a waiter re-reads its job at least this often, notified or not
_USING: ContextVar[tuple[object, psycopg.Connection[Any]] | None] = ContextVar(
    "onceq_using", default=None
)
_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)


class _AsyncTx:
    """An open async transaction: the async twin of postgres._PgTx."""

    def __init__(self, cur: psycopg.AsyncCursor[dict[str, Any]], q: dict[str, bytes], channel: str):
        self.cur = cur
        self.q = q
        self.base = {"channel": channel}
        self.notes: list[Note] = []

    async def one(self, name: str, params: Params) -> Row | None:
        await self.cur.execute(self.q[name], {**self.base, **params})
        return await self.cur.fetchone() if self.cur.description else None


class PostgresAppVerbs:
    """Async verbs, LISTEN/NOTIFY waits and `using()`; PostgresStore supplies the rest."""

    conninfo: str
    connect_kwargs: dict[str, Any]
    channel: str
    schema: str | None
    pool_size: int
    where: str
    _qb: dict[str, bytes]

    if TYPE_CHECKING:  # PostgresStore's, and Store's

        def connect(self, *, autocommit: bool = False) -> psycopg.Connection[Any]: ...
        def job_get(self, job_id: int) -> Job: ...
        def job_insert(self, new: NewJob) -> Job: ...
        def _insert_params(self, new: NewJob) -> Params: ...
        def _in_tx(self, fn: Callable[[Tx], T], labels: tuple[str, ...] = ()) -> T: ...
        def _emit(self, notes: Sequence[Note]) -> None: ...
        def _lost(self, backend: tuple[int, Any] | None, why: str) -> OutcomeUnknown: ...

    def _init_app_verbs(self) -> None:
        self._apools: dict[asyncio.AbstractEventLoop, asyncio.Task[AsyncConnectionPool]] = {}
        self._abackends: dict[int, tuple[int, Any]] = {}
        self._alock = threading.Lock()

    # -- the caller's transaction --------------------------------------------------

    @contextmanager
    def using(self, connection: Any) -> Iterator[None]:
        conn = driver_connection(connection)
        ours = conninfo_to_dict(self.conninfo).get("dbname")
        if ours and conn.info.dbname != ours:
            raise ConfigError(
                f"app.using(): the connection is to database {conn.info.dbname!r}, the "
                f"store is in {ours!r}: a job and a write in two databases share no "
                "transaction"
            )
        token = _USING.set((self, conn))
        try:
            yield
        finally:
            _USING.reset(token)

    def _injected(self) -> psycopg.Connection[Any] | None:
        entry = _USING.get()
        return entry[1] if entry is not None and entry[0] is self else None

    def _run_injected(self, conn: psycopg.Connection[Any], fn: Callable[[Tx], T]) -> T:
        """`fn` inside the caller's transaction, under a savepoint: an error of ours rolls
        back only what we wrote, and the caller's transaction stays usable."""
        from onceq.store.postgres import _PgTx, _savepoint_name

        status = conn.info.transaction_status
        if conn.autocommit and status == psycopg.pq.TransactionStatus.IDLE:
            raise ConfigError(
                "app.using(): the connection is in autocommit mode with no transaction "
                "open, so the job would not share one: open it first (with "
                "conn.transaction(): …, or inside Django's transaction.atomic())"
            )
        if status == psycopg.pq.TransactionStatus.INERROR:
            raise ConfigError("app.using(): the caller's transaction has already failed")
        name = _savepoint_name()
        with conn.cursor(row_factory=dict_row) as cur:
            cur.adapters.register_loader("json", TextLoader)
            cur.adapters.register_loader("jsonb", TextLoader)
            cur.execute(f"SAVEPOINT {name}".encode())
            try:
                previous = None
                if self.schema:
                    found = cur.execute(self._qb["search_path_swap"], {"path": self.schema})
                    row = found.fetchone()
                    previous = row["previous"] if row else None
                tx = _PgTx(cur, self._qb, self.channel)
                out = fn(tx)
                if previous is not None:
                    cur.execute(self._qb["search_path_swap"], {"path": previous})
                cur.execute(f"RELEASE SAVEPOINT {name}".encode())
            except BaseException:
                if not conn.broken:
                    with suppress(psycopg.Error):
                        cur.execute(f"ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}"
                                    .encode())  # fmt: skip
                raise
        self._emit(tx.notes)  # noted now: the caller's commit is not ours to see
        return out

    # -- async ---------------------------------------------------------------------

    async def _apool(self) -> AsyncConnectionPool:
        loop = asyncio.get_running_loop()
        with self._alock:
            opening = self._apools.get(loop)
            if opening is None:
                opening = self._apools[loop] = loop.create_task(self._aopen())
        return await asyncio.shield(opening)

    async def _aopen(self) -> AsyncConnectionPool:
        pool = AsyncConnectionPool(
            self.conninfo,
            min_size=1,
            max_size=self.pool_size,
            kwargs={**self.connect_kwargs, "autocommit": True},
            configure=self._aconfigure,
            open=False,
            name="onceq-async",
        )
        try:
            await pool.open(wait=True, timeout=5.0)
        except PoolTimeout as exc:
            await pool.close()
            raise StoreUnavailable(f"PostgreSQL at {self.where}: {exc}") from exc
        return pool

    async def _aconfigure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        conn.adapters.register_loader("json", TextLoader)
        conn.adapters.register_loader("jsonb", TextLoader)
        cur = await conn.execute(self._qb["backend_identity"])
        row = await cur.fetchone()
        if row is not None:
            self._abackends[id(conn)] = (row[0], row[1])

    async def _arun(self, fn: Callable[[_AsyncTx], Awaitable[T]]) -> T:
        """One transaction on a pooled async connection; errors as the sync path says
        them (StoreUnavailable: nothing written; OutcomeUnknown: the commit's answer was
        lost, and it has been settled)."""
        pool = await self._apool()
        for attempt in range(10):
            try:
                async with pool.connection(timeout=5.0) as conn:
                    phase = "begin"
                    try:
                        async with conn.cursor(row_factory=dict_row) as cur:
                            await cur.execute(b"BEGIN")
                            phase = "body"
                            out = await fn(_AsyncTx(cur, self._qb, self.channel))
                            phase = "commit"
                            await cur.execute(b"COMMIT")
                        return out
                    except psycopg.Error as exc:
                        if not (conn.broken or conn.closed):
                            with suppress(psycopg.Error):
                                await conn.execute(b"ROLLBACK")
                            if isinstance(exc, _RETRYABLE) and attempt < 9:
                                continue
                            raise
                        why = str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__
                        if phase != "commit":
                            raise StoreUnavailable(
                                f"PostgreSQL at {self.where}: {why} (the connection was lost "
                                "before COMMIT: nothing was written)"
                            ) from exc
                        backend = self._abackends.get(id(conn))
                        lost: OutcomeUnknown = await asyncio.to_thread(self._lost, backend, why)
                        raise lost from exc
            except PoolTimeout as exc:
                raise StoreUnavailable(f"PostgreSQL at {self.where}: {exc}") from exc
        raise AssertionError("unreachable")

    async def job_insert_async(self, new: NewJob) -> Job:
        if self._injected() is not None:
            return self.job_insert(new)  # on the caller's own (sync) connection
        params = self._insert_params(new)

        async def insert(tx: _AsyncTx) -> Row:
            row = await tx.one("job_insert", params)
            if row is None:
                row = await tx.one("job_get_by_key", {"key": new.key})
            assert row is not None
            return row

        return rows.job(await self._arun(insert))

    async def job_get_async(self, job_id: int) -> Job:
        """One job, or JobNotFound (async)."""

        async def read(tx: _AsyncTx) -> Row | None:
            return await tx.one("job_get", {"job_id": job_id})

        row = await self._arun(read)
        if row is None:
            raise JobNotFound(f"no job with id {job_id}")
        return rows.job(row)

    async def close_async(self) -> None:
        loop = asyncio.get_running_loop()
        with self._alock:
            opening = self._apools.pop(loop, None)
        if opening is not None:
            with suppress(Exception):
                await (await opening).close()

    # -- waits ---------------------------------------------------------------------

    def job_wait(self, job_id: int, timeout: float | None = None) -> Job:
        if self._injected() is not None:  # the job may not be committed: nobody can end it
            raise ConfigError("app.wait() inside app.using(): the job is not committed yet")
        clock = _Clock(timeout)
        with self.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(f"{self.channel}_done")))
            conn.execute(self._qb["job_wait_announce"],
                         {"channel": self.channel, "job_id": job_id})  # fmt: skip
            while True:
                job = self.job_get(job_id)
                if job.status in FINISHED:
                    return job
                for _ in conn.notifies(timeout=clock.pause(job), stop_after=1):
                    pass

    async def job_wait_async(self, job_id: int, timeout: float | None = None) -> Job:
        clock = _Clock(timeout)
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, **self.connect_kwargs
            )
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL at {self.where}: {exc}") from exc
        async with conn:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(f"{self.channel}_done")))
            await conn.execute(self._qb["job_wait_announce"],
                               {"channel": self.channel, "job_id": job_id})  # fmt: skip
            while True:
                job = await self.job_get_async(job_id)
                if job.status in FINISHED:
                    return job
                async for _ in conn.notifies(timeout=clock.pause(job), stop_after=1):
                    pass

    def job_done_notify(self, job_ids: list[int]) -> None:
        """Tell the waiters of these jobs (announced to this worker) that they ended."""
        if job_ids:
            params = {"ids": "[" + ",".join(map(str, job_ids)) + "]"}
            self._in_tx(lambda tx: tx.all("job_done_notify", params))


class _Clock:
    """A waiter's deadline: how long to listen before re-reading the job."""

    def __init__(self, timeout: float | None) -> None:
        import time

        self._now = time.monotonic
        self.timeout = timeout
        self.deadline = None if timeout is None else self._now() + timeout

    def pause(self, job: Job) -> float:
        if self.deadline is None:
            return WAIT_RECHECK
        left = self.deadline - self._now()
        if left <= 0:
            raise TimeoutError(f"job {job.id} still {job.status} after {self.timeout}s")
        return min(left, WAIT_RECHECK)


def driver_connection(connection: Any) -> psycopg.Connection[Any]:
    """The psycopg connection behind what a caller hands `app.using()`: a psycopg
    Connection itself, a SQLAlchemy Connection or Session (on psycopg), or Django's
    connection (on psycopg 3). Duck-typed: neither library is imported."""
    if hasattr(connection, "get_bind") and callable(getattr(connection, "connection", None)):
        connection = connection.connection()  # a SQLAlchemy Session: its Connection
    driver = getattr(getattr(connection, "connection", None), "driver_connection", None)
    if driver is not None:  # a SQLAlchemy Connection
        if not connection.in_transaction():
            connection.begin()  # what its own execute() would do: its commit() is then ours
        connection = driver
    elif hasattr(connection, "ensure_connection"):  # Django's connection wrapper
        connection.ensure_connection()
        connection = connection.connection
    if isinstance(connection, psycopg.AsyncConnection):
        raise ConfigError("app.using() takes a sync psycopg connection, not an AsyncConnection")
    if not isinstance(connection, psycopg.Connection):
        raise ConfigError(
            f"app.using() needs a psycopg 3 connection (or a SQLAlchemy or Django one on "
            f"psycopg 3), got {type(connection).__name__}"
        )
    return connection
