"""The dashboard's pages over a real history, on both backends: what each shows, the
filters, keyset paging, bulk actions, and bad input."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from starlette.testclient import TestClient

from onceq import App
from onceq.models import NewJob, WorkerRecord
from tests.web.conftest import History, client_for


def ids_on(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-id="(\d+)">', html)]


def post(client: TestClient, path: str, data: dict[str, str]) -> Any:
    """A POST as the dashboard's own form sends it: its token, from its origin."""
    token = client.cookies.get("onceq_csrf")
    assert token, "a page must be fetched first: it sets the CSRF cookie"
    return client.post(
        path,
        data={"csrf": token, **data},
        headers={"Origin": "http://127.0.0.1:8400"},
        follow_redirects=False,
    )


def test_every_page_shows_the_history(client: TestClient, history: History, app: App) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert 'id="queues"' in page.text and "default" in page.text
    assert 'id="unexplained">0<' in page.text
    assert '<div class="big">1</div>stale writes refused' in page.text
    assert "tests.web.apps.boom" in page.text  # the tasks table
    jobs = client.get("/jobs").text
    assert set(history.ok + history.failed) <= set(ids_on(jobs))
    job = client.get(f"/jobs/{history.flaky[0]}").text
    assert job.count('class="attempt"') == 2  # failed once, then succeeded
    assert "retried" in job and "succeeded" in job and "first attempt" in job
    lost = client.get(f"/jobs/{history.lost}").text
    assert "host-a:4242:doomed" in lost and "worker_died" in lost
    assert '<td class="rejected">complete</td>' in lost  # its late result, refused
    failed = client.get(f"/jobs/{history.failed[0]}").text
    assert "Traceback" in failed and 'id="traceback"' in failed
    run = client.get(f"/runs/{history.run_id}").text
    assert 'class="node n-succeeded' in run and '<path class="edge"' in run
    assert client.get(f"/runs/{history.run_id}?step=each").text.count("/jobs/") >= 4
    assert f'href="/runs/{history.run_id}"' in client.get("/runs").text
    batches = client.get("/batches").text
    assert "refactor" in batches
    batch = client.get("/batches/refactor").text
    assert "sent back" in batch and "&lt;b&gt;test_x&lt;/b&gt;" in batch
    assert "/tmp/wt/slot-0" in batch
    workers = client.get("/workers")
    assert workers.status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/api/stats").json()["tasks"]


def test_filters_and_keyset_pages(client: TestClient, history: History, app: App) -> None:
    failed = ids_on(client.get("/jobs?status=failed").text)
    assert set(history.failed) <= set(failed) and history.hostile in failed
    by_task = ids_on(client.get("/jobs?task=tests.web.apps.flaky").text)
    assert sorted(by_task) == sorted(history.flaky)
    by_text = ids_on(client.get("/jobs", params={"text": "onerror=alert"}).text)
    assert by_text == [history.hostile]
    assert ids_on(client.get("/jobs?since=2999-01-01T00:00").text) == []
    assert ids_on(client.get("/jobs?queue=nowhere").text) == []

    app.store.job_insert_many([NewJob("tests.web.apps.ok", {"n": n}) for n in range(120)])
    pages: list[list[int]] = []
    url = "/jobs?status=pending"
    while url:
        html = client.get(url).text
        pages.append(ids_on(html))
        if len(pages) == 2:
            newer = re.search(r'id="newer" href="([^"]+)"', html)
            assert newer, "the second page links back"
            back = client.get(newer.group(1).replace("&amp;", "&")).text
            assert ids_on(back) == pages[0]
        older = re.search(r'id="older" href="([^"]+)"', html)
        url = older.group(1).replace("&amp;", "&") if older else ""
    seen = [i for page in pages for i in page]
    assert [len(p) for p in pages] == [50, 50, 20]
    assert seen == sorted(set(seen), reverse=True)  # newest first, no gap, no repeat


def test_bulk_retry_of_what_a_filter_matches(
    client: TestClient, history: History, app: App
) -> None:
    confirm = client.get("/jobs/bulk?action=retry&status=failed&task=tests.web.apps.boom")
    assert confirm.status_code == 200
    assert "<strong>3</strong>" in confirm.text
    upto = re.search(r'name="upto" value="(\d+)"', confirm.text)
    assert upto
    done = post(
        client,
        "/jobs/bulk",
        {
            "action": "retry",
            "upto": upto.group(1),
            "status": "failed",
            "task": "tests.web.apps.boom",
        },
    )
    assert done.status_code == 303
    assert "done=retry%3A3" in done.headers["location"]
    assert {app.store.job_get(i).status for i in history.failed} == {"pending"}
    assert app.store.job_get(history.hostile).status == "failed"  # another task: untouched

    cancel = client.get("/jobs/bulk?action=cancel&task=tests.web.apps.boom").text
    assert "<strong>3</strong>" in cancel
    upto = re.search(r'name="upto" value="(\d+)"', cancel)
    assert upto
    post(
        client,
        "/jobs/bulk",
        {"action": "cancel", "upto": upto.group(1), "task": "tests.web.apps.boom"},
    )
    assert {app.store.job_get(i).status for i in history.failed} == {"cancelled"}


def test_one_job_retried_and_cancelled_from_its_page(
    client: TestClient, history: History, app: App
) -> None:
    job_id = history.failed[0]
    assert "Retry" in client.get(f"/jobs/{job_id}").text
    assert post(client, f"/jobs/{job_id}/retry", {}).status_code == 303
    assert app.store.job_get(job_id).status == "pending"
    assert post(client, f"/jobs/{job_id}/cancel", {}).status_code == 303
    assert app.store.job_get(job_id).status == "cancelled"
    again = post(client, f"/jobs/{job_id}/cancel", {})
    assert again.status_code == 409


def test_bad_input_is_one_line_and_changes_nothing(client: TestClient, history: History) -> None:
    for url, reason in [
        ("/jobs?status=exploded", "unknown status 'exploded'"),
        ("/jobs?before=abc", "before must be a whole number"),
        ("/jobs?since=yesterday", "since must be a time"),
        ("/jobs?since=2024-02-01T00:00&until=2024-01-01T00:00", "since must be before until"),
        ("/jobs/bulk?action=explode", "unknown action 'explode'"),
        (f"/runs/{history.run_id}?step=nope", "has no step 'nope'"),
        ("/jobs?text=" + "x" * 500, "text is longer than 200 characters"),
    ]:
        page = client.get(url)
        assert page.status_code == 400, url
        assert reason in page.text.replace("&#39;", "'"), url
    assert client.get("/jobs/999999").status_code == 404
    assert client.get("/runs/999999").status_code == 404
    assert client.get("/batches/nope").status_code == 404
    assert client.get("/jobs/0").status_code == 400


def test_read_only_shows_no_action(app: App, history: History) -> None:
    with client_for(app.store, read_only=True) as client:
        page = client.get(f"/jobs/{history.failed[0]}").text
        assert "Retry" not in page and 'id="bulk-retry"' not in client.get("/jobs").text
        refused = post(client, f"/jobs/{history.failed[0]}/retry", {})
        assert refused.status_code == 403
    assert app.store.job_get(history.failed[0]).status == "failed"


def test_workers_from_the_registry(app: App, history: History) -> None:
    app.store.worker_register(WorkerRecord(
        name="<b>w-1</b>", host="box-1", pid=4242, queues=None, concurrency=8,
        version="0.1.0", started_at=datetime(2026, 1, 1, tzinfo=UTC),
        last_seen=datetime(2026, 1, 1, 0, 5, tzinfo=UTC),
    ))  # fmt: skip
    with client_for(app.store) as client:
        for path in ("/workers", "/"):
            html = client.get(path).text
            assert "&lt;b&gt;w-1&lt;/b&gt;" in html and "box-1" in html and "(all)" in html
