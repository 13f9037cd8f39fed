"""onceq on SQLite (a file in the run's temp dir) and on PostgreSQL (a fresh database,
onceq's tables in schema `onceq_bench`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from common import Run, Runner, Variant, fresh_database, python


class Onceq(Runner):
    packages = ("onceq",)

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        if dialect == "sqlite":
            self.key, self.title, self.backend = "onceq-sqlite", "onceq", "SQLite"
        else:
            self.key, self.title, self.backend = "onceq-postgres", "onceq", "PostgreSQL"
            self.service = "postgres"
        self.burst = True

    def throughput_variants(self) -> list[Variant]:
        out = [Variant(f"c={c}", {"concurrency": c, "handler": "noop"}) for c in (8, 32, 64)]
        out.append(Variant("c=64, async def", {"concurrency": 64, "handler": "noop_async"}))
        return out

    def latency_variants(self) -> list[Variant]:
        return [Variant("c=8 (default)", {"concurrency": 8})]

    @contextlib.contextmanager
    def store(self, run: Run) -> Iterator[None]:
        from apps import onceq_app

        with contextlib.ExitStack() as stack:
            if self.dialect == "sqlite":
                url = f"sqlite:///{run.tmp / 'onceq.db'}"
            else:
                url = stack.enter_context(fresh_database("onceq")) + "?schema=onceq_bench"
            onceq_app.app.close()
            onceq_app.app.use(url)
            onceq_app.app.store.migrate()
            run.env["ONCEQ_URL"] = url
            try:
                yield
            finally:
                onceq_app.app.close()

    def enqueue_bulk(self, run: Run, variant: Variant, n: int) -> None:
        from apps import onceq_app

        from onceq.models import NewJob

        task = onceq_app.app.tasks[f"apps.onceq_app.{variant.options['handler']}"]
        news = [NewJob(task=task.name, args={"i": i}) for i in range(n)]
        onceq_app.app.store.job_insert_many(news)

    def enqueue_one(self, run: Run, i: int, t: float) -> None:
        from apps import onceq_app

        onceq_app.stamp.enqueue(i=i, t=t)

    def worker_commands(
        self, run: Run, variant: Variant, *, processes: int, burst: bool
    ) -> list[list[str]]:
        argv = python(
            "-m", "onceq", "worker", "--app", "apps.onceq_app:app",
            "--processes", str(processes),
            "--concurrency", str(variant.options["concurrency"]),
            "--log-level", "WARNING",
        )  # fmt: skip
        return [[*argv, "--burst"] if burst else argv]
