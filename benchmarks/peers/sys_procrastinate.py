"""procrastinate on a fresh PostgreSQL database, async tasks, LISTEN/NOTIFY on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from common import Run, Runner, Variant, fresh_database, python


class Procrastinate(Runner):
    key, title, backend = "procrastinate", "procrastinate", "PostgreSQL"
    packages = ("procrastinate",)
    service = "postgres"
    burst = True  # worker --one-shot: exits once no job is left

    def throughput_variants(self) -> list[Variant]:
        return [Variant(f"2 workers x --concurrency {c}", {"concurrency": c}) for c in (1, 8, 32)]

    def latency_variants(self) -> list[Variant]:
        return [Variant("1 worker, --concurrency 1 (default)", {"concurrency": 1})]

    @contextlib.contextmanager
    def store(self, run: Run) -> Iterator[None]:
        import procrastinate

        with fresh_database("procrastinate") as dsn:
            app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))
            with app.open():
                app.schema_manager.apply_schema()
                run.state["app"] = app
                run.env["PEERS_PG_DSN"] = dsn
                yield

    def enqueue_bulk(self, run: Run, variant: Variant, n: int) -> None:
        run.state["app"].configure_task("noop").batch_defer(*({"i": i} for i in range(n)))

    def enqueue_one(self, run: Run, i: int, t: float) -> None:
        run.state["app"].configure_task("stamp").defer(i=i, t=t)

    def worker_commands(
        self, run: Run, variant: Variant, *, processes: int, burst: bool
    ) -> list[list[str]]:
        argv = python(
            "-m", "procrastinate", "--app=apps.procrastinate_app.app", "worker",
            "--concurrency", str(variant.options["concurrency"]),
        )  # fmt: skip
        return [[*argv, "--one-shot"] if burst else argv for _ in range(processes)]
