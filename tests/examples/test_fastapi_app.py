"""The FastAPI recipe (examples/fastapi_app), tested as its users would test theirs:
with onceq's pytest plugin (`onceq_app`: the app on a fresh in-memory store, run with
`run_until_idle()`), then once on PostgreSQL (the async driver path, the lifespan)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from examples.fastapi_app import main, tasks
from onceq import App


def test_an_order_receipt_is_sent_once(onceq_app: App) -> None:
    assert onceq_app is tasks.app and onceq_app.url == "sqlite:///:memory:"
    with TestClient(main.api) as client:
        first = client.post("/orders/7/receipt", params={"email": "a@example.org"})
        again = client.post("/orders/7/receipt", params={"email": "a@example.org"})
        assert first.status_code == 202 and first.json() == again.json()  # one job
        assert client.get(f"/jobs/{first.json()['job']}").json()["status"] == "pending"
        worker = onceq_app.run_until_idle()
        assert worker.counts["succeeded"] == 1
        shown = client.get(f"/jobs/{first.json()['job']}").json()
    assert shown["status"] == "succeeded"
    assert shown["receipt"]["order_id"] == 7 and shown["receipt"]["email"] == "a@example.org"


def test_a_bad_request_enqueues_nothing(onceq_app: App) -> None:
    with TestClient(main.api) as client:
        assert client.post("/orders/x/receipt", params={"email": "a"}).status_code == 422
    assert onceq_app.store.job_list() == []


@pytest.fixture
def on_postgres(pg_url: str) -> Iterator[App]:
    tasks.app.close()
    previous = tasks.app.configured_url
    tasks.app.use(pg_url)
    yield tasks.app
    tasks.app.close()
    tasks.app._url = previous


@pytest.mark.postgres
def test_on_postgres_with_a_worker_and_waiting_from_the_endpoint(on_postgres: App) -> None:
    worker = on_postgres.worker(concurrency=2, handle_signals=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        with TestClient(main.api) as client:  # its lifespan closes the async pool
            job = client.post("/orders/9/receipt", params={"email": "b@example.org"}).json()
            shown = client.get(f"/jobs/{job['job']}", params={"wait": 30}).json()
    finally:
        worker.stop()
        thread.join(30)
    assert shown["status"] == "succeeded" and shown["receipt"]["order_id"] == 9
