"""Runs P worker processes, restarts one that dies, and stops them on a signal.

Each child is the leader of its own process group. When one exits, the supervisor
first kills what is left of that group (subprocess handlers), then rescues every job
the child still held: the process is gone, so none of its handlers can still be
running, and the jobs go back to pending at once instead of waiting for the lease to
expire (the attempt counts, so a job that kills its worker cannot loop forever).

SIGTERM/SIGINT: the children drain (stop claiming, release unstarted jobs, finish
running ones within the grace period) and the supervisor exits 0. A second signal
kills them at once and it exits 1. A shutdown is not a failure: the jobs a child still
held when it stopped after a signal (its grace ran out, or it was killed by the second
signal) are put back with their attempt given back (`job_rescue_stopped`, outcome
`shutdown` in the history), never failed.

`run_once(now)` is one turn of its loop (tests call it directly); `run()` the ticker.
A dead worker whose jobs cannot be rescued yet (the database is away) waits for a
later turn without holding up the others.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from onceq import faults, logs
from onceq.errors import SchemaError, StoreUnavailable
from onceq.store import Store, open_store

log = logging.getLogger("onceq.supervisor")
QUICK_DEATH = 2.0  # a child that dies sooner than this after starting is restarted slowly
STORE_PATIENCE = 60.0  # how long a starting child waits for an unreachable database
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
GC_THRESHOLD = 20_000  # allocations between collections of the youngest generation


@dataclass
class _Slot:
    index: int
    generation: int = 0
    process: multiprocessing.process.BaseProcess | None = None
    name: str = ""
    started: float = 0.0
    backoff: float = 0.0
    done: bool = False
    signalled: int = 0  # 1: asked to drain, 2: killed


class Supervisor:
    """P worker processes for the app at `app_ref` (module:attr)."""

    def __init__(
        self,
        app_ref: str,
        *,
        url: str,
        processes: int,
        burst: bool = False,
        log_level: str = "INFO",
        log_format: str = "text",
        worker_options: dict[str, Any] | None = None,
    ) -> None:
        self.app_ref = app_ref
        self.url = url
        self.burst = burst
        self.log_level = log_level
        self.log_format = log_format
        self.options = worker_options or {}
        self.slots = [_Slot(i) for i in range(processes)]
        self.tag = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:4]}"
        self._ctx = multiprocessing.get_context("fork")
        self._stopping = False
        self._forced = False
        self._signal = ""
        self._unrescued: list[tuple[str, str, bool]] = []  # (worker, why, stopped by us)
        self.rescued = 0
        self.store: Store | None = None

    def run(self) -> int:
        """Supervise until the children are done (burst) or stopped; the exit code."""
        faults.disable()
        open_store(self.url).close()  # a bad URL or schema stops us here, not in each child
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        try:
            for slot in self.slots:
                self._spawn(slot)
            while not all(slot.done for slot in self.slots):
                self._pass_signals()
                live = [s.process.sentinel for s in self.slots if s.process and not s.done]
                if live:
                    multiprocessing.connection.wait(live, timeout=0.2)
                else:
                    time.sleep(0.05)
                self.run_once(time.monotonic())
            self._rescue_dead()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self._close_store()
        return 1 if self._forced else 0

    def _store(self) -> Store:
        """The supervisor's own store, opened when a dead worker's jobs are to be put
        back (and closed again before the next child is forked)."""
        if self.store is None:
            self.store = open_store(self.url)
        return self.store

    def _close_store(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def run_once(self, now: float) -> None:
        """One turn: pass signals on, reap children that exited (and put their jobs
        back), restart those whose backoff has passed."""
        self._pass_signals()
        for slot in self.slots:
            if slot.process is not None and not slot.done and not slot.process.is_alive():
                self._reap(slot)
            elif slot.process is None and not slot.done and now >= slot.started:
                self._spawn(slot)  # a restart whose backoff has passed
        self._rescue_dead()

    def _spawn(self, slot: _Slot) -> None:
        if self._stopping:
            slot.done = True
            return
        # Children are forked: they start at once, with the app already imported (a spawn
        # imports everything again, ~0.3 s). A fork copies this process, threads aside,
        # so it must have none: its store (a pool, with threads) is closed first.
        self._close_store()
        slot.generation += 1
        slot.signalled = 0
        slot.name = f"{self.tag}:{slot.index}.{slot.generation}"
        process = self._ctx.Process(
            target=_child_main,
            args=(self.app_ref, self.url, slot.name, self.options, self.burst,
                  (self.log_level, self.log_format), os.getpid()),
            name=f"onceq-worker-{slot.index}",
        )  # fmt: skip
        # Signals wait while the child is forked: it starts with this process's handlers,
        # and resets them before it unblocks them (a signal meant for it then ends it).
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        slot.process, slot.started = process, time.monotonic()
        logs.event(log, logging.INFO, "worker.spawned", worker=slot.name, pid=process.pid)

    def _reap(self, slot: _Slot) -> None:
        process = slot.process
        assert process is not None and process.pid is not None
        process.join()
        code = process.exitcode
        _kill_group(process.pid)  # subprocess handlers it may have left behind
        reason = (
            f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"
        )
        level = logging.INFO if code == 0 else logging.WARNING
        logs.event(log, level, "worker.exited", worker=slot.name, reason=reason)
        self._unrescued.append((slot.name, reason, slot.signalled > 0))
        self._rescue_dead()
        slot.process = None
        if self._stopping or (self.burst and code == 0):
            slot.done = True
            return
        lived = time.monotonic() - slot.started
        slot.backoff = min(max(slot.backoff * 2, 0.5), 10.0) if lived < QUICK_DEATH else 0.0
        slot.started = time.monotonic() + slot.backoff  # when to restart it

    def _rescue_dead(self) -> None:
        """Put back the jobs of dead workers. One that cannot be rescued yet waits for a
        later turn without holding up the others (the leases would expire anyway, only
        later); an unreachable database ends the turn's rescues (each would wait for it,
        and signals and restarts with them)."""
        if not self._unrescued:
            return
        waiting, self._unrescued = self._unrescued, []
        for index, (name, reason, stopped) in enumerate(waiting):
            try:
                if stopped:  # it was told to stop: what it still held is not its fault
                    rescued = self._store().job_rescue_stopped(
                        name, f"worker {name} stopped ({reason}) during a shutdown"
                    )
                else:
                    rescued = self._store().job_rescue_worker(name, reason)
            except StoreUnavailable as exc:
                log.warning("could not rescue the jobs of dead workers yet (%s)", exc)
                self._unrescued += waiting[index:]
                return
            except Exception as exc:
                log.warning("could not rescue the jobs of %s yet (%s)", name, exc)
                self._unrescued.append((name, reason, stopped))
                continue
            self.rescued += len(rescued)
            with contextlib.suppress(Exception):  # its registry row (else it expires)
                self._store().worker_unregister(name)
            if rescued:
                logs.event(log, logging.WARNING, "worker.jobs_put_back" if stopped
                           else "worker.jobs_rescued", worker=name, jobs=len(rescued))  # fmt: skip

    def _on_signal(self, signum: int, _: Any) -> None:
        # Only flags here: the main loop passes the signal on (_pass_signals), so that a
        # child being spawned while the signal lands is not missed.
        if self._stopping:
            self._forced = True
        else:
            self._stopping = True
            self._signal = signal.Signals(signum).name

    def _pass_signals(self) -> None:
        """Drain (SIGTERM) each child once after the first signal; kill every child's
        group after the second."""
        if not self._stopping:
            return
        for slot in self.slots:
            process = slot.process
            if process is None or process.pid is None:
                slot.done = True  # waiting for a restart: none now
                continue
            if self._forced and slot.signalled < 2:
                slot.signalled = 2
                log.warning("second signal: killing worker %s", slot.name)
                _kill_group(process.pid)
            elif slot.signalled < 1:
                slot.signalled = 1
                logs.event(log, logging.INFO, "supervisor.draining", worker=slot.name,
                           signal=self._signal)  # fmt: skip
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)


def open_when_reachable(app: Any, patience: float = STORE_PATIENCE) -> None:
    """Open the app's store, waiting while the database is away (a server restart):
    a child that died of it would only be restarted, with a traceback in the log. The
    supervisor opened the same URL a moment ago, so a failure here is the server's
    state, not a bad URL (an unreachable server at open is a ConfigError); a schema
    newer than the code is final."""
    deadline = time.monotonic() + patience
    pause = 0.1
    while True:
        try:
            app.store  # noqa: B018 - opened (and migrated) on first use
            return
        except SchemaError:
            raise
        except Exception as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("the store is not reachable yet (%s); retrying in %.1fs", exc, pause)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def _kill_group(pid: int | None) -> None:
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _child_main(
    app_ref: str,
    url: str,
    name: str,
    options: dict[str, Any],
    burst: bool,
    logging_setup: tuple[str, str],
    parent_pid: int,
) -> None:
    os.setpgrp()  # its own group: the supervisor can kill it with its subprocesses
    # Forked with the supervisor's handlers: until the worker installs its own, a signal
    # ends it as it would end a fresh process (then its jobs are put back).
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by _spawn
    faults.load()  # the supervisor turned them off for itself only
    from onceq.loader import import_app

    app = import_app(app_ref)
    logs.setup(*logging_setup)  # after the import: the app's own config wins
    app.use(url)
    open_when_reachable(app)
    worker = app.worker(name=name, **options)

    def watch_parent() -> None:
        # An orphan drains and exits: nobody would rescue its jobs if it died later.
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        log.warning("supervisor %s is gone: draining", parent_pid)
        worker.stop()

    threading.Thread(target=watch_parent, daemon=True).start()
    # The process is ours: what is alive now (modules, the app, the store) stays alive,
    # so the collector need not walk it again; and a worker allocates a few short-lived
    # objects per job, so the youngest generation is collected less often (about 10% of
    # a busy worker's time went to collections at the default threshold).
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    worker.run(burst=burst)
