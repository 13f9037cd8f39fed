"""Who may see and act: credentials on every route, CSRF and same-origin on every action,
loopback unless there are credentials, and user data as text."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from onceq import App
from onceq.errors import ConfigError
from onceq.web import Options, create_app, server
from onceq.web.security import LOOPBACK_NAMES
from tests.web import apps
from tests.web.conftest import CREDENTIALS, History, client_for

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "http://127.0.0.1:8400"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


GOOD = basic(CREDENTIALS.user, CREDENTIALS.password)


def every_route(history: History) -> list[tuple[str, str]]:
    """(method, path) of every route the app has, with real ids filled in: a route added
    later is covered without touching this test."""
    app = create_app(App("sqlite:///:memory:").store, Options(live=False))
    values = {"job_id": str(history.failed[0]), "run_id": str(history.run_id), "name": "refactor"}
    out = []
    for route in app.app.routes:
        assert isinstance(route, Route)
        path = route.path.replace("/static/{name}", "/static/app.js")
        for key, value in values.items():
            path = path.replace("{" + key + "}", value)
        for method in sorted(route.methods or ["GET"]):
            if method != "HEAD":
                out.append((method, path))
    return out


def test_every_route_needs_the_credentials(app: App, history: History) -> None:
    routes = every_route(history)
    assert ("POST", "/jobs/bulk") in routes and ("GET", "/metrics") in routes
    with client_for(app.store, credentials=CREDENTIALS) as client:
        for method, path in routes:
            for headers in (
                {},
                basic("admin", "wrong"),
                basic("nobody", CREDENTIALS.password),
                {"Authorization": "Bearer x"},
                {"Authorization": "Basic !!!"},
            ):
                answer = client.request(method, path, headers=headers)
                assert answer.status_code == 401, (method, path, headers)
                assert answer.headers["www-authenticate"].startswith("Basic")
        for method, path in routes:
            if method == "GET" and path != "/events":  # (a stream: it would not end)
                query = "?action=retry" if path == "/jobs/bulk" else ""
                assert client.get(path + query, headers=GOOD).status_code == 200, path
    assert app.store.job_get(history.failed[0]).status == "failed"  # no POST got through


def test_metrics_may_be_public_and_nothing_else(app: App, history: History) -> None:
    with client_for(app.store, credentials=CREDENTIALS, metrics_public=True) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/api/stats").status_code == 401
        assert client.get("/").status_code == 401


def test_an_action_needs_its_token_and_this_origin(
    client: TestClient, history: History, app: App
) -> None:
    job_id = history.failed[0]
    client.get("/jobs")  # the CSRF cookie
    token = client.cookies["onceq_csrf"]
    path = f"/jobs/{job_id}/retry"
    refused = [
        ({}, {"Origin": ORIGIN}),  # no token
        ({"csrf": "x" * 43}, {"Origin": ORIGIN}),  # a wrong one
        ({"csrf": token}, {"Origin": "http://evil.example"}),  # another origin
        ({"csrf": token}, {"Origin": "null"}),
        ({"csrf": token}, {"Referer": "http://evil.example/jobs"}),  # no Origin, foreign
        ({"csrf": token}, {}),  # neither Origin nor Referer
    ]
    for form, headers in refused:
        answer = client.post(path, data=form, headers=headers, follow_redirects=False)
        assert answer.status_code == 403, (form, headers)
        bulk = client.post(
            "/jobs/bulk",
            data={**form, "action": "retry", "upto": "999999"},
            headers=headers,
            follow_redirects=False,
        )
        assert bulk.status_code == 403, (form, headers)
    assert {app.store.job_get(i).status for i in history.failed} == {"failed"}
    assert app.store.job_get(history.hostile).status == "failed"
    ok = client.post(
        path,
        data={"csrf": token},
        headers={"Referer": f"{ORIGIN}/jobs/{job_id}"},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and app.store.job_get(job_id).status == "pending"


def test_a_get_never_acts(client: TestClient, history: History, app: App) -> None:
    for path in (f"/jobs/{history.failed[0]}/retry", f"/jobs/{history.failed[0]}/cancel"):
        assert client.get(path).status_code == 405
    client.get("/jobs/bulk?action=retry&status=failed")  # only the confirmation
    assert app.store.job_get(history.failed[0]).status == "failed"


def test_hostile_names_are_text(client: TestClient, history: History) -> None:
    pages = [
        client.get(p).text
        for p in (
            "/",
            "/jobs",
            f"/jobs/{history.hostile}",
            "/jobs?status=failed",
            f"/jobs/{history.failed[0]}",
            "/batches/refactor",
        )
    ]
    for html in pages:
        assert "<script>alert" not in html and "<img src=x" not in html and "<b>" not in html
    job = pages[2]
    assert "tests.&lt;script&gt;alert(&#39;task&#39;)&lt;/script&gt;" in job
    assert "&lt;img src=x onerror=alert(1)&gt;" in job  # a payload key
    assert "&lt;/pre&gt;&lt;script&gt;alert(&#39;payload&#39;)&lt;/script&gt;" in job
    assert "&lt;script&gt;alert(&#39;error&#39;)&lt;/script&gt; &amp; &lt;b&gt;" in job
    assert 'id="done"' not in client.get("/jobs?done=<script>x").text  # not echoed
    answer = client.get("/")
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY"
    assert apps.HOSTILE_TASK in client.get("/metrics").text  # text/plain, as Prometheus reads it


def test_loopback_without_credentials_answers_its_own_names_only(
    app: App, history: History
) -> None:
    with client_for(app.store, hosts=LOOPBACK_NAMES) as client:
        assert client.get("/", headers={"Host": "localhost:8400"}).status_code == 200
        assert client.get("/", headers={"Host": "[::1]:8400"}).status_code == 200
        rebound = client.get("/", headers={"Host": "attacker.example:8400"})
        assert rebound.status_code == 400 and "Host" in rebound.text


def test_listening_beyond_loopback_needs_credentials() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert server.plan(host, 8400, None).options.credentials is None
    for host in ("0.0.0.0", "::", "dashboard.example"):
        with pytest.raises(ConfigError, match="refusing to listen"):
            server.plan(host, 8400, None)
        assert server.plan(host, 8400, "me:pw").options.credentials is not None
    for bad in ("nopassword", ":pw", "me:"):
        with pytest.raises(ConfigError, match="USER:PASSWORD"):
            server.plan("0.0.0.0", 8400, bad)


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--host", "0.0.0.0"], {}, "refusing to listen on 0.0.0.0 without credentials"),
        (["--host", "0.0.0.0"], {"ONCEQ_DASHBOARD_AUTH": "no-colon"}, "USER:PASSWORD"),
        (["--port", "70000"], {}, "port must be between 1 and 65535"),
        ([], {}, "no store at sqlite:///"),  # nothing to show: nothing is created
    ],
)
def test_the_command_refuses_in_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], needle: str
) -> None:
    environ = {**os.environ, "COLUMNS": "200", **env}
    environ.pop("ONCEQ_DASHBOARD_AUTH", None) if not env else None
    result = subprocess.run(
        [sys.executable, "-m", "onceq", "dashboard", "--url", f"sqlite:///{tmp_path}/x.db", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert needle in result.stderr
    assert not (tmp_path / "x.db").exists()  # refused before anything was opened
