"""SIGTERM/SIGINT for a worker run on the main thread: the first drains, a second exits."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from onceq import logs

log = logging.getLogger("onceq.worker")


def install(name: str, drain: Callable[[], None]) -> Callable[[], None]:
    """Install the handlers; returns what restores the previous ones.

    The handler takes no lock: it runs on the main thread between two bytecodes,
    possibly inside Event.wait() with that event's lock held, so even Event.set() could
    deadlock there. It writes a byte to a pipe; a relay thread does the rest.
    """
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.getsignal(s) for s in signals}
    read_fd, write_fd = os.pipe()
    received: list[int] = []

    def on_signal(signum: int, _: Any) -> None:
        if received:
            os.write(2, b"onceq: second signal: exiting now; held leases will be rescued\n")
            os._exit(128 + signum)
        received.append(signum)
        os.write(write_fd, b"s")

    def relay() -> None:
        if os.read(read_fd, 1) and received:  # b"": closed, the worker is done
            logs.event(log, logging.INFO, "worker.draining", worker=name,
                       signal=signal.Signals(received[0]).name)  # fmt: skip
            drain()
        os.close(read_fd)

    threading.Thread(target=relay, name="onceq-signals", daemon=True).start()
    for s in signals:
        signal.signal(s, on_signal)

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)
        os.close(write_fd)

    return restore
