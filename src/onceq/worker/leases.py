"""The leases a worker holds, and the two services that look after them.

- `Heartbeat` extends every held lease in one statement, every `lease / 3`, and tells
  the handlers of the leases the store no longer has (rescued, re-claimed, cancelled).
- `LeaseKeeper` tells the handler of a lease that has not been renewed for `lease -
  margin` seconds, counted from when the last renewal that got through was *sent* (or
  the claim was). It runs on a timer of its own and never touches the database, so a
  worker that is cut off — a silent network, a hung driver, a stalled server — still
  tells its handlers before its lease can expire on the database's clock, and so before
  anyone else could re-claim the job.

Each has `run_once(now)`, which tests call directly; `loop()` is the thin ticker.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from onceq.context import JobContext
from onceq.models import Lease
from onceq.store import Store
from onceq.worker.executors import PoolItem

if TYPE_CHECKING:
    from onceq.task import Task

log = logging.getLogger("onceq.worker")
LeaseKey = tuple[int, int]


@dataclass(eq=False, slots=True)
class Held:
    """A job this worker holds a lease on."""

    lease: Lease
    ctx: JobContext
    task: Task[..., Any] | None
    renewed: float  # when the last claim or heartbeat that got through was sent
    deadline: float | None = None  # thread handlers: when the dispatcher gives up on it
    item: PoolItem | None = None
    aio: asyncio.Task[None] | None = None  # async handlers: cancelled on lease loss
    started: float = field(default_factory=time.monotonic)
    recording: bool = False  # its outcome is being written: a heartbeat miss is no loss
    # Given up by this worker (its keeper): the store may still hold the lease, but what
    # the handler returns cannot count. Its outcome is written only once the store has
    # the lease back (`surrendered`): the store then refuses it, and says so.
    given_up: bool = False
    surrendered: bool = False
    key: LeaseKey = field(init=False)  # (job id, token): read several times per job

    def __post_init__(self) -> None:
        self.key = (self.lease.job_id, self.lease.token)

    @property
    def writable(self) -> bool:
        """Whether its outcome may be sent to the store now."""
        return self.surrendered or not self.given_up


class Leases:
    """The leases a worker holds, shared by its threads. Keyed by lease, not job: after
    a lease loss the same job may be re-claimed here while the old attempt's handler
    still runs, and both hold a slot."""

    def __init__(self) -> None:
        self._held: dict[LeaseKey, Held] = {}
        self._lock = threading.Lock()

    def add(self, held: Held) -> None:
        with self._lock:
            self._held[held.key] = held

    def drop(self, held: Held) -> bool:
        """Forget `held` if it is still the one under its key; True if it was."""
        with self._lock:
            if self._held.get(held.key) is held:
                del self._held[held.key]
                return True
            return False

    def holds(self, held: Held) -> bool:
        with self._lock:
            return self._held.get(held.key) is held

    def snapshot(self) -> list[Held]:
        with self._lock:
            return list(self._held.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

    def mark_lost(self, held: Held) -> bool:
        """Mark a lease lost, once: the heartbeat and the keeper may both find it. True
        if this call marked it (and so must tell its handler)."""
        with self._lock:
            if held.ctx.lost:
                return False
            held.ctx.lost = True
            return True


class Heartbeat:
    """Extends every held lease in one statement; tells the handlers of lost ones."""

    def __init__(
        self, store: Store, leases: Leases, lease: float, lose: Callable[[Held, str], object]
    ) -> None:
        self.store, self.leases, self.lease, self.lose = store, leases, lease, lose
        self.interval = lease / 3  # never closer to the lease: a late one lets a live job go

    def run_once(self, now: float | None = None) -> set[LeaseKey]:
        """One heartbeat: the leases the store still has."""
        held = [h for h in self.leases.snapshot() if not h.ctx.lost]
        if not held:
            return set()
        sent = time.monotonic() if now is None else now
        kept = self.store.job_heartbeat([h.lease for h in held], self.lease)
        for h in held:
            if h.key in kept:
                h.renewed = max(h.renewed, sent)
            elif h.key in kept.busy:
                continue  # locked by a write in flight (its completion): ask again later
            elif self.leases.holds(h) and not h.recording:  # not merely finished meanwhile
                self.lose(h, "the store no longer has this lease")
        return kept

    def loop(self, stop: threading.Event, then: Callable[[float], object] | None = None) -> None:
        """The ticker; `then(now)` runs after each beat (the worker registry's)."""
        while not stop.wait(self.interval):
            try:
                self.run_once()
            except Exception as exc:
                log.warning("heartbeat failed (%s: %s)", type(exc).__name__, exc)
            if then is not None:
                try:
                    then(time.monotonic())
                except Exception as exc:
                    log.warning("registry beat failed (%s: %s)", type(exc).__name__, exc)


class LeaseKeeper:
    """Gives up, by itself, every lease not renewed for `lease - margin` seconds."""

    def __init__(
        self, leases: Leases, lease: float, margin: float, lose: Callable[[Held, str], object]
    ) -> None:
        self.leases, self.lose = leases, lose
        self.after = lease - margin  # a lease this old may be gone within `margin`
        # The longest it sleeps: shorter than `after`, so a lease taken while it sleeps
        # is due only after its next look (no need to wake it for every new lease).
        self.tick = lease / 3

    def run_once(self, now: float) -> float:
        """Tell the handlers of the leases due now; returns when the next one is due."""
        due = now + self.tick
        for h in self.leases.snapshot():
            if h.ctx.lost or h.recording:
                continue
            at = h.renewed + self.after
            if at <= now:
                self.lose(h, f"no heartbeat got through for {now - h.renewed:.2f}s")
            else:
                due = min(due, at)
        return due

    def loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            due = self.run_once(time.monotonic())
            stop.wait(max(0.0, due - time.monotonic()))
