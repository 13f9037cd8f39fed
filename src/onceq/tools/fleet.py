"""Worker processes for the tools: start them, know when they are ready, kill some."""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from onceq.errors import OnceqError

READY_TIMEOUT = 120.0


class Fleet:
    """Bare worker processes (no supervisor) of the app at `app_ref`, on `url`.

    Bare on purpose: a SIGKILLed member's jobs come back only through the lease expiry
    and the rescue pass of the others, the path that matters most to prove.
    """

    def __init__(
        self,
        app_ref: str,
        url: str,
        folder: Path,
        *,
        queue: str | None = None,
        concurrency: int = 1,
        lease: float = 2.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.app_ref, self.url, self.folder = app_ref, url, folder
        self.options: dict[str, Any] = {
            "queues": [queue] if queue else None,
            "concurrency": concurrency,
            "lease": lease,
        }
        self.env = env or {}
        self.members: list[multiprocessing.process.BaseProcess] = []
        self.kills = 0
        self.killed: set[int] = set()  # pids of the members it SIGKILLed
        self._count = 0
        # Ready flags of its own: a folder may serve several fleets in turn, and a flag
        # left by an earlier one must not pass for a new member being ready.
        self._tag = uuid.uuid4().hex[:8]
        self._ctx = multiprocessing.get_context("spawn")

    def start(self, n: int = 1) -> None:
        """Start n more members and wait until each is about to claim."""
        ready = []
        for _ in range(n):
            self._count += 1
            flag = self.folder / f"ready.{self._tag}.{self._count}"
            process = self._ctx.Process(
                target=_member_main,
                args=(self.app_ref, self.url, self.options, self.env, str(flag),
                      str(self.folder / "workers.log")),
                daemon=True,
            )  # fmt: skip
            process.start()
            self.members.append(process)
            ready.append((process, flag))
        deadline = time.monotonic() + READY_TIMEOUT
        for process, flag in ready:
            while not flag.exists():
                if not process.is_alive():
                    raise OnceqError(f"a worker process exited at start (see {self.folder})")
                if time.monotonic() > deadline:
                    raise OnceqError("worker processes did not start in time")
                time.sleep(0.01)

    def kill_one(self) -> None:
        """SIGKILL a random live member (no drain, no release) and start a new one."""
        live = [p for p in self.members if p.is_alive()]
        if not live:
            return
        victim = random.choice(live)
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(10)
        self.kills += 1
        self.killed.add(victim.pid)
        self.start(1)

    def stop(self) -> None:
        """SIGTERM every member (they drain), then SIGKILL what is left."""
        for p in self.members:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)
        for p in self.members:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join(10)


def _member_main(
    app_ref: str,
    url: str,
    options: dict[str, Any],
    env: dict[str, str],
    ready: str,
    log_path: str,
) -> None:
    os.environ.update(env)
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(process)d %(message)s"))
    root = logging.getLogger("onceq")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    root.propagate = False
    from onceq.loader import import_app

    app = import_app(app_ref)
    app.use(url)
    worker = app.worker(**options)
    worker.run(ready=Path(ready).touch)
