"""Rescue of expired leases, wherever they ran: any number of workers may run it at once
(the store's rescue changes each job once)."""

from __future__ import annotations

from onceq.models import Rescued
from onceq.store import Store


class Rescuer:
    """Every `interval` seconds, puts the jobs whose lease expired back to pending (or
    failed, out of attempts). Run by the dispatcher after its lease keeper's pass, so a
    lease of its own worker that this could take back has been given up first."""

    def __init__(self, store: Store, interval: float) -> None:
        self.store, self.interval = store, interval
        self.due = 0.0

    def run_once(self, now: float) -> list[Rescued]:
        """Rescue now if it is time; what was rescued."""
        if now < self.due:
            return []
        self.due = now + self.interval
        return self.store.job_rescue()
