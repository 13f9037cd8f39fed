"""The PostgreSQL job store: psycopg 3 with a connection pool, for many worker machines.

- Claims use `FOR UPDATE SKIP LOCKED` in a CTE; every lease time is the database's
  `now()`, so the clocks of worker machines do not matter.
- READ COMMITTED throughout, and short transactions: a long-open transaction anywhere
  stalls a SKIP LOCKED queue (dead tuples pile up behind it).
- `?schema=NAME` in the URL keeps onceq's tables in their own schema (created on
  migrate); its NOTIFY channel is per schema too.
- Deadlocks and serialization failures re-run the whole transaction. A lost connection
  is not retried here: whether the commit happened is unknown, and the layer above
  decides (the worker keeps its results and tries again; fencing makes that safe).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
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

from onceq.errors import ConfigError, StoreUnavailable
from onceq.store.base import Params, Row, Store, Tx
from onceq.store.urls import StoreURL

log = logging.getLogger("onceq.store")
T = TypeVar("T")

CONNECT_TIMEOUT = 5.0
DEFAULT_POOL_SIZE = 4
# An arbitrary constant: the advisory lock that serializes concurrent `migrate` runs.
MIGRATE_LOCK = 0x6F6E6365  # "once"
_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)


class _PgTx:
    __slots__ = ("cur", "q")

    def __init__(self, cur: psycopg.Cursor[dict[str, Any]], q: dict[str, bytes]) -> None:
        self.cur = cur
        self.q = q

    def all(self, name: str, params: Params) -> list[Row]:
        self.cur.execute(self.q[name], params)
        return list(self.cur.fetchall()) if self.cur.description else []

    def one(self, name: str, params: Params) -> Row | None:
        self.cur.execute(self.q[name], params)
        return self.cur.fetchone() if self.cur.description else None

    def run(self, name: str, params: Params) -> int:
        self.cur.execute(self.q[name], params)
        return self.cur.rowcount


class PostgresStore(Store):
    """A job store on a PostgreSQL database (optionally in its own schema)."""

    dialect = "postgres"

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
        # No bitmap scans on onceq's connections: a queue table changes faster than
        # autovacuum analyzes it, and with statistics that still say "a few pending rows"
        # the planner claims through a bitmap scan that sorts *every* pending job (10 ms at
        # 10,000 pending, growing with the backlog) instead of walking the pending index
        # in claim order and stopping after LIMIT rows (2 ms). Nothing onceq runs needs them.
        settings = ["-c enable_bitmapscan=off"]
        if self.schema:
            settings.append(f"-c search_path={self.schema}")
        if own := conninfo_to_dict(self.conninfo).get("options"):
            settings.insert(0, str(own))  # the URL's own options= still apply
        self.connect_kwargs: dict[str, Any] = {
            "connect_timeout": int(CONNECT_TIMEOUT),
            "options": " ".join(settings),
        }
        # One direct connection first: its error says why the server is unreachable,
        # where a pool would only time out.
        self.connect().close()
        self.pool = ConnectionPool(
            self.conninfo,
            min_size=1,
            max_size=max(size, 1),
            kwargs=self.connect_kwargs,
            configure=_configure,
            open=False,
            name="onceq",
        )
        self.pool.open(wait=True, timeout=CONNECT_TIMEOUT)

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection[Any]:
        """A connection outside the pool (LISTEN needs one of its own)."""
        try:
            conn = psycopg.connect(self.conninfo, autocommit=autocommit, **self.connect_kwargs)
        except psycopg.OperationalError as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"cannot reach PostgreSQL at {_safe(self.conninfo)}: {reason}"
            ) from exc
        _configure(conn)
        return conn

    def close(self) -> None:
        self.pool.close()

    # -- transactions --------------------------------------------------------------

    def _in_tx(self, fn: Callable[[Tx], T]) -> T:
        pause = 0.005
        dead = 0  # pooled connections found dead before their transaction began
        for attempt in range(10):
            began = False
            try:
                with (
                    self.pool.connection() as conn,
                    conn.transaction(),  # BEGIN: where a dead connection shows
                    conn.cursor(row_factory=dict_row) as cur,
                ):
                    began = True
                    return fn(_PgTx(cur, self._qb))
            except _RETRYABLE as exc:
                if attempt == 9:
                    raise
                log.info("retrying a transaction after %s", type(exc).__name__)
                time.sleep(pause)
                pause *= 2
            except psycopg.OperationalError as exc:
                # A connection that died while idle in the pool (a server restart):
                # nothing was sent, so another connection may try. The pool drops it.
                if not began and dead < 3:
                    dead += 1
                    log.info("a pooled connection was dead (%s); trying another", exc)
                    continue
                reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
                raise StoreUnavailable(f"PostgreSQL at {_safe(self.conninfo)}: {reason}") from exc
            except PoolTimeout as exc:
                reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
                raise StoreUnavailable(f"PostgreSQL at {_safe(self.conninfo)}: {reason}") from exc
        raise AssertionError("unreachable")

    # -- dialect parameters --------------------------------------------------------

    def _now(self) -> None:
        return None

    def _p(self, **params: Any) -> Params:
        params["channel"] = self.channel
        return super()._p(**params)

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
             r["max_attempts"], r["run_id"], r["step"], r["item"]]
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
        tx.all("job_notify", {"channel": self.channel, "queues": queues})
        return [next(keyless) if r["key"] is None else by_key[r["key"]] for r in rows]

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


def _configure(conn: psycopg.Connection[Any]) -> None:
    # json comes back as text: the layers above decode it (one bad row fails one job).
    conn.adapters.register_loader("json", TextLoader)
    conn.adapters.register_loader("jsonb", TextLoader)


def _safe(conninfo: str) -> str:
    """The URL without its password, for error messages."""
    parts = urlsplit(conninfo)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path}"
