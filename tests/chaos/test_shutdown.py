"""Scenario 7, shutdown while enqueues keep coming: SIGTERM drains the supervisor's
workers (they claim nothing new after the signal, finish what runs, hand back what has
not started), every acknowledged enqueue is in the store, and a second SIGTERM leaves
no job stuck in `running` (the supervisor rescues a dead child's jobs at once)."""

from __future__ import annotations

import re
import signal
from datetime import datetime

import pytest

from onceq import App
from tests.chaos.harness import (
    Chaos,
    Feeder,
    db_now,
    holders,
    read_ledger,
    sql,
    statuses,
    wait_for,
)

pytestmark = pytest.mark.chaos

DRAINING = re.compile(r"^(\S+ \S+) INFO .* worker\.draining worker=(\S+)")


def draining_times(log: str) -> dict[str, float]:
    """When each worker process began to drain (its log line, this machine's clock)."""
    out = {}
    for line in log.splitlines():
        if m := DRAINING.match(line):
            out[m.group(2)] = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return out


def claimed_after_drain(chaos: Chaos, log: str) -> list[tuple[object, ...]]:
    """Attempts a worker kept after it began to drain (the log's times are truncated
    to the millisecond: one is allowed for). A claim sent before the signal may commit
    after it: the worker hands such a claim back unstarted, so released ones are not
    counted."""
    late = []
    for worker, since in draining_times(log).items():
        for job_id, token, started in sql(
            chaos.url,
            "SELECT job_id, token, started_at FROM onceq_attempts"
            " WHERE worker = ? AND coalesce(outcome, '') <> 'released'",
            (worker,),
        ):
            at = started.timestamp() if isinstance(started, datetime) else float(started)
            if at > since + 0.001:
                late.append((worker, job_id, token, round(at - since, 4)))
    return late


def attempt_starts(chaos: Chaos) -> list[tuple[str, float]]:
    return [
        (worker, started.timestamp() if isinstance(started, datetime) else float(started))
        for worker, started in sql(chaos.url, "SELECT worker, started_at FROM onceq_attempts")
    ]


def starts(chaos: Chaos) -> set[tuple[int, int]]:
    return {(e.job, e.token) for e in read_ledger(chaos.ledger) if e.event == "start"}


def burst_rest(chaos: Chaos) -> None:
    """What the drained workers left pending, run by a fresh burst worker."""
    proc, _ = chaos.worker(concurrency=8, lease=30, burst=True)
    assert proc.wait(180) == 0


def test_sigterm_drains_claims_nothing_new_and_keeps_every_acknowledged_enqueue(
    chaos: Chaos, app: App
) -> None:
    supervisor = chaos.supervisor(
        "supervisor", *("--processes", "2", "--concurrency", "3", "--grace", "60")
    )
    feeder = Feeder(  # one by one, all along: no backlog limit
        chaos.url, "chaos.short", lambda n: {"n": n, "sleep": 0.1}, backlog=10**6,
        one_by_one=True, pause=0.03,
    )  # fmt: skip
    with feeder:
        wait_for(lambda: statuses(chaos.url)["succeeded"] >= 20, timeout=120)
        wait_for(lambda: sum(holders(chaos.url).values()) >= 4, timeout=60)  # busy
        signalled = db_now(chaos.url)
        supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(120)
        at_exit = len(feeder.ids)
        wait_for(lambda: len(feeder.ids) >= at_exit + 10, timeout=60)  # still enqueuing
    log = chaos.log("supervisor").read_text()
    running_after = statuses(chaos.url)["running"]
    late = claimed_after_drain(chaos, log)
    drained = draining_times(log)
    entries = read_ledger(chaos.ledger)
    ends = {(e.job, e.token) for e in entries if e.event == "end"}
    unfinished = [
        (e.job, e.token) for e in entries if e.event == "start" and (e.job, e.token) not in ends
    ]
    released = sql(chaos.url, "SELECT count(*) FROM onceq_attempts WHERE outcome = 'released'")
    # Claims that were already under way when the supervisor got the signal (they
    # committed before the worker's own handler ran: allowed, and counted here).
    in_flight = sum(1 for _, at in attempt_starts(chaos) if at > signalled)
    burst_rest(chaos)

    figures = chaos.check(expected_ids=feeder.ids)
    chaos.report(
        figures,
        sigterms=1,
        enqueued=len(feeder.ids),
        enqueued_after_exit=len(feeder.ids) - at_exit,
        released=released[0][0],
        in_flight_claims=in_flight,
        claimed_after_drain=len(late),
    )
    assert code == 0, log[-3000:]
    assert feeder.errors == []
    assert len(drained) == 2
    assert running_after == 0
    assert late == [], late
    assert unfinished == []  # the drain let every started handler finish
    chaos.finished_ok(figures)
    assert figures.reruns == 0


def test_a_second_sigterm_stops_at_once_and_leaves_no_job_running(chaos: Chaos, app: App) -> None:
    supervisor = chaos.supervisor(
        "supervisor",
        *("--processes", "3", "--concurrency", "2", "--lease", "600", "--grace", "600"),
    )
    feeder = Feeder(
        chaos.url, "chaos.gated", lambda n: {"gate": "open"}, backlog=10**6,
        one_by_one=True, pause=0.03,
    )  # fmt: skip
    with feeder:
        # Every slot busy: six handlers started (and waiting for their gate).
        wait_for(lambda: len(starts(chaos)) == 6, timeout=120)
        supervisor.send_signal(signal.SIGTERM)
        wait_for(lambda: "supervisor.draining" in chaos.log("supervisor").read_text())
        wait_for(lambda: len(draining_times(chaos.log("supervisor").read_text())) == 3)
        supervisor.send_signal(signal.SIGTERM)  # the handlers never end: stop now
        code = supervisor.wait(60)
        running_after = statuses(chaos.url)["running"]  # at once: no lease to wait for
        at_exit = len(feeder.ids)
        wait_for(lambda: len(feeder.ids) >= at_exit + 5, timeout=60)
    log = chaos.log("supervisor").read_text()
    late = claimed_after_drain(chaos, log)
    ((died,),) = sql(chaos.url, "SELECT count(*) FROM onceq_attempts WHERE outcome = 'stopped'")
    started = len(starts(chaos))
    (chaos.gates / "open").touch()
    burst_rest(chaos)

    figures = chaos.check(expected_ids=feeder.ids)
    chaos.report(figures, sigterms=2, enqueued=len(feeder.ids), worker_died=died)
    assert code == 1, log[-3000:]
    assert running_after == 0
    assert died == started == 6  # each running job put back at once, its attempt given back
    assert feeder.errors == []
    assert late == [], late
    chaos.finished_ok(figures)
    assert figures.reruns == figures.reruns_lease_loss == started
