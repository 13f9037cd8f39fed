"""The payload limit: a payload, result or run input larger than App(max_payload=…)
(1 MiB by default) is refused in one line, and nothing that large is stored."""

from __future__ import annotations

import pytest

from onceq import App, PayloadError, Workflow
from onceq.errors import ConfigError
from tests.helpers import app_with_tasks
from tests.operate import small
from tests.operate.conftest import onceq


@pytest.fixture
def app(store_url: str) -> App:
    a = app_with_tasks(store_url, small.app)
    a.max_payload = small.app.max_payload
    return a


def test_a_payload_over_the_limit_is_refused_at_enqueue_and_nothing_is_stored(app: App) -> None:
    echo = app.tasks["tests.operate.small.echo"]
    with pytest.raises(PayloadError) as refused:
        echo.enqueue(text="é" * 600)  # 1,200 bytes of UTF-8: bytes count, not characters
    message = str(refused.value)
    assert "\n" not in message
    assert "payload of tests.operate.small.echo is 1,211 bytes of JSON" in message
    assert "over the limit of 1,000" in message
    with pytest.raises(PayloadError):
        echo.enqueue_many([{"text": "fits"}, {"text": "y" * 2000}])  # one bad: none stored
    flow = Workflow("big", input=["t"])
    flow.step("a", echo, args={"text": "$input.t"})
    with pytest.raises(PayloadError, match="input of workflow big is"):
        app.run_workflow(flow, {"t": "z" * 2000})
    assert app.store.job_counts() == [] and app.store.run_list() == []
    assert echo.enqueue(text="y" * 900).status == "pending"  # under it: fine


def test_the_default_limit_is_one_mebibyte(store_url: str) -> None:
    app = app_with_tasks(store_url, small.app)  # an App with the default limit
    echo = app.tasks["tests.operate.small.echo"]
    assert app.max_payload == 1024 * 1024
    with pytest.raises(PayloadError, match="over the limit of 1,048,576"):
        echo.enqueue(text="x" * (1024 * 1024))
    assert app.store.job_counts() == []
    unbounded = app_with_tasks(store_url, small.app)
    unbounded.max_payload = None
    assert unbounded.tasks[echo.name].enqueue(text="x" * (1024 * 1024)).id
    with pytest.raises(ConfigError, match="max_payload must be a positive number"):
        App(store_url, max_payload=0)


def test_a_result_over_the_limit_fails_its_job_without_storing_it(app: App) -> None:
    grown = app.tasks["tests.operate.small.grow"].enqueue(size=5000)
    fits = app.tasks["tests.operate.small.grow"].enqueue(size=10)
    forked = app.tasks["tests.operate.small.grow_in_subprocess"].enqueue(size=5000)
    app.worker(concurrency=2, handle_signals=False).run(burst=True)
    for job_id in (grown.id, forked.id):
        job = app.get_job(job_id)
        assert (job.status, job.attempts, job.result) == ("failed", 1, None)  # not retried
        assert job.last_error is not None and "\n" not in job.last_error
        assert job.last_error.startswith("PayloadError: result of tests.operate.small.grow")
        assert "5,002 bytes of JSON, over the limit of 1,000" in job.last_error
    assert app.get_job(fits.id).result == "x" * 10


def test_the_command_line_refuses_it_in_one_line_and_stores_nothing(sqlite_url: str) -> None:
    args = ["enqueue", "--app", "tests.operate.small:app", "tests.operate.small.echo"]
    refused = onceq(sqlite_url, *args, "--json", '{"text": "%s"}' % ("x" * 1500))
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "over the limit of 1,000" in refused.stderr
    assert onceq(sqlite_url, "jobs", "--json").stdout.count('"id"') == 0
