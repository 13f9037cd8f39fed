"""Payloads are validated against the handler's signature at enqueue, naming the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from onceq import App, PayloadError


class Size(BaseModel):
    width: int
    height: int


@pytest.fixture
def app(sqlite_url: str) -> App:
    return App(sqlite_url)


def test_valid_payloads_are_stored_in_json_form(app: App) -> None:
    @app.task
    def resize(image_id: int, size: Size, when: datetime, width: int = 800) -> None: ...

    job = resize.enqueue(7, size={"width": 1, "height": 2}, when=datetime(2024, 1, 1, tzinfo=UTC))
    assert job.args == {
        "image_id": 7,
        "size": {"width": 1, "height": 2},
        "when": "2024-01-01T00:00:00Z",
    }
    assert job.task == "tests.test_task.resize"
    assert resize.load(
        '{"image_id": 7, "size": {"width": 1, "height": 2}, "when": "2024-01-01T00:00:00Z"}'
    )["size"] == Size(width=1, height=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "missing argument 'image_id'"),
        ({"image_id": "seven"}, "argument 'image_id': Input should be a valid integer"),
        ({"image_id": 1, "colour": "red"}, "unknown argument 'colour'"),
        ({"image_id": 1, "width": [1]}, "argument 'width': Input should be a valid integer"),
    ],
)
def test_bad_payloads_are_refused_naming_the_argument_and_nothing_is_stored(
    app: App, kwargs: dict[str, Any], message: str
) -> None:
    @app.task
    def resize(image_id: int, width: int = 800) -> None: ...

    with pytest.raises(PayloadError) as exc:
        resize.enqueue(**kwargs)
    assert str(exc.value).startswith("tests.test_task.resize: ")
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert app.store.job_list() == []


def test_enqueue_options_and_idempotency_key(app: App) -> None:
    @app.task(queue="images", priority=3, retries=2)
    def thumb(n: int) -> None: ...

    job = thumb.enqueue(n=1, key="thumb-1", delay=60)
    again = thumb.enqueue(n=2, key="thumb-1")
    assert again.id == job.id and again.args == {"n": 1}
    assert (job.queue, job.priority, job.max_attempts) == ("images", 3, 3)
    assert job.run_at > job.created_at + timedelta(seconds=59)
    other = thumb.configure(queue="urgent", priority=9).enqueue(n=3)
    assert (other.queue, other.priority) == ("urgent", 9)


def test_a_parameter_named_like_an_option_goes_to_the_handler(app: App) -> None:
    @app.task
    def tagged(key: str) -> None: ...

    job = tagged.enqueue(key="not an idempotency key")
    assert job.args == {"key": "not an idempotency key"} and job.key is None
    keyed = tagged.configure(key="real-key").enqueue(key="value")
    assert keyed.key == "real-key"


def test_var_keyword_handlers_accept_extra_arguments(app: App) -> None:
    @app.task
    def anything(a: int, **rest: Any) -> None: ...

    assert anything.enqueue(a=1, b=[2], c="3").args == {"a": 1, "b": [2], "c": "3"}


class Opaque:
    """Not a type pydantic can validate or turn into JSON."""


def test_handlers_that_cannot_be_stored_are_refused_at_registration(app: App) -> None:
    def takes_opaque(thing: Opaque) -> None: ...

    def takes_star_args(*things: int) -> None: ...

    with pytest.raises(TypeError, match="cannot be validated and stored as JSON"):
        app.task(takes_opaque)
    with pytest.raises(TypeError, match=r"\*things cannot be stored"):
        app.task(takes_star_args)

    def nested() -> None: ...

    with pytest.raises(ValueError, match="must be importable"):
        app.task(subprocess=True)(nested)


def test_names_with_nul_are_refused(app: App) -> None:
    @app.task
    def t(x: str) -> None: ...

    with pytest.raises(PayloadError, match="NUL"):
        t.configure(queue="bad\x00queue").enqueue(x="ok")
    assert t.enqueue(x="NUL in a payload is fine: \x00").args == {
        "x": "NUL in a payload is fine: \x00"
    }


def test_retry_backoff_grows_with_jitter_and_is_capped() -> None:
    from onceq.task import MAX_BACKOFF, RetryPolicy

    policy = RetryPolicy(retries=5, backoff=1.0)
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0)]:
        delays = [policy.delay(attempt) for _ in range(200)]
        assert base * 0.5 <= min(delays) and max(delays) <= base * 1.5
        assert len(set(delays)) > 100  # jittered
    assert policy.delay(40) <= MAX_BACKOFF * 1.5
    assert RetryPolicy(backoff=0).delay(3) == 0.0
