"""Periodic tasks: a task with a schedule, and the service by which every worker
enqueues its due ticks, each exactly once.

There is no leader. Each worker's `Scheduler` wakes at the next tick and asks the store
to enqueue what is due (`Store.tick_insert`: a compare-and-set of the task's last tick
and the job, in one transaction, under a key unique to the task and tick); whichever
worker comes first enqueues it, the others find it done. A worker that restarts, or
that was away, learns the last tick from the store, not from its own memory, so ticks
neither repeat nor wait for a restart: after downtime, only the latest `catch_up`
missed ticks are enqueued (1 by default), never a storm of them.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from onceq import logs
from onceq.errors import ConfigError, PayloadError
from onceq.models import NewJob
from onceq.schedule.cron import Cron, Every, Schedule
from onceq.store import Store
from onceq.task import MAX_NAME_BYTES, Task

log = logging.getLogger("onceq.periodic")
IDLE_WAKE = timedelta(hours=1)  # when no schedule has a tick coming (cron for 50 years)


@dataclass(frozen=True, slots=True)
class Periodic:
    """A task run on a schedule; its handler may take `tick: datetime`, the tick's time
    (in the schedule's time zone)."""

    task: Task[..., Any]
    schedule: Schedule
    catch_up: int = 1

    @classmethod
    def make(
        cls,
        task: Task[..., Any],
        *,
        cron: str | None = None,
        timezone: str | None = None,
        every: float | None = None,
        catch_up: int = 1,
    ) -> Periodic:
        """A checked periodic task: one of `cron` (with an optional IANA `timezone`) or
        `every` (seconds); ConfigError in one line otherwise."""
        what = f"periodic task {task.name}"
        if (cron is None) == (every is None):
            raise ConfigError(f"{what}: give either cron= or every=")
        if every is not None and timezone is not None:
            raise ConfigError(f"{what}: timezone= goes with cron=, not every=")
        if not isinstance(catch_up, int) or isinstance(catch_up, bool) or catch_up < 1:
            raise ConfigError(f"{what}: catch_up must be a whole number >= 1, got {catch_up!r}")
        try:
            schedule: Schedule = Every(every) if every is not None else Cron(cron or "", timezone)
        except ConfigError as exc:
            raise ConfigError(f"{what}: {exc}") from None
        periodic = cls(task, schedule, catch_up)
        try:
            periodic.job(datetime(2000, 1, 1, tzinfo=UTC))
        except PayloadError as exc:
            raise ConfigError(f"{what}: a tick cannot call its handler ({exc})") from None
        return periodic

    @property
    def name(self) -> str:
        return self.task.name

    def spec(self) -> dict[str, Any]:
        """The schedule as stored (for `onceq periodic`)."""
        return {**self.schedule.spec(), "catch_up": self.catch_up}

    def job(self, tick: datetime) -> NewJob:
        """The job of one tick: its `tick` argument, if the handler takes one, and the
        key that makes it unique."""
        takes_tick = "tick" in inspect.signature(self.task.fn).parameters
        args = {"tick": self.schedule.local(tick)} if takes_tick else {}
        return self.task.new_job(self.task.validate((), args), {"key": tick_key(self.name, tick)})


def tick_key(name: str, tick: datetime) -> str:
    """The idempotency key of a task's tick (a digest of the name when a long name would
    not fit an indexed key)."""
    when = tick.astimezone(UTC).isoformat()
    key = f"onceq.periodic:{name}@{when}"
    if len(key.encode("utf-8")) <= MAX_NAME_BYTES:
        return key
    return f"onceq.periodic:{hashlib.sha256(name.encode()).hexdigest()}@{when}"


class Scheduler:
    """A worker's share of the periodic tasks: enqueues the ticks that are due."""

    def __init__(self, store: Store, periodics: Sequence[Periodic]) -> None:
        self.store = store
        self.periodics = {p.name: p for p in periodics}
        self.since: dict[str, datetime] = {}  # per task: its last tick, or its start

    def run_once(self, now: datetime) -> datetime:
        """Enqueue the ticks due at `now` (the latest `catch_up` of those not enqueued
        yet); returns when the next one is due."""
        if not self.since:
            found = self.store.periodic_register({n: p.spec() for n, p in self.periodics.items()})
            self.since = {n: last or created for n, (last, created) in found.items()}
        for name, p in self.periodics.items():
            due = p.schedule.due(self.since[name], now, p.catch_up)
            if not due:
                continue
            made, last = self.store.tick_insert(name, [(t, p.job(t)) for t in due])
            if last is not None and last > self.since[name]:
                self.since[name] = last
            for job_id in made:
                logs.event(log, logging.INFO, "periodic.enqueued", task=name, job=job_id)
        coming = [p.schedule.after(max(self.since[n], now)) for n, p in self.periodics.items()]
        return min((t for t in coming if t is not None), default=now + IDLE_WAKE)
