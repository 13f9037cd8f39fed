"""Celery with the Redis broker (the benchmark's own Redis db), no result backend."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from common import Run, Runner, Variant, fresh_redis_db, python

FAST_START = ["--without-gossip", "--without-mingle", "--without-heartbeat"]


class Celery(Runner):
    key, title, backend = "celery", "Celery (Redis)", "Redis"
    packages = ("celery", "redis")
    service = "redis"
    burst = False  # a Celery worker never exits by itself

    def throughput_variants(self) -> list[Variant]:
        return [
            Variant("-P prefork -c 2, prefetch x4 (defaults)", {"pool": "prefork", "c": 2}),
            Variant(
                "-P prefork -c 2, prefetch x128, no gossip/mingle/heartbeat",
                {"pool": "prefork", "c": 2, "prefetch": 128, "fast_start": True},
            ),
            Variant(
                "2 workers x -P solo, prefetch x128, no gossip/mingle/heartbeat",
                {"pool": "solo", "c": 1, "workers": 2, "prefetch": 128, "fast_start": True},
            ),
            Variant(
                "2 workers x -P threads -c 8, prefetch x128, no gossip/mingle/heartbeat",
                {"pool": "threads", "c": 8, "workers": 2, "prefetch": 128, "fast_start": True},
            ),
        ]

    def latency_variants(self) -> list[Variant]:
        return [Variant("-P prefork -c 1, defaults", {"pool": "prefork", "c": 1})]

    @contextlib.contextmanager
    def store(self, run: Run) -> Iterator[None]:
        with fresh_redis_db():
            yield

    def enqueue_bulk(self, run: Run, variant: Variant, n: int) -> None:
        from apps import celery_app

        # No batch send in Celery: one publish per task, over one held producer
        with celery_app.app.producer_or_acquire() as producer:
            for i in range(n):
                celery_app.noop.apply_async((i,), producer=producer)

    def enqueue_one(self, run: Run, i: int, t: float) -> None:
        from apps import celery_app

        celery_app.stamp.apply_async((i, t))

    def worker_env(self, variant: Variant) -> dict[str, str]:
        return {"PEERS_CELERY_PREFETCH": str(variant.options.get("prefetch", 4))}

    def worker_commands(
        self, run: Run, variant: Variant, *, processes: int, burst: bool
    ) -> list[list[str]]:
        o = variant.options
        count = o.get("workers", 1) if processes > 1 else 1
        argv = python("-m", "celery", "-A", "apps.celery_app", "worker", "-P", o["pool"])
        argv += ["-c", str(o["c"]), "--loglevel", "WARNING"]
        argv += FAST_START if o.get("fast_start") else []
        return [[*argv, "-n", f"peers{n}@%h"] for n in range(count)]
