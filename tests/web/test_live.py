"""Live updates: the feed moves when another process commits (PostgreSQL: on its NOTIFY,
well before the idle tick; SQLite: on the file's data version), and /events streams it."""

from __future__ import annotations

from onceq import App
from onceq.models import NewJob
from onceq.store import open_store
from onceq.web.live import ChangeFeed
from tests.helpers import eventually


def test_the_feed_moves_when_another_process_commits(app: App) -> None:
    feed = ChangeFeed(app.store, debounce=0.05, idle=3600)  # no idle tick within the test
    feed.start()
    other = open_store(app.url)  # another connection, as a worker's
    try:
        for n in range(3):
            seen = feed.version
            other.job_insert(NewJob("tests.web.apps.ok", {"n": n}))
            eventually(lambda s=seen: feed.version > s, timeout=10)
    finally:
        other.close()
        feed.stop()


def test_events_stream_a_change(app: App) -> None:
    from tests.web.conftest import client_for

    with client_for(app.store) as client:
        board = client.app.app.state.dashboard  # type: ignore[attr-defined]
        with client.stream("GET", "/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")
            board.feed.version += 1  # as the watcher does when the store moves
            for line in lines:
                if line.startswith("event: change"):
                    break
