"""Fixtures of the fault-injection tier (`pytest -m chaos`).

ONCEQ_SOAK=1 switches every scenario to its soak figures (more jobs, more kills, more
rounds; see each test's `soak(default, soaked)`). Each scenario's figures are printed
(`-s` shows them), appended as JSON lines to ONCEQ_CHAOS_FIGURES (default:
chaos-figures.jsonl in pytest's base temp folder) and summed up at the end of the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from onceq import App
from tests.chaos import apps
from tests.chaos.harness import FIGURES_ENV, GATES_ENV, LEDGER_ENV, RECORDS, SOAK, Chaos
from tests.helpers import app_with_tasks


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if SOAK:  # soak figures run for minutes: past the suite's per-test timeout
        here = Path(__file__).parent
        for item in items:
            if here in Path(item.path).parents:
                item.add_marker(pytest.mark.timeout(3600))


@pytest.fixture(scope="session", autouse=True)
def figures_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = os.environ.get(FIGURES_ENV) or str(
        tmp_path_factory.getbasetemp() / "chaos-figures.jsonl"
    )
    os.environ[FIGURES_ENV] = path
    return Path(path)


@pytest.fixture
def new_chaos(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], Chaos]]:
    """Makes the chaos kit of a store URL; kills every process it started at the end."""
    made: list[Chaos] = []

    def make(url: str) -> Chaos:
        kit = Chaos(url, tmp_path, request.node.name)
        monkeypatch.setenv(LEDGER_ENV, str(kit.ledger))  # handlers run in-process too
        monkeypatch.setenv(GATES_ENV, str(kit.gates))
        made.append(kit)
        return kit

    yield make
    for kit in made:
        kit.cleanup()


@pytest.fixture
def chaos(store_url: str, new_chaos: Callable[[str], Chaos]) -> Chaos:
    """The chaos kit on each backend in turn."""
    return new_chaos(store_url)


def fresh_app(url: str) -> App:
    """An App on `url` with the tasks of tests.chaos.apps registered."""
    return app_with_tasks(url, apps.app)


@pytest.fixture
def app(chaos: Chaos) -> Iterator[App]:
    a = fresh_app(chaos.url)
    a.store  # noqa: B018 - opened now, so the schema is there before any process starts
    yield a
    a.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RECORDS:
        return
    tr = terminalreporter
    tr.section(f"chaos figures{' (soak)' if SOAK else ''}")
    header = (
        f"{'scenario':<34} {'backend':<8} {'jobs':>6} {'lost':>4} {'reruns':>6} "
        f"{'by-loss':>7} {'retry':>5} {'stale':>5} {'self':>4}  faults"
    )
    tr.write_line(header)
    for r in RECORDS:
        faults = ", ".join(f"{k}={v}" for k, v in r["faults"].items())
        tr.write_line(
            f"{r['scenario'][:34]:<34} {r['backend']:<8} {r['jobs']:>6} {r['lost']:>4} "
            f"{r['reruns']:>6} {r['reruns_lease_loss']:>7} {r['reruns_retry']:>5} "
            f"{r['rejected'] - r['rejected_self_race']:>5} {r['rejected_self_race']:>4}  {faults}"
        )
    tr.write_line(
        "reruns: handler starts after the first; by-loss: after a lease loss (lease_expired,"
        " worker_died); retry: after the handler failed; stale: refused stale writes; self:"
        " refused heartbeats that raced their own holder's completion"
    )
    tr.write_line(f"(JSON lines in {os.environ.get(FIGURES_ENV)})")
