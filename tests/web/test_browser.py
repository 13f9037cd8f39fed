"""The dashboard in a real browser: headless Chromium driven by Selenium, against uvicorn
on 127.0.0.1, over a store a real worker filled. Every page opens; a filter narrows the
jobs; a job shows its attempts; a bulk retry changes what it matched; a new job appears
without a reload. Screenshots of each page go to the test's temporary folder (and, with
ONCEQ_SCREENSHOTS=DIR, the overview and a job's page are copied there: docs/ keeps two).

Needs Debian's `chromium` and `chromium-driver` (.ci/run installs them); without them the
tests skip, except under CI=true, where they fail."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from onceq import App
from onceq.models import NewJob
from onceq.web import Options, create_app
from onceq.web.security import LOOPBACK_NAMES
from tests.conftest import IN_CI
from tests.helpers import app_with_tasks
from tests.web import apps
from tests.web.conftest import History, populate

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
]
WAIT = 20.0  # seconds a condition may take; the tests wait on it, never sleep


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if CHROMIUM is None or DRIVER is None:
        reason = "chromium and chromium-driver are not installed (apt-get install them)"
        if IN_CI:
            pytest.fail(f"{reason}; CI=true requires the browser tests to run")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, App, History]]:
    """The dashboard served by uvicorn on a free port of 127.0.0.1, live updates on."""
    url = f"sqlite:///{tmp_path_factory.mktemp('store')}/onceq.db"
    app = app_with_tasks(url, apps.app)
    history = populate(app)
    asgi = create_app(app.store, Options(hosts=LOOPBACK_NAMES, stats_ttl=0))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(asgi, log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    from tests.helpers import eventually

    eventually(lambda: server.started, timeout=WAIT)
    yield f"http://127.0.0.1:{port}", app, history
    server.should_exit = True
    thread.join(timeout=WAIT)
    sock.close()
    app.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def wait_for(driver: Any, condition: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.05).until(condition)


def open_page(driver: Any, url: str, marker: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, marker))


def rows(driver: Any) -> list[int]:
    """The job ids on the page, read in one go (a live update may swap the rows)."""
    ids: list[int] = driver.execute_script(
        "return Array.from(document.querySelectorAll('#jobs tr[data-id]'), r => +r.dataset.id)"
    )
    return ids


def test_every_page_opens(browser: Any, site: tuple[str, App, History], shots: Path) -> None:
    from selenium.webdriver.common.by import By

    base, _, history = site
    pages = {
        "overview": ("/", "#queues"),
        "jobs": ("/jobs", "#jobs"),
        "job": (f"/jobs/{history.lost}", "#attempts"),
        "failed-job": (f"/jobs/{history.hostile}", "#traceback"),
        "runs": ("/runs", "#runs"),
        "run": (f"/runs/{history.run_id}?step=each", "svg.dag"),
        "batches": ("/batches", "#batches"),
        "batch": ("/batches/refactor", "#tasks"),
        "workers": ("/workers", "main table"),
    }
    for name, (path, marker) in pages.items():
        open_page(browser, base + path, marker)
        assert "Error" not in browser.title, (name, browser.title)
        browser.save_screenshot(str(shots / f"{name}.png"))
    assert (shots / "overview.png").stat().st_size > 0
    copy_to = os.environ.get("ONCEQ_SCREENSHOTS")
    if copy_to:
        for name in ("overview", "job"):
            shutil.copy(shots / f"{name}.png", Path(copy_to) / f"dashboard-{name}.png")

    open_page(browser, f"{base}/jobs/{history.hostile}", "#fields")
    task_cell = browser.find_element(By.CSS_SELECTOR, "#fields dd.task").text
    assert task_cell == apps.HOSTILE_TASK  # shown as text, not run
    assert "</script>" in browser.find_element(By.ID, "payload").text
    assert browser.execute_script("return window.__pwned === undefined")


def test_a_filter_narrows_the_jobs(browser: Any, site: tuple[str, App, History]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, _, history = site
    open_page(browser, f"{base}/jobs", "#filters")
    Select(browser.find_element(By.NAME, "status")).select_by_value("failed")
    browser.find_element(By.NAME, "task").send_keys("tests.web.apps.boom")
    browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait_for(browser, lambda d: "status=failed" in d.current_url)
    assert sorted(rows(browser)) == sorted(history.failed)


def test_a_job_shows_its_attempts(browser: Any, site: tuple[str, App, History]) -> None:
    from selenium.webdriver.common.by import By

    base, _, history = site
    open_page(browser, f"{base}/jobs/{history.flaky[1]}", "#attempts")
    attempts = browser.find_elements(By.CSS_SELECTOR, "#attempts tr.attempt")
    assert [a.find_elements(By.TAG_NAME, "td")[6].text for a in attempts] == [
        "retried",
        "succeeded",
    ]
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.timeline rect")) == 2


def test_a_bulk_retry_changes_what_the_filter_matched(
    browser: Any, site: tuple[str, App, History]
) -> None:
    from selenium.webdriver.common.by import By

    base, app, history = site
    open_page(browser, f"{base}/jobs?status=failed&task=tests.web.apps.boom", "#bulk-retry")
    browser.find_element(By.ID, "bulk-retry").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "confirm-count"))
    assert "3 job(s)" in browser.find_element(By.ID, "confirm-count").text
    browser.find_element(By.CSS_SELECTOR, "#confirm button[type=submit]").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "done"))
    assert "retry: 3" in browser.find_element(By.ID, "done").text
    assert rows(browser) == []  # none of them is failed any more
    assert {app.store.job_get(i).status for i in history.failed} == {"pending"}


def test_a_new_job_appears_without_a_reload(browser: Any, site: tuple[str, App, History]) -> None:
    base, app, _ = site
    open_page(browser, f"{base}/jobs", "#jobs")
    wait_for(
        browser,
        lambda d: d.execute_script(
            "return document.getElementById('live-dot').classList.contains('on')"
        ),
    )
    browser.execute_script("window.__same_page = true")
    new = app.store.job_insert(NewJob("tests.web.apps.ok", {"n": 4242}))  # another connection
    wait_for(browser, lambda d: new.id in rows(d))
    assert browser.execute_script("return window.__same_page === true")  # no reload
