"""The PostgreSQL job store: psycopg 3 with a connection pool, for many worker machines.

- Claims use `FOR UPDATE SKIP LOCKED` in a CTE; every lease time is the database's
  `now()`, so the clocks of worker machines do not matter.
- READ COMMITTED, pinned in each connection's startup options, whatever the database's
  or the role's default (under REPEATABLE READ two items finishing together would each
  count the other as still running, and the fan-in would never happen). Short
  transactions: a long-open one anywhere stalls a SKIP LOCKED queue (dead tuples pile up
  behind it).
- A connection that goes silent is noticed: TCP keepalives and `tcp_user_timeout`
  (unless the URL sets its own), and a statement timeout below the worker's lease.
- `?schema=NAME` in the URL keeps onceq's tables in their own schema (created on
  migrate); its NOTIFY channel is per schema too.
- Deadlocks and serialization failures re-run the whole transaction. A connection lost
  before COMMIT was sent wrote nothing (StoreUnavailable). One lost while committing may
  or may not have committed: the store ends that connection's backend if it is still
  there (`pg_terminate_backend`, matched on its pid and start time), waits until it is
  gone, and raises OutcomeUnknown; from then on, reads tell what committed. If the
  server cannot be reached to do so, the next transaction does it first.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import select
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg.types.string import TextLoader
from psycopg_pool import ConnectionPool, PoolTimeout

from onceq import faults
from onceq.errors import ConfigError, OutcomeUnknown, StoreUnavailable
from onceq.store.base import Store
from onceq.store.postgres_app import PostgresAppVerbs
from onceq.store.transitions import Op
from onceq.store.tx import LeaseKey, Note, Params, Row, Tx
from onceq.store.urls import StoreURL
from onceq.store.wakeup import Waker

log = logging.getLogger("onceq.store")
T = TypeVar("T")

CONNECT_TIMEOUT = 5.0
DEFAULT_POOL_SIZE = 4
# An arbitrary constant: the advisory lock that serializes concurrent `migrate` runs.
MIGRATE_LOCK = 0x6F6E6365  # "once"
# libpq settings that make a silent network fail a call instead of hanging it (each one
# only where the URL does not set its own): probes after 5 s of quiet, dead after 3
# unanswered; unacknowledged data for 10 s drops the connection.
NETWORK_DEFAULTS = {
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
}
SETTLE_FOR = 10.0  # how long a lost commit is waited on before the next call does it
_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
_savepoints = itertools.count()


class _PgTx:
    __slots__ = ("base", "cur", "done", "notes", "q")

    def __init__(self, cur: psycopg.Cursor[dict[str, Any]], q: dict[str, bytes], channel: str):
        self.cur = cur
        self.q = q
        self.base = {"channel": channel}
        self.notes: list[Note] = []
        self.done = 0  # statements that returned (in autocommit, each one committed)

    def all(self, name: str, params: Params) -> list[Row]:
        self.cur.execute(self.q[name], {**self.base, **params})
        self.done += 1
        return list(self.cur.fetchall()) if _has_rows(self.cur) else []

    def one(self, name: str, params: Params) -> Row | None:
        self.cur.execute(self.q[name], {**self.base, **params})
        self.done += 1
        return self.cur.fetchone() if _has_rows(self.cur) else None

    def run(self, name: str, params: Params) -> int:
        self.cur.execute(self.q[name], {**self.base, **params})
        self.done += 1
        return self.cur.rowcount

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        name = _savepoint_name()
        self.cur.execute(f"SAVEPOINT {name}".encode())
        try:
            yield
        except BaseException:
            if not self.cur.connection.broken:
                self.cur.execute(f"ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}".encode())
            raise
        self.cur.execute(f"RELEASE SAVEPOINT {name}".encode())


class PostgresStore(PostgresAppVerbs, Store):
    """A job store on a PostgreSQL database (optionally in its own schema)."""

    dialect = "postgres"
    keyed_claim = ("slot_reap", "job_claim_keyed")  # slots and jobs in one statement

    def __init__(self, url: str, parsed: StoreURL) -> None:
        super().__init__(url)
        self._qb = {name: text.encode() for name, text in self.q.items()}
        self.conninfo = parsed.target
        self.schema = parsed.options.get("schema")
        self.channel = f"onceq_{self.schema or 'public'}"
        try:
            size = int(parsed.options.get("pool_size", DEFAULT_POOL_SIZE))
        except ValueError:
            raise ConfigError("bad PostgreSQL URL: pool_size must be a whole number") from None
        self.pool_size = max(size, 1)
        self.where = _safe(self.conninfo)  # for messages: no password
        self._init_app_verbs()
        # No bitmap scans on onceq's connections: a queue table changes faster than
        # autovacuum analyzes it, and with statistics that still say "a few pending rows"
        # the planner claims through a bitmap scan that sorts *every* pending job (10 ms at
        # 10,000 pending, growing with the backlog) instead of walking the pending index
        # in claim order and stopping after LIMIT rows (2 ms). Nothing onceq runs needs them.
        # READ COMMITTED: startup options win over the database's and the role's settings.
        settings = ["-c enable_bitmapscan=off", "-c default_transaction_isolation=read\\ committed"]
        if self.schema:
            settings.append(f"-c search_path={self.schema}")
        own = conninfo_to_dict(self.conninfo)
        if own.get("options"):
            settings.insert(0, str(own["options"]))  # the URL's own options= still apply
        self.connect_kwargs: dict[str, Any] = {
            "connect_timeout": int(CONNECT_TIMEOUT),
            "options": " ".join(settings),
            **{k: v for k, v in NETWORK_DEFAULTS.items() if k not in own},
        }
        self._statement_ms = 0  # 0: no limit of ours; else applied per connection
        self._applied: weakref.WeakKeyDictionary[psycopg.Connection[Any], int]
        self._applied = weakref.WeakKeyDictionary()
        # Each pooled connection's backend (pid, start), to settle a commit lost on it.
        self._backends: weakref.WeakKeyDictionary[psycopg.Connection[Any], tuple[int, Any]]
        self._backends = weakref.WeakKeyDictionary()
        self._unsettled: list[tuple[int, Any]] = []
        self._lock = threading.Lock()
        # One direct connection first: its error says why the server is unreachable,
        # where a pool would only time out.
        self.connect().close()
        self.pool = ConnectionPool(
            self.conninfo,
            min_size=1,
            max_size=max(size, 1),
            kwargs={**self.connect_kwargs, "autocommit": True},  # BEGIN is ours to send
            configure=self._configure,
            open=False,
            name="onceq",
        )
        self.pool.open(wait=True, timeout=CONNECT_TIMEOUT)

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection[Any]:
        """A connection outside the pool (LISTEN needs one of its own)."""
        try:
            conn = psycopg.connect(self.conninfo, autocommit=autocommit, **self.connect_kwargs)
        except psycopg.OperationalError as exc:
            raise ConfigError(
                f"cannot reach PostgreSQL at {_safe(self.conninfo)}: {_connect_reason(exc)}"
            ) from exc
        _loaders(conn)
        return conn

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        _loaders(conn)
        row = conn.execute(self._qb["backend_identity"]).fetchone()
        if row is not None:
            self._backends[conn] = (row[0], row[1])

    def close(self) -> None:
        self.pool.close()

    def limit_statement_time(self, seconds: float) -> None:
        with self._lock:
            ms = max(int(seconds * 1000), 1)
            if not self._statement_ms or ms < self._statement_ms:
                self._statement_ms = ms

    def waker(self, event: threading.Event) -> Waker:
        return PostgresWaker(self, event)

    def _transient(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.OperationalError | StoreUnavailable)

    # -- transactions --------------------------------------------------------------

    def _in_tx(self, fn: Callable[[Tx], T], labels: tuple[str, ...] = ()) -> T:
        return self._run(fn, labels, read=False)

    # One statement per worker cycle, with no BEGIN and COMMIT around it: a round trip
    # instead of four. Safe now that a lost answer is settled (see "Lost answers" in
    # docs/architecture.md): whether the statement committed is found out, not guessed.
    cycle_in_one_statement = True

    def _in_statement(self, fn: Callable[[Tx], T], labels: tuple[str, ...] = ()) -> T:
        return self._run(fn, labels, read=False, single=True)

    def _read(self, fn: Callable[[Tx], T]) -> T:
        return self._run(fn, (), read=True)

    def _run(
        self, fn: Callable[[Tx], T], labels: tuple[str, ...], *, read: bool, single: bool = False
    ) -> T:
        """One transaction on a pooled connection: BEGIN (with the isolation level and the
        statement timeout, in one round trip), `fn`, COMMIT; the phase it failed in says
        what can have been written. `single`: `fn`'s first statement is its only write
        and commits on its own (autocommit), so from the moment it is sent, a broken
        connection means an unknown outcome. Inside `using(conn)`, on the caller's
        connection, in the caller's transaction."""
        injected = self._injected()
        if injected is not None:
            return self._run_injected(injected, fn)
        if self._unsettled:
            self._settle_earlier()
        pause = 0.005
        dead = 0  # connections found dead before anything was sent on them
        for attempt in range(10):
            conn = self._getconn()
            phase = "begin"
            tx: _PgTx | None = None
            lost: str | None = None  # the COMMIT was sent and its answer never came
            try:
                if self._statement_ms and self._applied.get(conn) != self._statement_ms:
                    # Session-wide, once per connection and limit: a SET LOCAL in every
                    # transaction costs ~8% of a worker's throughput. A lower limit the
                    # URL set itself is kept.
                    limit = {"ms": self._statement_ms}
                    conn.execute(self._qb["session_limit_statements"], limit)
                    self._applied[conn] = self._statement_ms
                with conn.cursor(row_factory=dict_row) as cur:
                    tx = _PgTx(cur, self._qb, self.channel)
                    if single:
                        if _closed_while_idle(conn):
                            conn.close()  # the pool drops it; nothing was sent
                            raise psycopg.OperationalError("the server closed the connection")
                        phase = "commit"
                        if faults.RULES and any(faults.hit(f"{x}.before_commit") for x in labels):
                            _sever(conn)  # the statement then fails on a dead connection
                        out = fn(tx)
                    else:
                        cur.execute(b"BEGIN")
                        phase = "body"
                        out = fn(tx)
                        if faults.RULES and any(faults.hit(f"{x}.before_commit") for x in labels):
                            _sever(conn)  # the COMMIT below then fails on a dead connection
                        phase = "commit"
                        cur.execute(b"COMMIT")
                    if faults.RULES and any(faults.hit(f"{x}.committed") for x in labels):
                        _sever(conn)
                        lost = "injected fault: the answer to COMMIT was lost"
            except psycopg.Error as exc:
                if single and tx is not None and tx.done > 0:
                    # The write committed on its own; a statement after it failed, so
                    # what the write did is not known here: neither an error that says
                    # "nothing was written" nor a retry that would write it again.
                    _rollback(conn)
                    raise OutcomeUnknown(
                        f"PostgreSQL at {self.where}: {_reason(exc)} (after a write that "
                        "committed on its own: its answer is lost)"
                    ) from exc
                if not (conn.broken or conn.closed):
                    _rollback(conn)
                    if isinstance(exc, _RETRYABLE) and attempt < 9:
                        log.info("retrying a transaction after %s", type(exc).__name__)
                        time.sleep(pause)
                        pause *= 2
                        continue
                    if isinstance(exc, pg_errors.QueryCanceled | pg_errors.LockNotAvailable):
                        raise StoreUnavailable(
                            f"PostgreSQL at {_safe(self.conninfo)}: {_reason(exc)}"
                        ) from exc
                    raise
                if (phase == "begin" and dead < 3) or (read and attempt < 3):
                    # Nothing was written: a pooled connection that died while idle (a
                    # server restart), or a read. The pool drops the dead one.
                    dead += 1
                    log.info("a pooled connection was dead (%s); trying another", exc)
                    continue
                if phase != "commit":
                    raise StoreUnavailable(
                        f"PostgreSQL at {_safe(self.conninfo)}: {_reason(exc)} "
                        "(the connection was lost before COMMIT: nothing was written)"
                    ) from exc
                lost = _reason(exc)
            except BaseException:
                _rollback(conn)
                raise
            finally:
                backend = self._backends.get(conn)
                self.pool.putconn(conn)
            if lost is not None and not read:
                raise self._lost(backend, lost)
            assert tx is not None
            self._emit(tx.notes)
            return out
        raise AssertionError("unreachable")

    def _getconn(self) -> psycopg.Connection[Any]:
        try:
            return self.pool.getconn(timeout=CONNECT_TIMEOUT)
        except PoolTimeout as exc:
            raise StoreUnavailable(f"PostgreSQL at {_safe(self.conninfo)}: {_reason(exc)}") from exc

    # -- commits whose answer was lost ---------------------------------------------

    def _lost(self, backend: tuple[int, Any] | None, why: str) -> OutcomeUnknown:
        """The error for a commit whose answer never came, once its outcome is settled
        (or queued to be settled before the next transaction)."""
        settled = backend is None or self._settle(backend, SETTLE_FOR)
        if not settled:
            assert backend is not None
            with self._lock:
                self._unsettled.append(backend)
        log.warning("the answer to a COMMIT was lost (%s); %s", why,
                    "settled" if settled else "to be settled")  # fmt: skip
        return OutcomeUnknown(
            f"PostgreSQL at {_safe(self.conninfo)}: {why} (the connection was lost while "
            "committing: the write may or may not have happened)"
        )

    def _settle(self, backend: tuple[int, Any], patience: float) -> bool:
        """Wait until the backend of a lost connection is gone, ending it if it is still
        there: its transaction is then over, committed or rolled back. False if the
        server could not be asked within `patience` seconds."""
        pid, started = backend
        deadline = time.monotonic() + patience
        pause = 0.005
        while True:
            try:
                with self.pool.connection(timeout=max(patience, 0.1)) as conn:
                    row = conn.execute(
                        self._qb["backend_settle"], {"pid": pid, "started": started}
                    ).fetchone()
                if row is None:
                    return True
            except (psycopg.Error, PoolTimeout) as exc:
                log.info("cannot settle a lost commit yet (%s)", _reason(exc))
            if time.monotonic() + pause > deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _settle_earlier(self) -> None:
        """Before anything else runs: settle the commits lost earlier."""
        with self._lock:
            waiting = list(self._unsettled)
        for backend in waiting:
            if not self._settle(backend, CONNECT_TIMEOUT):
                raise StoreUnavailable(
                    f"PostgreSQL at {_safe(self.conninfo)}: an earlier commit's outcome "
                    "is not known yet (the server cannot be reached)"
                )
            with self._lock, suppress(ValueError):
                self._unsettled.remove(backend)

    # -- dialect parameters --------------------------------------------------------

    def _time_param(self, when: datetime | None) -> datetime | None:
        return when

    def _insert_many(self, tx: Tx, rows: Sequence[Params]) -> list[int]:
        # Repeats of a key inside the batch become one insert; all get its id.
        firsts: list[Params] = []
        seen: set[str] = set()
        for r in rows:
            if r["key"] is None or r["key"] not in seen:
                firsts.append(r)
                if r["key"] is not None:
                    seen.add(r["key"])
        # JSON documents; the payloads are JSON text already, spliced in as they are.
        meta = json.dumps([
            [r["queue"], r["task"], r["priority"],
             None if r["run_at"] is None else r["run_at"].isoformat(), r["delay"], r["key"],
             r["max_attempts"], r["run_id"], r["step"], r["item"], r["concurrency_key"],
             r["concurrency_limit"]]
            for r in firsts
        ])  # fmt: skip
        payloads = f"[{','.join(r['args'] for r in firsts)}]"
        inserted = tx.all("job_insert_many", {"rows": meta, "args": payloads})
        keyless = iter(sorted(r["id"] for r in inserted if r["key"] is None))
        by_key = {}
        if seen:
            keys = json.dumps(sorted(seen))
            by_key = {r["key"]: r["id"] for r in tx.all("job_ids_by_key", {"keys": keys})}
        queues = json.dumps(sorted({r["queue"] for r in rows}))
        tx.all("job_notify", {"queues": queues})
        return [next(keyless) if r["key"] is None else by_key[r["key"]] for r in rows]

    def _bookkeep(
        self,
        tx: Tx,
        op: Op,
        asked: Sequence[LeaseKey],
        kept: Sequence[Row],
        outcome: Callable[[Row], str],
        error: str | None,
    ) -> dict[LeaseKey, str]:
        return {}  # the statements write attempt records in CTEs, and return replays

    # -- schema --------------------------------------------------------------------

    def _before_migrate(self, tx: Tx) -> None:
        assert isinstance(tx, _PgTx)
        # Concurrent `migrate` runs (many machines starting at once) take turns.
        tx.cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        if self.schema:
            tx.cur.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )

    def _run_script(self, tx: Tx, script: str) -> None:
        assert isinstance(tx, _PgTx)
        tx.cur.execute(script.encode())  # no parameters: many statements in one go


class PostgresWaker:
    """A LISTEN connection on a thread; a notification of new work sets the worker's
    event. It also hears which jobs waiters announce they wait for (`<channel>_wait`),
    and keeps the most recent AWAITED_KEPT of them."""

    AWAITED_KEPT = 10_000

    def __init__(self, store: PostgresStore, wake: threading.Event) -> None:
        self.store = store
        self.wake = wake
        self._awaited: dict[int, None] = {}  # insertion-ordered: the oldest go first
        self._awaited_lock = threading.Lock()
        self._stop = threading.Event()
        self.listening = threading.Event()  # set while LISTEN is in force
        self._thread = threading.Thread(target=self._listen, name="onceq-listen", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        pause = 0.1
        while not self._stop.is_set():
            try:
                with self.store.connect(autocommit=True) as conn:
                    waits = f"{self.store.channel}_wait"
                    for channel in (self.store.channel, waits):
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    pause = 0.1
                    self.listening.set()
                    self.wake.set()  # anything enqueued while we were not listening
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=0.5, stop_after=1):
                            if n.channel == waits:
                                self._remember(n.payload)
                            else:
                                self.wake.set()
            except Exception as exc:
                self.listening.clear()
                if self._stop.is_set():
                    return
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, pause)
                self._stop.wait(pause)
                pause = min(pause * 2, 5.0)

    def wait(self, event: threading.Event, timeout: float) -> None:
        event.wait(timeout)

    def ready(self, timeout: float) -> bool:
        return self.listening.wait(timeout)

    def _remember(self, payload: str) -> None:
        if not payload.isdigit():
            return
        with self._awaited_lock:
            self._awaited[int(payload)] = None
            while len(self._awaited) > self.AWAITED_KEPT:
                del self._awaited[next(iter(self._awaited))]

    def take_awaited(self, job_ids: Iterable[int]) -> list[int]:
        with self._awaited_lock:
            return [j for j in job_ids if self._awaited.pop(j, 0) is None]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def _savepoint_name() -> str:
    return f"onceq_{next(_savepoints)}"


def _loaders(conn: psycopg.Connection[Any]) -> None:
    # json comes back as text: the layers above decode it (one bad row fails one job).
    conn.adapters.register_loader("json", TextLoader)
    conn.adapters.register_loader("jsonb", TextLoader)


def _has_rows(cur: psycopg.Cursor[Any]) -> bool:
    """Whether the statement returned rows (zero or more). `cur.description` says the
    same, but builds an object per column each time: 0.1 ms per statement of 15."""
    res = cur.pgresult
    return res is not None and res.status == psycopg.pq.ExecStatus.TUPLES_OK


def _closed_while_idle(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle pooled connection may have been closed by the server (a restart,
    an administrator), found without sending anything: an idle connection's socket is
    readable only when the server said something unasked — most often goodbye (an error,
    then the end of the stream); a notice at most. Either way it is not used."""
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable) or conn.pgconn.status != psycopg.pq.ConnStatus.OK


def _rollback(conn: psycopg.Connection[Any]) -> None:
    """End whatever transaction is open on a connection going back to the pool."""
    if conn.broken or conn.closed:
        return
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        with suppress(psycopg.Error):
            conn.execute(b"ROLLBACK")


def _sever(conn: psycopg.Connection[Any]) -> None:
    """Cut a connection as a network fault would (for the named fault points)."""
    with suppress(OSError):
        dup = socket.socket(fileno=os.dup(conn.fileno()))
        dup.shutdown(socket.SHUT_RDWR)
        dup.close()


def _reason(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]


def _connect_reason(exc: BaseException) -> str:
    """Why a connection failed, in one line: libpq's own reason ("Connection refused",
    "database … does not exist") and its hint, without the address it repeats."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    reason = lines[0].rpartition(" failed: ")[2].removeprefix("FATAL:").strip()
    hints = " ".join(lines[1:])
    return f"{reason} ({hints})" if hints else reason


def _safe(conninfo: str) -> str:
    """The URL without its password, for error messages."""
    parts = urlsplit(conninfo)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path}"
