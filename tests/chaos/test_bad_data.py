"""Scenario 5, bad data: rows written straight into onceq_jobs around onceq's own checks.
Invalid JSON is refused by the database itself; every other bad row fails once, with a
clear error class; the valid jobs around them complete; no worker dies."""

from __future__ import annotations

import logging
import re
import sqlite3
import threading

import psycopg
import pytest

from onceq import App
from onceq.store import open_store
from tests.chaos.conftest import fresh_app
from tests.chaos.harness import Chaos, all_finished, backend, sql, wait_for

pytestmark = pytest.mark.chaos

FIVE_MB = 5 * 1024 * 1024
INVALID_JSON = ['{"n": 1', "{n: 1}", "{'n': 1}", "NaN", "", '{"n": 1} trailing', "[1,]"]


def raw_insert(url: str, task: str, args: str, max_attempts: int = 3) -> int:
    """A job row written straight into the table, as another program could."""
    if backend(url) == "sqlite":
        query = (
            "INSERT INTO onceq_jobs (queue, task, args, run_at, created_at, max_attempts) "
            "VALUES ('default', ?, ?, (julianday('now') - 2440587.5) * 86400.0, 0, ?) RETURNING id"
        )
    else:
        query = (
            "INSERT INTO onceq_jobs (queue, task, args, max_attempts) "
            "VALUES ('default', ?, ?, ?) RETURNING id"
        )
    ((job_id,),) = sql(url, query, (task, args, max_attempts))
    return int(job_id)


@pytest.mark.parametrize("text", INVALID_JSON)
def test_the_database_itself_refuses_invalid_json(store_url: str, text: str) -> None:
    open_store(store_url).close()  # migrated
    with pytest.raises(
        (sqlite3.IntegrityError, psycopg.errors.InvalidTextRepresentation)
    ) as refused:
        raw_insert(store_url, "chaos.short", text)
    if backend(store_url) == "sqlite":
        assert "CHECK constraint failed" in str(refused.value)
    else:
        assert "invalid input syntax for type json" in str(refused.value)
    assert sql(store_url, "SELECT count(*) FROM onceq_jobs") == [(0,)]


# (task, stored args, error prefix): each fails at its first attempt of three.
def _bad_rows() -> list[tuple[str, str, str]]:
    return [
        ("no.such.task", "{}", "UnknownTask: unknown task 'no.such.task'"),
        ("chaos.short", '{"n": "abc"}', "PayloadError: chaos.short: argument 'n'"),
        ("chaos.short", '{"n": 1.5}', "PayloadError: chaos.short: argument 'n'"),
        ("chaos.short", "{}", "PayloadError: chaos.short: missing argument 'n'"),
        ("chaos.short", '{"n": 1, "zzz": 2}', "PayloadError: chaos.short: unknown argument"),
        ("chaos.short", "[1, 2]", "PayloadError: chaos.short: the stored payload is not a JSON"),
        ("chaos.short", "null", "PayloadError: chaos.short: the stored payload is not a JSON"),
        ("chaos.short", '"text"', "PayloadError: chaos.short: the stored payload is not a JSON"),
        ("chaos.short", '{"n": 1e999}', "PayloadError: chaos.short: argument 'n'"),
        ("chaos.short", '{"n": ' + "9" * 5000 + "}", "PayloadError: chaos.short: the stored"),
        (
            "chaos.blob",
            '{"data": [' + '"x",' * (FIVE_MB // 4) + '"x"]}',
            "PayloadError: chaos.blob",
        ),
    ]


def test_bad_rows_fail_once_with_a_clear_error_and_valid_jobs_flow(chaos: Chaos, app: App) -> None:
    open_store(chaos.url).close()  # migrated before anything writes to it
    workers = [chaos.worker(concurrency=4, lease=30)[0] for _ in range(2)]
    bad: dict[int, str] = {}
    valid: list[int] = []
    for n, (task, args, error) in enumerate(_bad_rows()):
        bad[raw_insert(chaos.url, task, args)] = error
        valid += [app.enqueue("chaos.short", {"n": n * 10 + k}).id for k in range(10)]
    huge = "y" * FIVE_MB
    big_raw = raw_insert(chaos.url, "chaos.blob", '{"data": "' + huge + '"}')
    app.max_payload = None  # over the default limit of 1 MiB: lifted for it
    big = app.enqueue("chaos.blob", {"data": huge}).id
    total = len(bad) + len(valid) + 2
    wait_for(lambda: all_finished(chaos.url, total), timeout=120)
    alive = [w.poll() is None for w in workers]
    exits = [chaos.terminate(w) for w in workers]

    for job_id, error in bad.items():
        job = app.get_job(job_id)
        assert (job.status, job.attempts) == ("failed", 1), (job_id, job.last_error)
        assert (job.last_error or "").startswith(error), (job_id, job.last_error)
        assert len(job.last_error or "") < 1000  # a huge payload does not make a huge error
        assert [a.outcome for a in app.store.attempt_list(job_id)] == ["failed"]
    for job_id in (big_raw, big):
        job = app.get_job(job_id)
        assert (job.status, job.result) == ("succeeded", FIVE_MB)
    assert app.get_job(big).args == {"data": huge}
    assert all(app.get_job(i).status == "succeeded" for i in valid)
    assert alive == [True, True] and exits == [0, 0]
    logs = "".join(chaos.logs().values())
    assert "worker pass failed" not in logs
    assert stray_tracebacks(logs) == []  # only failed jobs' own, under their job.failed line

    figures = chaos.check(instrumented=lambda task: task.startswith("chaos."))
    chaos.report(figures, bad_rows=len(bad), huge_payloads=3, worker_deaths=0)
    figures.assert_clean()
    assert figures.statuses == {"succeeded": len(valid) + 2, "failed": len(bad)}
    assert figures.reruns == 0


# -- what the database lets through --------------------------------------------------

# Past Python's recursion limit (1000), within SQLite's JSON depth limit (2000).
DEEP = '{"n": ' + "[" * 1500 + "]" * 1500 + "}"


def stray_tracebacks(logs: str) -> list[str]:
    """Tracebacks in worker logs that are not a failed job's (logged under the line that
    says so): a worker's own error would show as one of these."""
    stray, event = [], ""
    for line in logs.splitlines():
        if line.startswith("Traceback"):
            if "job.failed" not in event and "job.retrying" not in event:
                stray.append(event)
        elif re.match(r"\d{4}-\d\d-\d\d ", line):  # a log record's first line
            event = line
    return stray


def burst(app: App) -> list[str]:
    """Runs an in-process worker until the queue is empty, or until it has logged three
    failed passes (a stalled queue); returns the worker's error log lines."""
    lines: list[str] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("onceq.worker")
    logger.addHandler(handler)
    worker = app.worker(concurrency=2, lease=30, handle_signals=False)
    thread = threading.Thread(target=worker.run, kwargs={"burst": True}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: not thread.is_alive() or len(lines) >= 3, timeout=60)
    finally:
        worker.stop()
        thread.join(30)
        logger.removeHandler(handler)
    return lines


def test_a_payload_nested_too_deep_fails_once_with_a_payload_error(store_url: str) -> None:
    app = fresh_app(store_url)
    open_store(store_url).close()
    job_id = raw_insert(store_url, "chaos.short", DEEP)  # retries at once: no backoff
    burst(app)
    status, attempts, error = sql(
        store_url, "SELECT status, attempts, last_error FROM onceq_jobs WHERE id = ?", (job_id,)
    )[0]
    app.close()
    assert (status, attempts) == ("failed", 1), error
    assert error.startswith("PayloadError:")


def test_one_deeply_nested_row_does_not_break_reading_jobs(store_url: str) -> None:
    app = fresh_app(store_url)
    open_store(store_url).close()
    fine = app.enqueue("chaos.short", {"n": 1}).id
    deep = raw_insert(store_url, "chaos.short", DEEP)
    try:
        assert {j.id for j in app.store.job_list()} == {fine, deep}
        assert app.get_job(deep).status == "pending"
    finally:
        app.close()


def test_a_payload_that_is_not_utf8_fails_once_and_does_not_stall_the_queue(
    sqlite_url: str,
) -> None:
    app = fresh_app(sqlite_url)
    open_store(sqlite_url).close()
    bad = raw_insert(sqlite_url, "chaos.short", "{}")
    sql(  # an invalid UTF-8 byte inside a JSON string: json_valid() lets it through
        sqlite_url,
        """UPDATE onceq_jobs SET args = '{"n": "' || CAST(x'ff' AS TEXT) || '"}' WHERE id = ?""",
        (bad,),
    )
    valid = [app.enqueue("chaos.short", {"n": n}).id for n in range(5)]
    errors = burst(app)
    rows = dict(sql(sqlite_url, "SELECT id, status FROM onceq_jobs WHERE id <> ?", (bad,)))
    failed = app.get_job(bad)  # readable, the bad byte shown as U+FFFD
    app.close()
    assert errors == []
    assert rows == {i: "succeeded" for i in valid}
    assert (failed.status, failed.attempts, failed.args) == ("failed", 0, {"n": "\ufffd"})
    assert failed.last_error == "PayloadError: the stored args is not valid UTF-8 text"


def test_a_workflow_item_that_is_not_utf8_fails_its_step_and_the_run_goes_on(
    sqlite_url: str,
) -> None:
    """The unreadable row is failed, and — like every other failure — through the path
    that advances its run: the step fails, its on_failure step runs, the run ends. (It
    used to be failed on the side, leaving its run `running` for ever.)"""
    from onceq import Workflow

    app = fresh_app(sqlite_url)
    wf = (
        Workflow("unreadable", input=["items"])
        .step("fan", "chaos.short", with_items="$input.items", args={"n": "$item"},
              on_failure=["report"])
        .step("report", "chaos.short", args={"n": 99})
    )  # fmt: skip
    run_id = app.run_workflow(wf, {"items": [1, 2]})
    first = min(j.id for j in app.store.job_list(run_id=run_id))
    sql(sqlite_url, """UPDATE onceq_jobs SET args = '{"n": "' || CAST(x'ff' AS TEXT) || '"}'
                       WHERE id = ?""", (first,))  # fmt: skip
    errors = burst(app)
    run = app.get_run(run_id)
    app.close()
    assert errors == []
    assert run.status == "failed", run
    steps = {s.name: s.status for s in run.steps}
    assert steps == {"fan": "failed", "report": "succeeded"}
    assert run.error is not None and "not valid UTF-8" in run.error
