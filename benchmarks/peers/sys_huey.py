"""huey with SqliteHuey: a SQLite file in the run's temp dir (huey's defaults: WAL,
SQLite's default synchronous=FULL)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from common import Run, Runner, Variant, python


class Huey(Runner):
    key, title, backend = "huey", "huey (SqliteHuey)", "SQLite"
    packages = ("huey",)
    burst = False  # huey_consumer has no mode that exits when the queue is empty

    def throughput_variants(self) -> list[Variant]:
        return [
            Variant("1 consumer, -k process -w 2", {"consumers": 1, "kind": "process", "w": 2}),
            Variant("2 consumers x -k thread -w 1", {"consumers": 2, "kind": "thread", "w": 1}),
            Variant("2 consumers x -k thread -w 4", {"consumers": 2, "kind": "thread", "w": 4}),
        ]

    def latency_variants(self) -> list[Variant]:
        return [
            Variant("-k thread -w 1, default polling (-d 0.1 -m 10)", {"kind": "thread", "w": 1}),
            Variant(
                "-k thread -w 1, tuned polling (-d 0.001 -m 0.01)",
                {"kind": "thread", "w": 1, "polling": ["-d", "0.001", "-m", "0.01"]},
            ),
        ]

    @contextlib.contextmanager
    def store(self, run: Run) -> Iterator[None]:
        from apps import huey_app

        path = str(run.tmp / "huey.db")
        huey, noop, stamp = huey_app.build(path)
        run.state.update(huey=huey, noop=noop, stamp=stamp)
        run.env["PEERS_HUEY_FILE"] = path
        try:
            yield
        finally:
            huey.storage.close()

    def enqueue_bulk(self, run: Run, variant: Variant, n: int) -> None:
        # huey has no batch insert: Task.map() is its documented way to enqueue many
        run.state["noop"].map(range(n))

    def enqueue_one(self, run: Run, i: int, t: float) -> None:
        run.state["stamp"](i, t)

    def worker_commands(
        self, run: Run, variant: Variant, *, processes: int, burst: bool
    ) -> list[list[str]]:
        o = variant.options
        argv = python(
            "-m", "huey.bin.huey_consumer", "apps.huey_app.huey",
            "-k", o["kind"], "-w", str(o["w"]), *o.get("polling", []),
        )  # fmt: skip
        if o["kind"] == "process":  # one consumer whose workers are the processes
            return [argv]
        return [argv for _ in range(o.get("consumers", processes) if processes > 1 else 1)]
