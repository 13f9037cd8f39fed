"""Testing helpers for apps built on onceq: the real worker and claim path, on a store
that lives in memory, one per test.

    from onceq.testing import memory_store

    def test_resize():
        with memory_store(tasks.app) as app:   # tasks.app now stores in memory
            job = tasks.resize.enqueue(image_id=7)
            app.run_until_idle()               # runs it, and whatever it enqueues
            assert app.get_job(job.id).status == "succeeded"

With pytest, the `onceq_app` fixture does the same for the App named by the ini option
`onceq_app = module:attribute` (onceq's pytest plugin, loaded with the package).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from onceq.app import App

MEMORY_URL = "sqlite:///:memory:"


@contextmanager
def memory_store(app: App) -> Iterator[App]:
    """Point `app` at a fresh in-memory SQLite store for the block (the store it had is
    closed first, and the URL it had is given back afterwards). Jobs run with
    `app.run_until_idle()` — a real worker on threads of this process, which share the
    one in-memory database (worker processes could not)."""
    previous = app.configured_url
    app.close()
    app.use(MEMORY_URL)
    try:
        yield app
    finally:
        app.close()
        app._url = previous
