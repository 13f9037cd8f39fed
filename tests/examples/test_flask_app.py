"""The Flask recipe (examples/flask_app): a sync view enqueues, validated at enqueue."""

from __future__ import annotations

from examples.flask_app.app import queue, web
from onceq.testing import memory_store


def test_a_thumbnail_is_enqueued_and_made() -> None:
    with memory_store(queue):
        client = web.test_client()
        made = client.post("/images/3/thumbnail?width=320")
        assert made.status_code == 202
        assert client.post("/images/3/thumbnail?width=wide").status_code == 400
        queue.run_until_idle()
        shown = client.get(f"/jobs/{made.json['job']}").json
    assert shown == {"status": "succeeded", "result": {"image_id": 3, "width": 320}}
    assert queue.url != "sqlite:///:memory:"  # the app's own URL is back
