"""PostgreSQL lock order: job rows first, then a run's row, never a wait after it.

Two interleavings, forced with barriers at named statements, that used to deadlock
(PostgreSQL aborts one transaction after a second; the store retried it, and the log
said so): two rescuers that each took a run's row FOR SHARE (the retry of one job)
before wanting it FOR UPDATE (the advance of another); and a run's cancel that, holding
the run's row, waited for a pending job an operator was cancelling — who waited for
the run. Every transaction now locks each run it touches once, in run id order, and
waits for no job row once it holds a run's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from onceq import App, Workflow
from onceq.store import postgres
from tests.helpers import sql_rows

pytestmark = pytest.mark.postgres


@pytest.fixture
def app(pg_url: str) -> Iterator[App]:
    a = App(pg_url)
    a.task(name="once")(lambda n: n)
    a.task(name="twice", retries=1)(lambda n: n)
    yield a
    a.close()


def _pause_after(
    monkeypatch: pytest.MonkeyPatch, pauses: dict[tuple[str, str], Callable[[], None]]
) -> None:
    """Run `pauses[(thread name, statement)]` right after that thread ran that statement."""
    for method in ("all", "one"):
        real = getattr(postgres._PgTx, method)

        def paused(self: Any, name: str, params: Any, _real: Any = real) -> Any:
            found = _real(self, name, params)
            pause = pauses.pop((threading.current_thread().name, name), None)
            if pause is not None:
                pause()
            return found

        monkeypatch.setattr(postgres._PgTx, method, paused)


def _in_threads(**calls: Callable[[], object]) -> dict[str, object]:
    out: dict[str, object] = {}

    def go(name: str, call: Callable[[], object]) -> None:
        try:
            out[name] = call()
        except BaseException as exc:
            out[name] = exc

    threads = [threading.Thread(target=go, args=(n, c), name=n) for n, c in calls.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_two_rescuers_of_one_run_do_not_deadlock(
    app: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Each rescuer holds a job of the run that goes back to pending (it has attempts
    left) and one that fails (it has none): the first needs the run's status, the
    second advances the run."""
    flow = (
        Workflow("two", input=["items"])
        .step("retried", "twice", with_items="$input.items", args={"n": "$item"})
        .step("final", "once", with_items="$input.items", args={"n": "$item"})
    )
    run_id = app.run_workflow(flow, {"items": [1, 2]})
    leases = app.store.job_claim("gone", None, 4, 3600.0)
    by_step: dict[str, list[int]] = {}
    for x in leases:
        by_step.setdefault(x.step or "", []).append(x.job_id)
    first = (by_step["retried"][0], by_step["final"][0])
    second = (by_step["retried"][1], by_step["final"][1])

    def expire(ids: tuple[int, int]) -> None:
        sql_rows(app.url, "UPDATE onceq_jobs SET lease_expires_at = now() - interval '1 s' "
                          "WHERE id IN (?, ?)", ids)  # fmt: skip

    expire(first)
    both_hold_their_jobs = threading.Barrier(2, timeout=20)
    second_expired = threading.Event()

    def first_holds() -> None:
        expire(second)  # only now: the second rescuer's pass finds those two
        second_expired.set()
        both_hold_their_jobs.wait()

    _pause_after(monkeypatch, {
        ("A", "job_rescue"): first_holds,
        ("B", "job_rescue"): both_hold_their_jobs.wait,
    })  # fmt: skip
    caplog.set_level(logging.INFO, logger="onceq.store")
    other = App(app.url)

    def b() -> object:
        # Not before A holds its two and the other two have expired: started any sooner,
        # B's pass could find nothing (A's rows are skipped, B's not expired yet).
        second_expired.wait(20)
        return other.store.job_rescue()

    def a() -> object:
        return app.store.job_rescue()

    out = _in_threads(A=a, B=b)
    other.close()
    assert not any(isinstance(v, BaseException) for v in out.values()), out
    rescued = sorted(r.job_id for got in out.values() for r in got)  # type: ignore[attr-defined]
    assert rescued == sorted(first + second)
    assert "DeadlockDetected" not in caplog.text
    steps = {s.name: s.status for s in app.get_run(run_id).steps}
    assert steps == {"retried": "running", "final": "failed"}  # (no attempts left there)


def test_cancelling_a_run_does_not_deadlock_with_an_operator_cancelling_its_job(
    app: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The run's cancel has cancelled its pending jobs; a completion then dispatches the
    next item; an operator cancels that item (holding its row, then wanting the run's);
    meanwhile the run's cancel has locked the run and looks again for pending jobs."""
    flow = Workflow("one-by-one", input=["items"]).step(
        "fan", "once", with_items="$input.items", args={"n": "$item"}, concurrency=1
    )
    run_id = app.run_workflow(flow, {"items": [1, 2]})
    (first,) = app.store.job_claim("w", None, 1, 3600.0)
    operator = App(app.url)
    steps = {name: threading.Event() for name in ("first_pass", "cancelling", "run_locked")}
    go_on = {name: threading.Event() for name in ("run", "operator")}

    def after_first_pass() -> None:
        steps["first_pass"].set()
        go_on["run"].wait(20)

    def operator_holds_the_job() -> None:
        steps["cancelling"].set()
        go_on["operator"].wait(20)

    _pause_after(monkeypatch, {
        ("run", "run_cancel_jobs"): after_first_pass,
        ("run", "run_lock"): steps["run_locked"].set,
        ("operator", "job_cancel"): operator_holds_the_job,
    })  # fmt: skip
    caplog.set_level(logging.INFO, logger="onceq.store")

    def conduct() -> None:
        assert steps["first_pass"].wait(20)
        assert app.store.job_complete(first, 1)  # dispatches the second item, commits
        (second,) = [j for j in app.store.job_list(run_id=run_id) if j.status == "pending"]
        thread = threading.Thread(target=lambda: out.update(op=operator.store.job_cancel(
            second.id)), name="operator")  # fmt: skip
        thread.start()
        assert steps["cancelling"].wait(20)
        go_on["run"].set()
        assert steps["run_locked"].wait(20)
        go_on["operator"].set()
        thread.join(60)

    out: dict[str, object] = {}
    conductor = threading.Thread(target=conduct)
    conductor.start()
    out.update(_in_threads(run=lambda: app.store.run_cancel(run_id)))
    conductor.join(60)
    operator.close()
    assert out == {"run": "running", "op": "pending"}, out
    assert "DeadlockDetected" not in caplog.text
    assert app.get_run(run_id).status == "cancelled"
    assert [j.status for j in app.store.job_list(run_id=run_id)] == ["cancelled", "succeeded"]
