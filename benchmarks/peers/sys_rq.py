"""RQ on the benchmark's own Redis db."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from common import Run, Runner, Variant, fresh_redis_db, python

QUEUE = "peers"


class Rq(Runner):
    key, title, backend = "rq", "RQ (Redis)", "Redis"
    packages = ("rq", "redis")
    service = "redis"
    burst = True  # --burst: quit once the queue is empty

    def throughput_variants(self) -> list[Variant]:
        return [
            Variant(
                "worker-pool -n 2, -w SimpleWorker (no fork)",
                {"worker_class": "rq.worker.SimpleWorker"},
            ),
            # RQ's default and recommended Worker forks a work horse per job: about 10x
            # slower here, so it is measured in the first sweep only ("once")
            Variant(
                "worker-pool -n 2 (Worker: a fork per job)", {"worker_class": None, "once": True}
            ),
        ]

    def latency_variants(self) -> list[Variant]:
        return [
            Variant("rq worker (Worker: a fork per job)", {"worker_class": None}),
            Variant(
                "rq worker -w SimpleWorker (no fork)", {"worker_class": "rq.worker.SimpleWorker"}
            ),
        ]

    @contextlib.contextmanager
    def store(self, run: Run) -> Iterator[None]:
        import redis
        from rq import Queue

        with fresh_redis_db() as url:
            conn = redis.Redis.from_url(url)
            run.state.update(conn=conn, queue=Queue(QUEUE, connection=conn), url=url)
            try:
                yield
            finally:
                conn.close()

    def enqueue_bulk(self, run: Run, variant: Variant, n: int) -> None:
        from rq import Queue

        queue = run.state["queue"]
        with run.state["conn"].pipeline() as pipe:
            queue.enqueue_many(
                [Queue.prepare_data("apps.rq_app.noop", (i,)) for i in range(n)], pipeline=pipe
            )
            pipe.execute()

    def enqueue_one(self, run: Run, i: int, t: float) -> None:
        run.state["queue"].enqueue("apps.rq_app.stamp", i, t)

    def worker_commands(
        self, run: Run, variant: Variant, *, processes: int, burst: bool
    ) -> list[list[str]]:
        url = run.state["url"]
        cls = variant.options.get("worker_class")
        extra = ["-w", cls] if cls else []
        if processes == 1:
            argv = python("-m", "rq.cli", "worker", "-u", url, "-q", *extra, QUEUE)
        else:
            argv = python(
                "-m", "rq.cli", "worker-pool", "-u", url, "-n", str(processes),
                "-l", "WARNING", *extra, QUEUE,
            )  # fmt: skip
        return [[*argv, "--burst"] if burst else argv]
