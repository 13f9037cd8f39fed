"""Fixtures for workflow tests: an App with the workflow tasks, and worker processes."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from onceq import App
from tests.workflow import apps

Spawn = Callable[..., multiprocessing.process.BaseProcess]


@pytest.fixture
def app(store_url: str) -> Iterator[App]:
    """A fresh App on each backend with the tasks of tests.workflow.apps."""
    a = App(store_url)
    for t in apps.app.tasks.values():
        a.task(name=t.name, retries=t.retry.retries, retry_backoff=t.retry.backoff)(t.fn)
    yield a
    a.close()


@pytest.fixture
def workers(app: App, ledger: Path) -> Iterator[Spawn]:
    """Start bare worker processes on the app's store; all are killed afterwards."""
    started: list[multiprocessing.process.BaseProcess] = []
    ctx = multiprocessing.get_context("spawn")

    def spawn(**options: object) -> multiprocessing.process.BaseProcess:
        process = ctx.Process(
            target=apps.run_worker, args=(app.url, str(ledger), options), daemon=True
        )
        process.start()
        started.append(process)
        return process

    yield spawn
    for process in started:
        process.kill()
        process.join(10)
