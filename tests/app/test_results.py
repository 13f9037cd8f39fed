"""Problem 2 of issue 14: results are serialized by the handler's return annotation as
arguments are (a model, a datetime, a set…), a result type that cannot be stored is
refused when the task is registered, and `app.wait(job)` gives back the typed value."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import UUID

import pytest
from pydantic import BaseModel

from onceq import App
from tests.helpers import sql_rows


class Thumbnail(BaseModel):
    image_id: int
    made_at: datetime


@pytest.fixture
def app(sqlite_url: str) -> Iterator[App]:
    a = App(sqlite_url)
    yield a
    a.close()


def test_models_datetimes_sets_and_uuids_are_stored_as_json(app: App, sqlite_url: str) -> None:
    when = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)

    @app.task
    def thumbnail(image_id: int) -> Thumbnail:
        return Thumbnail(image_id=image_id, made_at=when)

    @app.task
    async def tags() -> set[str]:
        return {"b", "a"}

    @app.task
    def identity() -> tuple[UUID, datetime]:
        return UUID(int=7), when

    jobs = [thumbnail.enqueue(image_id=3), tags.enqueue(), identity.enqueue()]
    app.run_until_idle()
    done = [app.wait(j, timeout=10) for j in jobs]
    assert [j.status for j in done] == ["succeeded"] * 3, [j.last_error for j in done]
    stored = {
        row[0]: json.loads(str(row[1]))
        for row in sql_rows(sqlite_url, "SELECT id, result FROM onceq_jobs ORDER BY id")
    }
    assert stored[jobs[0].id] == {"image_id": 3, "made_at": "2024-05-01T12:30:00Z"}
    assert sorted(stored[jobs[1].id]) == ["a", "b"]
    assert stored[jobs[2].id] == ["00000000-0000-0000-0000-000000000007", "2024-05-01T12:30:00Z"]
    # Given the Job that enqueue returned, wait() hands back the handler's type.
    assert done[0].result == Thumbnail(image_id=3, made_at=when)
    assert done[1].result == {"a", "b"}
    assert done[2].result == (UUID(int=7), when)
    assert app.wait(jobs[0].id).result == {"image_id": 3, "made_at": "2024-05-01T12:30:00Z"}


def test_a_result_that_does_not_fit_its_annotation_is_stored_by_its_own_type(app: App) -> None:
    @app.task
    def sloppy() -> int:
        return {"not": "an int", "when": datetime(2024, 1, 1, tzinfo=UTC)}  # type: ignore[return-value]

    job = sloppy.enqueue()
    app.run_until_idle()
    assert app.get_job(job.id).result == {"not": "an int", "when": "2024-01-01T00:00:00Z"}


def test_a_return_type_that_cannot_be_stored_is_refused_at_registration(app: App) -> None:
    with pytest.raises(TypeError, match="its return type cannot be stored as JSON"):

        @app.task
        def connect() -> socket.socket:
            return socket.socket()


def test_a_subprocess_handler_result_is_serialized_by_its_annotation(app: App) -> None:
    from tests.app import subprocess_tasks

    task = app.task(subprocess=True, name="stamp")(subprocess_tasks.stamp)
    job = task.enqueue(year=2023)
    app.run_until_idle()
    found = app.wait(job, timeout=30)
    assert found.status == "succeeded", found.last_error
    assert found.result == datetime(2023, 1, 2, tzinfo=UTC)
