"""One thread for a worker's periodic duties: each service's `run_once(now)` returns
when it wants to run again (time.monotonic() seconds), and the thread sleeps until the
earliest. A service that raises is tried again after a pause that grows, and holds up
none of the others."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

log = logging.getLogger("onceq.worker")
MAX_PAUSE = 30.0


class Service(Protocol):
    def run_once(self, now: float) -> float:
        """One turn; when to be called again (time.monotonic() seconds)."""
        ...


class Ticker:
    """Runs services on a thread of its own until stopped."""

    def __init__(self, services: Sequence[Service], name: str = "onceq-ticker") -> None:
        self.services = list(services)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.loop, name=name, daemon=True)

    def start(self) -> None:
        if self.services:
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, then let each service hand back what it holds (`close()`)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        for service in self.services:
            close = getattr(service, "close", None)
            if close is not None and not self._thread.is_alive():
                try:
                    close()
                except Exception as exc:
                    log.warning("%s could not close (%s)", type(service).__name__, exc)

    def loop(self) -> None:
        due = [0.0] * len(self.services)
        pause = [0.0] * len(self.services)
        while not self._stop.is_set():
            for i, service in enumerate(self.services):
                now = time.monotonic()
                if due[i] > now or self._stop.is_set():
                    continue
                try:
                    due[i] = service.run_once(now)
                    pause[i] = 0.0
                except Exception as exc:
                    pause[i] = min(max(pause[i] * 2, 0.5), MAX_PAUSE)
                    due[i] = now + pause[i]
                    log.warning("%s failed (%s: %s); again in %.1fs", type(service).__name__,
                                type(exc).__name__, exc, pause[i])  # fmt: skip
            self._stop.wait(max(0.0, min(due) - time.monotonic()))


class WallClock:
    """A service that counts in wall-clock time (`run_once(now: datetime) -> datetime`,
    like the Scheduler), run by the Ticker, which counts in time.monotonic()."""

    def __init__(self, service: WallClockService, longest: float = 60.0) -> None:
        self.service, self.longest = service, longest

    def run_once(self, now: float) -> float:
        wall = datetime.now(UTC)
        wait = (self.service.run_once(wall) - wall).total_seconds()
        return now + min(max(wait, 0.0) + 0.001, self.longest)  # a clock jump costs a minute


class WallClockService(Protocol):
    def run_once(self, now: datetime) -> datetime: ...
