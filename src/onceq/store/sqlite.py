"""The SQLite job store: stdlib sqlite3, WAL, one file, nothing to set up.

Limits, plainly:
- One writer at a time. Every write runs under BEGIN IMMEDIATE, so claims need no row
  locks: the claim's UPDATE is the only writer while it runs. Waiting writers use
  SQLite's busy handler. (A blocking flock() queue was measured as an alternative: its
  strict hand-off costs a context switch per transaction and was ~30% slower at batch 10
  from 2 and 8 processes, so it is not used.)
- All processes must share one machine (and its clock): lease times are this process's
  `time.time()`; SQLite over a network file system is not supported.
- Durable by default: WAL with synchronous=FULL, so a job enqueued or completed survives
  power loss once the call returned. `?synchronous=normal` in the URL trades that for
  speed: the last commits may roll back on power loss, and a job completed in them would
  run again.
- Needs SQLite 3.38 or newer (RETURNING, UPDATE … FROM, the ->> operator).
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TypeVar, cast

from onceq import faults
from onceq.errors import ConfigError, OutcomeUnknown, SchemaError, StoreUnavailable
from onceq.models import Checkpoint
from onceq.store.base import Store
from onceq.store.transitions import CLAIM, HEARTBEAT, RELEASE, RESCUE_STOPPED, UNREADABLE, Op
from onceq.store.tx import LeaseKey, Note, Params, Row, Tx, note
from onceq.store.urls import StoreURL
from onceq.store.wakeup import PollingWaker, Waker

T = TypeVar("T")
log = logging.getLogger("onceq.store")

MIN_VERSION = (3, 38, 0)
# How a write waits for the file's lock: whole-transaction retries with jitter, for up to
# LOCKED_RETRY_FOR, not SQLite's own busy handler. That one sleeps 1, 2, 5, 10, 15, 20…
# ms between looks: eight idle workers woken by one enqueue took up to 90 ms to claim
# their first jobs, one after the other. These look again after 50 µs, backing off to
# 2 ms in the first second, and to 100 ms after.
BUSY_TIMEOUT_MS = 0
RETRY_FIRST, RETRY_SOON, RETRY_LATE = 0.00005, 0.002, 0.1
# A TRUNCATE checkpoint holds new writers back while it waits for readers: briefly.
TRUNCATE_WAIT_MS = 100
# The WAL is cut back to this size whenever it starts over (after a full checkpoint);
# without it, a WAL that once grew (a long reader held it) keeps its size for ever.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
LOCKED_RETRY_FOR = 60.0
# sqlite3's message for TEXT that is not UTF-8 (SQLite itself never checks encodings).
UNDECODABLE = "Could not decode to UTF-8"


def _lenient(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


_savepoints = itertools.count()


class _SqliteTx:
    """A transaction; `now` is read once the write lock is held, so a write that waited
    for the lock never records a time from before it waited (a lease born expired)."""

    __slots__ = ("conn", "notes", "now", "q")

    def __init__(self, conn: sqlite3.Connection, q: dict[str, str], now: float) -> None:
        self.conn = conn
        self.q = q
        self.now = now
        self.notes: list[Note] = []

    def all(self, name: str, params: Params) -> list[Row]:
        rows = self.conn.execute(self.q[name], {**params, "now": self.now}).fetchall()
        return cast(list[Row], rows)

    def one(self, name: str, params: Params) -> Row | None:
        row = self.conn.execute(self.q[name], {**params, "now": self.now}).fetchone()
        return cast(Row | None, row)

    def run(self, name: str, params: Params) -> int:
        return self.conn.execute(self.q[name], {**params, "now": self.now}).rowcount

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        name = f"onceq_{next(_savepoints)}"
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.conn.execute(f"ROLLBACK TO {name}")
            self.conn.execute(f"RELEASE {name}")
            raise
        self.conn.execute(f"RELEASE {name}")


class SqliteStore(Store):
    """A job store on one SQLite file (or `:memory:`, for one process)."""

    dialect = "sqlite"
    # No data-modifying CTEs here: the slots go in first, then the jobs they hold.
    keyed_claim = ("slot_reap", "slot_take", "job_claim_keyed")

    def __init__(
        self, url: str, parsed: StoreURL, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(url)
        if sqlite3.sqlite_version_info < MIN_VERSION:
            raise ConfigError(
                f"SQLite {sqlite3.sqlite_version} is too old: onceq needs 3.38 or newer"
            )
        self.path = parsed.target
        self.synchronous = parsed.options.get("synchronous", "full").upper()
        self.clock = clock
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._conn = self._connect()
        # Commits through this store: PRAGMA data_version only counts other connections'.
        self.commits = 0

    # -- connection ----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            folder = Path(self.path).resolve().parent
            if not folder.is_dir():
                raise ConfigError(
                    f"cannot open SQLite database {self.path!r}: folder {str(folder)!r} "
                    "does not exist"
                )
        try:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,  # autocommit: transactions are explicit BEGINs
                check_same_thread=False,  # guarded by self._lock
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
            conn.row_factory = sqlite3.Row  # C-built, read by column name like a mapping
            self._retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        return conn

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross fork(): the child opens its own (the parent's is
        # left alone, not closed, so the parent's locks are untouched).
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._lock = threading.RLock()
            self._conn = self._connect()
        return self._conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- transactions --------------------------------------------------------------

    def _in_tx(self, fn: Callable[[Tx], T], labels: tuple[str, ...] = ()) -> T:
        def attempt() -> T:
            with self._lock:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    tx = _SqliteTx(conn, self.q, self.clock())
                    out = fn(tx)
                    if faults.RULES and any(faults.hit(f"{x}.before_commit") for x in labels):
                        raise StoreUnavailable(
                            "injected fault: the connection was lost before COMMIT"
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                self.commits += 1
            self._emit(tx.notes)
            if faults.RULES and any(faults.hit(f"{x}.committed") for x in labels):
                raise OutcomeUnknown("injected fault: the answer to COMMIT was lost")
            return out

        try:
            return self._retry_locked(attempt)
        except StoreUnavailable as exc:
            if UNDECODABLE not in str(exc) or not self._fail_unreadable():
                raise
        return self._retry_locked(attempt)  # the rows that stopped it are out of the way

    def _fail_unreadable(self) -> bool:
        """Fail the pending jobs whose text is not UTF-8, which would otherwise stop every
        claim that picks them, forever; True if there were any."""

        def find_and_fail(tx: Tx) -> bool:
            failed = []
            for row in tx.all("job_pending_text", {}):
                for column in ("queue", "task", "args", "key", "step"):
                    try:
                        bytes(row[column] or b"").decode("utf-8")
                    except UnicodeDecodeError:
                        error = f"PayloadError: the stored {column} is not valid UTF-8 text"
                        failed += tx.all(
                            "job_fail_unreadable", {"job_id": row["id"], "error": error}
                        )
                        tx.notes.append(
                            note(logging.ERROR, "job.failed", job=row["id"], error=error)
                        )
                        break
            self._transition(tx, UNREADABLE, failed)  # its workflow run advances too
            return bool(failed)

        return self._in_tx(find_and_fail, ("unreadable",))

    def _read(self, fn: Callable[[Tx], T]) -> T:
        # A deferred transaction: one consistent snapshot, and no wait for the writer
        # (WAL readers never block on it).
        def attempt() -> T:
            with self._lock:
                conn = self._connection()
                conn.execute("BEGIN")
                try:
                    return fn(_SqliteTx(conn, self.q, self.clock()))
                except sqlite3.OperationalError as exc:
                    if UNDECODABLE not in str(exc):
                        raise
                    # Show text another program wrote in another encoding, marked.
                    conn.text_factory = _lenient
                    try:
                        return fn(_SqliteTx(conn, self.q, self.clock()))
                    finally:
                        conn.text_factory = str
                finally:
                    conn.execute("COMMIT")

        return self._retry_locked(attempt)

    def _retry_locked(self, fn: Callable[[], T]) -> T:
        """Re-run `fn` while the file is locked by other writers, for a bounded time;
        then, or on any other operational failure (disk I/O…), StoreUnavailable."""
        start = time.monotonic()
        deadline = start + LOCKED_RETRY_FOR
        pause = RETRY_FIRST
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                message = str(exc)
                if "locked" not in message and "busy" not in message:
                    raise StoreUnavailable(f"SQLite database {self.path!r}: {exc}") from exc
                if time.monotonic() > deadline:
                    raise StoreUnavailable(
                        f"SQLite database {self.path!r} stayed locked for {LOCKED_RETRY_FOR:.0f}s"
                    ) from exc
            time.sleep(pause * (1 + random.random()))
            pause = min(pause * 2, RETRY_SOON if time.monotonic() - start < 1 else RETRY_LATE)

    def job_claimable(self, queues: Sequence[str] | None = None) -> bool:
        # A plain read (no BEGIN IMMEDIATE): readers never wait for the writer in WAL.
        params = {"queues": self._queues_param(queues)}
        return bool(self._read(lambda tx: tx.all("job_claimable", params)))

    def wal_checkpoint(self, mode: str = "PASSIVE") -> Checkpoint | None:
        if mode not in ("PASSIVE", "TRUNCATE"):
            raise ValueError(f"checkpoint mode must be PASSIVE or TRUNCATE, got {mode!r}")
        if self.path == ":memory:":
            return None  # no WAL
        with self._lock:
            conn = self._connection()
            if mode == "TRUNCATE":
                conn.execute(f"PRAGMA busy_timeout={TRUNCATE_WAIT_MS}")
            try:
                row = conn.execute(self.q[f"wal_checkpoint_{mode.lower()}"]).fetchone()
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"SQLite database {self.path!r}: {exc}") from exc
            finally:
                if mode == "TRUNCATE":
                    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        try:
            size = os.path.getsize(f"{self.path}-wal")
        except OSError:
            size = 0
        busy, pages, moved = (int(x) for x in row)
        return Checkpoint(mode, bool(busy), max(pages, 0), max(moved, 0), size)

    def data_version(self) -> int:
        """Changes whenever another connection commits to the file: a cheap wake-up hint."""
        with self._lock:
            row = self._connection().execute("PRAGMA data_version").fetchone()
        return int(row["data_version"])

    def waker(self, event: threading.Event) -> Waker:
        # PRAGMA data_version only counts other connections' commits: add this store's.
        return PollingWaker(lambda: (self.data_version(), self.commits))

    def _transient(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError | StoreUnavailable)

    # -- dialect parameters --------------------------------------------------------

    def _time_param(self, when: datetime | None) -> float | None:
        return None if when is None else when.timestamp()

    def _insert_many(self, tx: Tx, rows: Sequence[Params]) -> list[int]:
        # In-process, a statement per row costs microseconds: no round trips to save.
        ids = []
        for params in rows:
            row = tx.one("job_insert", params)
            if row is None:
                row = tx.one("job_get_by_key", {"key": params["key"]})
                assert row is not None
            ids.append(row["id"])
        return ids

    # -- attempt records -----------------------------------------------------------

    def _bookkeep(
        self,
        tx: Tx,
        op: Op,
        asked: Sequence[LeaseKey],
        kept: Sequence[Row],
        outcome: Callable[[Row], str],
        error: str | None,
    ) -> dict[LeaseKey, str]:
        if op is CLAIM:
            return {}  # an attempt's record is written when it ends; its job row holds it
        if op is not HEARTBEAT:
            by_outcome: dict[str, list[LeaseKey]] = {}
            for r in kept:
                by_outcome.setdefault(outcome(r), []).append((r["id"], r["token"]))
            back = 1 if op in (RELEASE, RESCUE_STOPPED) else 0  # attempt given back
            for name, keys in by_outcome.items():
                params = {"outcome": name, "error": error, "back": back}
                tx.run("attempt_end", {**params, **self._leases_param(keys)})
        held = {(r["id"], r["token"]) for r in kept}
        missing = [k for k in asked if k not in held]
        replayed: dict[LeaseKey, str] = {}
        if missing and op.replays:
            for r in tx.all("attempt_outcomes", self._leases_param(missing)):
                if r["outcome"] in op.replays and (not op.same_error or r["error"] == error):
                    replayed[(r["job_id"], r["token"])] = r["outcome"]
        return replayed

    # -- schema --------------------------------------------------------------------

    def migrate(self) -> list[int]:
        # A migration that rebuilds a table (SQLite cannot reorder columns otherwise)
        # drops the old one: with foreign keys on, that drop would first delete every
        # row referring to it (ON DELETE CASCADE). The pragma only takes effect outside
        # a transaction; the migrations' own rows are copied whole.
        with self._lock:
            conn = self._connection()
            conn.execute("PRAGMA foreign_keys=OFF")
            try:
                applied = super().migrate()
                if conn.execute("PRAGMA foreign_key_check").fetchall():
                    raise SchemaError(f"SQLite database {self.path!r}: foreign keys broken")
                return applied
            finally:
                conn.execute("PRAGMA foreign_keys=ON")

    def _run_script(self, tx: Tx, script: str) -> None:
        assert isinstance(tx, _SqliteTx)
        for statement in _statements(script):  # sqlite3 runs one statement per execute
            tx.conn.execute(statement)


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (sqlite3 runs one per execute)."""
    out, buffer = [], ""
    for line in script.splitlines(keepends=True):
        if not buffer and line.lstrip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            out.append(buffer.strip())
            buffer = ""
    if any(line.strip() and not line.lstrip().startswith("--") for line in buffer.splitlines()):
        raise ValueError(f"incomplete statement in migration: {buffer[:60]!r}")
    return out
