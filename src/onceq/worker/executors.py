"""Where handlers run: pool threads, one event loop thread, or a child process each.

The dispatcher has already moved every job it hands over here to `running` in the
store (bug 3 of SPEC.md): nothing in this module ever decides what to run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import json
import math
import multiprocessing
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable, Coroutine
from typing import Any

from onceq.context import JobContext, _current
from onceq.errors import JobTimeout, LeaseLost, OnceqError

QUEUED, RUNNING, DONE, ABANDONED = "queued", "running", "done", "abandoned"
STARTUP_LIMIT = 120.0  # a subprocess that has not started its handler by then is killed
_CONTEXT_FIELDS = (
    "job_id",
    "task",
    "attempt",
    "max_attempts",
    "worker",
    "token",
    "run_id",
    "step",
    "item",
)


class PoolItem:
    """One job handed to the thread pool, and whose it is: queued, running, done or
    abandoned (timed out: the dispatcher gave up on it and started a replacement)."""

    __slots__ = ("fn", "lock", "state")

    def __init__(self, fn: Callable[[PoolItem], None], lock: threading.Lock) -> None:
        self.fn = fn
        self.state = QUEUED
        self.lock = lock  # its pool's: a few instructions under it, no lock made per job

    def finish(self) -> bool:
        """Called by fn when its work is done, before it reports the outcome; False if
        the dispatcher abandoned it first (its outcome is then a late one)."""
        with self.lock:
            if self.state == ABANDONED:
                return False
            self.state = DONE
            return True


class ThreadPool:
    """A fixed number of threads; jobs still queued can be taken back (for a drain)."""

    def __init__(self, size: int, name: str) -> None:
        self.name = name
        self._queue: queue.SimpleQueue[PoolItem | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards every item's state
        self._count = 0
        for _ in range(size):
            self._spawn()

    def _spawn(self) -> None:
        self._count += 1
        threading.Thread(target=self._serve, name=f"{self.name}-{self._count}", daemon=True).start()

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            with item.lock:
                if item.state != QUEUED:
                    continue
                item.state = RUNNING
            item.fn(item)
            if item.state == ABANDONED:
                return  # a replacement thread took this one's place

    def submit(self, fn: Callable[[PoolItem], None]) -> PoolItem:
        """Queue fn(item); it starts as soon as a thread is free."""
        item = PoolItem(fn, self._lock)
        self._queue.put(item)
        return item

    def take_back(self, item: PoolItem) -> bool:
        """Un-queue an item that has not started; False if a thread already took it."""
        with item.lock:
            if item.state != QUEUED:
                return False
            item.state = DONE
            return True

    def abandon(self, item: PoolItem) -> bool:
        """Give up on a running item (it timed out): its thread is replaced, and retires
        when the handler finally returns. False if the item already finished."""
        with item.lock:
            if item.state != RUNNING:
                return False
            item.state = ABANDONED
        self._spawn()
        return True

    def shutdown(self) -> None:
        """Ask idle threads to exit (busy ones finish their job first)."""
        for _ in range(self._count):
            self._queue.put(None)


class LoopThread:
    """An asyncio event loop on a thread of its own, for `async def` handlers."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
        """Run a coroutine on the loop; cancel the returned future to cancel it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def cancel(self, task: asyncio.Task[Any]) -> None:
        """Cancel a task of this loop from another thread."""
        self._loop.call_soon_threadsafe(task.cancel)

    def stop(self) -> None:
        """Stop the loop (pending tasks are dropped: the worker drained them first)."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()


# -- subprocess handlers -------------------------------------------------------------


def run_in_subprocess(
    fn: Callable[..., Any], args_json: str, timeout: float | None, ctx: JobContext
) -> str:
    """Run `fn(**args)` in a fresh child process and return its result as JSON text.

    The timeout counts from the moment the handler starts in the child (starting a
    Python process takes a good part of a second). The child is killed when it passes
    (JobTimeout) or when the lease is lost (LeaseLost). Only JSON crosses the pipe.
    """
    module, qualname = fn.__module__, fn.__qualname__
    mp = multiprocessing.get_context("spawn")
    receiver, sender = mp.Pipe(duplex=False)
    job = {f: getattr(ctx, f) for f in _CONTEXT_FIELDS}
    child = mp.Process(
        target=_child_main,
        args=(module, qualname, args_json, json.dumps(job), sender, os.getpid()),
        daemon=True,
    )
    child.start()
    sender.close()
    deadline = time.monotonic() + STARTUP_LIMIT
    message = None
    try:
        while True:
            if receiver.poll(0.02):
                try:
                    data = json.loads(receiver.recv_bytes())
                except EOFError:  # it closed its end without a result: it died
                    break
                if data.get("started"):
                    deadline = time.monotonic() + timeout if timeout is not None else math.inf
                    continue
                message = data
                break
            if not child.is_alive():
                if receiver.poll(0):
                    continue  # it wrote its result just before exiting: read it
                break
            if ctx.should_stop():
                child.kill()
                raise LeaseLost("lease lost: the subprocess was killed")
            if time.monotonic() > deadline:
                child.kill()
                raise JobTimeout(f"timed out after {timeout}s: the subprocess was killed")
    finally:
        child.join(timeout=5)
        receiver.close()
    if message is None:
        raise SubprocessDied(f"the subprocess died with exit code {child.exitcode}")
    if message["ok"]:
        result: str = message["result"]
        return result
    raise SubprocessError(message["error"], message["traceback"])


class SubprocessDied(OnceqError):
    """The handler's child process exited without a result (crash, os._exit, kill)."""


class SubprocessError(OnceqError):
    """The handler raised in its child process; the child's traceback is kept."""

    def __init__(self, error: str, child_traceback: str) -> None:
        super().__init__(error)
        self.child_traceback = child_traceback


def _child_main(
    module: str, qualname: str, args_json: str, job: str, sender: Any, parent_pid: int
) -> None:
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    try:
        from onceq.task import Task, dump_value, load_payload, result_adapter

        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
        fn = target.fn if isinstance(target, Task) else target
        kwargs = load_payload(fn, args_json)
        _current.set(JobContext(**json.loads(job)))
        sender.send_bytes(b'{"started": true}')
        value = fn(**kwargs)
        # Serialized here, by the return annotation: a result that cannot be stored fails
        # in the child, where its error and traceback are.
        result = dump_value(result_adapter(qualname, fn), value, f"result of {qualname}")
        message = {"ok": True, "result": result}
    except BaseException as exc:
        message = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
    sender.send_bytes(json.dumps(message).encode())
    sender.close()


def _exit_with_parent(parent_pid: int) -> None:
    # A child outliving its worker would run on with nobody holding its lease.
    while os.getppid() == parent_pid:
        time.sleep(0.2)
    os._exit(1)
