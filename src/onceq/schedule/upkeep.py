"""SQLite upkeep: keep the write-ahead log (WAL) from growing for ever.

SQLite copies the WAL back into the database file (a checkpoint) as it goes, but a
checkpoint cannot pass the oldest snapshot a reader still holds: one connection that
keeps a read transaction open (a forgotten cursor, a long report) makes the WAL grow
without bound. So each worker, every `every` seconds, runs a PASSIVE checkpoint (it
waits for no one), or a TRUNCATE one when the worker is idle (the WAL file back to
zero bytes); the store also sets `journal_size_limit`, so a WAL that starts over is cut
back. When checkpoints have not completed for `starved_after` seconds and the WAL is
past `warn_bytes`, it logs a warning naming the likely cause, and says when it is over.
On PostgreSQL there is nothing to do: the service stops at its first turn.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from onceq import logs
from onceq.store import Store

log = logging.getLogger("onceq.store")

CHECKPOINT_EVERY = 10.0
STARVED_AFTER = 60.0
WARN_BYTES = 64 * 1024 * 1024
WARN_AGAIN_AFTER = 600.0
NEVER = 365 * 86400.0


class Checkpointer:
    """One worker's WAL checkpoints, and the warning when a reader starves them."""

    def __init__(
        self,
        store: Store,
        idle: Callable[[], bool],
        *,
        every: float = CHECKPOINT_EVERY,
        starved_after: float = STARVED_AFTER,
        warn_bytes: int = WARN_BYTES,
    ) -> None:
        self.store, self.idle = store, idle
        self.every, self.starved_after, self.warn_bytes = every, starved_after, warn_bytes
        self.stuck_since: float | None = None  # when checkpoints stopped completing
        self.warned_at: float | None = None

    def run_once(self, now: float) -> float:
        """One checkpoint; returns when the next one is due (time.monotonic() seconds)."""
        done = self.store.wal_checkpoint("TRUNCATE" if self.idle() else "PASSIVE")
        if done is None:
            return now + NEVER  # nothing to keep up on this store
        if done.complete:
            if self.warned_at is not None:
                logs.event(log, logging.INFO, "sqlite.checkpoint_resumed",
                           wal_mb=f"{done.wal_bytes / 2**20:.1f}")  # fmt: skip
            self.stuck_since = self.warned_at = None
            return now + self.every
        if self.stuck_since is None:
            self.stuck_since = now
        stuck = now - self.stuck_since
        again = self.warned_at is None or now - self.warned_at >= WARN_AGAIN_AFTER
        if stuck >= self.starved_after and done.wal_bytes >= self.warn_bytes and again:
            self.warned_at = now
            logs.event(
                log, logging.WARNING, "sqlite.checkpoint_starved",
                wal_mb=f"{done.wal_bytes / 2**20:.1f}", stuck_for=f"{stuck:.0f}s",
                why="a connection to this database has kept a read transaction open; the "
                "WAL grows until it ends (look for a long-running reader)",
            )  # fmt: skip
        return now + self.every
