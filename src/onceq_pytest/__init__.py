"""onceq's pytest plugin: fixtures for testing your own tasks.

It is registered through the `pytest11` entry point, so pytest loads it in every run in
an environment where onceq is installed — onceq's own suite included. So it is a module
of its own, outside the `onceq` package: loading it imports nothing of onceq (whose
import could come before a test's coverage, environment or fault settings), and nothing
happens until a test asks for one of its fixtures.

- `onceq_app`: your App (ini option `onceq_app = module:attribute`) on a fresh in-memory
  store for the test; `onceq_app.run_until_idle()` runs what was enqueued.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from onceq.app import App

INI = "onceq_app"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(INI, "the App the onceq_app fixture serves, as module:attribute")


@pytest.fixture
def onceq_app(request: pytest.FixtureRequest) -> Iterator[App]:
    """Your App (ini option `onceq_app`) on a fresh in-memory store, for one test."""
    from onceq.loader import import_app
    from onceq.testing import memory_store

    ref = request.config.getini(INI)
    if not ref:
        pytest.fail(
            "the onceq_app fixture needs your App: set `onceq_app = module:attribute` in "
            "the pytest configuration, or define a fixture of that name yourself"
        )
    with memory_store(import_app(str(ref))) as app:
        yield app
