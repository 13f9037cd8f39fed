"""Problem 1 of issue 14: every command resolves its store the same way (--url, else
ONCEQ_URL, else the URL the --app's App(...) was given, else sqlite:///onceq.db), and a
worker says which store it serves (password hidden), its version and its tasks."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import onceq
from tests.app.cli import APP, environment
from tests.app.cli import onceq as run


def _with_password(url: str) -> str:
    """The same PostgreSQL URL with a password (trust auth ignores it)."""
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace("@", ":s3cret@", 1)))


def test_worker_enqueue_and_jobs_use_the_url_the_app_was_given(
    store_url: str, tmp_path: Path
) -> None:
    url = _with_password(store_url)
    env = environment(ONCEQ_TEST_APP_URL=url)  # in App(...), not ONCEQ_URL
    tmp_path = tmp_path / "elsewhere"  # the working folder, where onceq.db would go
    tmp_path.mkdir()
    enqueued = run("enqueue", "--app", APP, "tests.app.apps.greet", "--json", '{"name": "a"}',
                   cwd=tmp_path, env=env)  # fmt: skip
    assert enqueued.returncode == 0, enqueued.stderr
    worker = run("worker", "--app", APP, "--burst", cwd=tmp_path, env=env)
    assert worker.returncode == 0, worker.stderr
    started = [line for line in worker.stderr.splitlines() if "worker.started" in line]
    assert len(started) == 1, worker.stderr
    assert "store=" in started[0] and url.replace(":s3cret@", ":***@") in started[0]
    assert "s3cret" not in worker.stderr
    assert f"version={onceq.__version__}" in started[0]
    assert "tests.app.apps.greet" in started[0] and "tests.app.apps.hold" in started[0]
    listing = run("jobs", "--json", "--url", url, cwd=tmp_path, env=env)
    jobs = json.loads(listing.stdout)["jobs"]
    assert [(j["id"], j["status"], j["result"]) for j in jobs] == [
        (int(enqueued.stdout), "succeeded", "hello a")
    ]
    assert not (tmp_path / "onceq.db").exists()  # no store was made where nobody looks


def test_url_and_onceq_url_win_over_the_apps(sqlite_url: str, tmp_path: Path) -> None:
    other = f"sqlite:///{tmp_path}/other.db"
    env = environment(ONCEQ_TEST_APP_URL=other, ONCEQ_URL=sqlite_url)
    run("enqueue", "--app", APP, "tests.app.apps.greet", "--json", '{"name": "b"}',
        cwd=tmp_path, env=env)  # fmt: skip
    assert not (tmp_path / "other.db").exists()
    shown = run("jobs", "--json", cwd=tmp_path, env=env)
    assert len(json.loads(shown.stdout)["jobs"]) == 1, shown.stderr
    third = f"sqlite:///{tmp_path}/third.db"
    run("enqueue", "--app", APP, "tests.app.apps.greet", "--json", '{"name": "c"}',
        "--url", third, cwd=tmp_path, env=env)  # fmt: skip
    assert len(json.loads(run("jobs", "--json", "--url", third, cwd=tmp_path).stdout)["jobs"]) == 1
