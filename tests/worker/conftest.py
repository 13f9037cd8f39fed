"""Fixtures for worker tests: a fresh App per test, the ledger, threads and processes."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from onceq import App, Task, Worker
from tests.helpers import app_with_tasks
from tests.worker import apps


@pytest.fixture
def app(store_url: str) -> Iterator[App]:
    """A fresh App on each backend, with the tasks of tests.worker.apps registered."""
    a = app_with_tasks(store_url, apps.app)
    yield a
    a.close()


def task(app: App, name: str) -> Task:
    return app.tasks[f"tests.worker.apps.{name}"]


def run_in_thread(worker: Worker, burst: bool = True) -> threading.Thread:
    thread = threading.Thread(target=worker.run, kwargs={"burst": burst}, daemon=True)
    thread.start()
    return thread


def start_worker_process(
    url: str, ledger: Path, **options: object
) -> multiprocessing.process.BaseProcess:
    """A bare worker process (no supervisor), as a user's own `app.worker().run()`."""
    ctx = multiprocessing.get_context("spawn")
    process = ctx.Process(target=apps.run_worker, args=(url, str(ledger), options), daemon=True)
    process.start()
    return process


def kill(process: multiprocessing.process.BaseProcess) -> None:
    assert process.pid is not None
    os.kill(process.pid, 9)
    process.join(10)
