"""pgqueuer on a fresh PostgreSQL database, asyncpg driver, async entrypoints."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from common import Run, Runner, Variant, fresh_database, python


async def _install(dsn: str) -> None:
    import asyncpg
    from pgqueuer import Queries

    connection = await asyncpg.connect(dsn)
    try:
        await Queries.from_asyncpg_connection(connection).install()
    finally:
        await connection.close()


class Pgqueuer(Runner):
    key, title, backend = "pgqueuer", "pgqueuer", "PostgreSQL"
    packages = ("pgqueuer", "asyncpg")
    service = "postgres"
    burst = True  # --mode drain: exits once the queue is empty

    def throughput_variants(self) -> list[Variant]:
        return [Variant(f"2 processes, --batch-size {b}", {"batch_size": b}) for b in (10, 50, 200)]

    def latency_variants(self) -> list[Variant]:
        return [Variant("1 process, defaults (--batch-size 10)", {"batch_size": 10})]

    @contextlib.contextmanager
    def store(self, run: Run) -> Iterator[None]:
        import psycopg
        from pgqueuer.db import SyncPsycopgDriver
        from pgqueuer.queries import SyncQueries

        with fresh_database("pgqueuer") as dsn:
            asyncio.run(_install(dsn))
            with psycopg.connect(dsn, autocommit=True) as conn:
                run.state["queries"] = SyncQueries(SyncPsycopgDriver(conn))
                run.env["PEERS_PG_DSN"] = dsn
                yield

    def enqueue_bulk(self, run: Run, variant: Variant, n: int) -> None:
        run.state["queries"].enqueue(["noop"] * n, [str(i).encode() for i in range(n)], [0] * n)

    def enqueue_one(self, run: Run, i: int, t: float) -> None:
        run.state["queries"].enqueue("stamp", f"{i} {t:.6f}".encode())

    def worker_commands(
        self, run: Run, variant: Variant, *, processes: int, burst: bool
    ) -> list[list[str]]:
        # = pgq run apps.pgqueuer_app:create_pgqueuer --batch-size B [--mode drain]
        argv = python(
            "-m", "apps.pgqueuer_worker", "--batch-size", str(variant.options["batch_size"])
        )
        return [[*argv, "--drain"] if burst else argv for _ in range(processes)]
