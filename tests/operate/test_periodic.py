"""Periodic tasks: each tick enqueued once by whichever worker comes first, never again
(not even once its job is pruned), only the latest missed ticks after downtime, cron
read on a time zone's wall clock across DST changes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from onceq import App
from onceq.errors import ConfigError
from onceq.schedule.cron import Cron, Every
from onceq.schedule.periodic import Scheduler
from onceq.store.urls import parse_url
from tests.helpers import sql_rows
from tests.operate.conftest import onceq


@pytest.fixture
def app(store_url: str) -> Iterator[App]:
    a = App(store_url, retention=None)
    yield a
    a.close()


def ticks_of(app: App, name: str) -> list[str]:
    """The `tick` arguments of a task's jobs, in the order they were enqueued."""
    return [j.args["tick"] for j in reversed(app.store.job_list(task=name, limit=10_000))]


def registered_at(app: App, when: datetime) -> None:
    """As if the periodic tasks had been known to the store since `when`."""
    value: Any = when.timestamp() if parse_url(app.url).dialect == "sqlite" else when
    sql_rows(app.url, "UPDATE onceq_periodic SET created_at = ?", (value,))


def two_workers_through(app: App, start: datetime, end: datetime, step: timedelta) -> None:
    """Two schedulers (two workers) on one store, woken at every step of a fake clock."""
    first, second = (Scheduler(app.store, list(app.periodics.values())) for _ in "ab")
    first.run_once(start)  # the rows exist from now on
    registered_at(app, start)
    first.since.clear()  # both read where the tasks stand from the store
    now = start
    while now <= end:
        for scheduler in (first, second) if now.minute % 2 else (second, first):
            scheduler.run_once(now)
        now += step


@pytest.mark.parametrize(
    ("start", "nightly", "half_hourly"),
    [
        (  # spring forward in Paris: 02:00 CET became 03:00 CEST on 29 March 2026
            datetime(2026, 3, 27, 22, tzinfo=UTC),
            ["2026-03-28T02:30:00+01:00", "2026-03-30T02:30:00+02:00"],  # 29th: no 02:30
            ["2026-03-29T00:30:00+01:00", "2026-03-29T01:00:00+01:00",
             "2026-03-29T01:30:00+01:00", "2026-03-29T03:00:00+02:00",
             "2026-03-29T03:30:00+02:00", "2026-03-29T04:00:00+02:00"],
        ),
        (  # fall back: 03:00 CEST became 02:00 CET on 25 October 2026 (02:xx twice)
            datetime(2026, 10, 23, 22, tzinfo=UTC),
            ["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00",  # once, not twice
             "2026-10-26T02:30:00+01:00"],
            ["2026-10-25T00:30:00+02:00", "2026-10-25T01:00:00+02:00",
             "2026-10-25T01:30:00+02:00", "2026-10-25T02:00:00+02:00",
             "2026-10-25T02:30:00+02:00", "2026-10-25T03:00:00+01:00",
             "2026-10-25T03:30:00+01:00", "2026-10-25T04:00:00+01:00"],
        ),
    ],
)  # fmt: skip
def test_cron_in_a_time_zone_across_a_dst_change_ticks_right_and_once(
    app: App, start: datetime, nightly: list[str], half_hourly: list[str]
) -> None:
    @app.periodic(cron="30 2 * * *", timezone="Europe/Paris")
    def night(tick: datetime) -> None: ...

    @app.periodic(cron="*/30 * * * *", timezone="Europe/Paris")
    def halves(tick: datetime) -> None: ...

    two_workers_through(app, start, start + timedelta(days=2, hours=5), timedelta(minutes=7))
    assert ticks_of(app, night.name) == nightly
    all_halves = ticks_of(app, halves.name)
    assert len(all_halves) == len(set(all_halves))  # each once
    day = half_hourly[0][:10]
    window = [t for t in all_halves if t[:10] == day and "T00:30" <= t[10:16] <= "T04:00"]
    assert window == half_hourly
    assert all(t[14:16] in ("00", "30") for t in all_halves)


def test_after_downtime_only_the_latest_missed_ticks_are_enqueued(app: App) -> None:
    @app.periodic(every=60)
    def minutely() -> None: ...

    @app.periodic(every=60, catch_up=3)
    def three(tick: datetime) -> None: ...

    worker = Scheduler(app.store, list(app.periodics.values()))
    now = datetime.now(UTC)
    upcoming = worker.run_once(now)  # registers: ticks count from now on
    assert app.store.job_counts() == [] and now < upcoming <= now + timedelta(seconds=60)
    away = Every(60).due(now, now + timedelta(minutes=90), 1)[0]  # 90 minutes down
    worker.run_once(away)
    assert len(app.store.job_list(task=minutely.name)) == 1  # not 90
    assert ticks_of(app, three.name) == [
        (away - timedelta(minutes=k)).isoformat().replace("+00:00", "Z") for k in (2, 1, 0)
    ]
    other = Scheduler(app.store, list(app.periodics.values()))  # another worker, later
    other.run_once(away + timedelta(seconds=30))
    assert sum(n for _, _, n in app.store.job_counts()) == 4  # nothing new: all taken


def test_a_pruned_tick_is_never_enqueued_again(app: App) -> None:
    @app.periodic(every=60)
    def minutely() -> None: ...

    scheduler = Scheduler(app.store, list(app.periodics.values()))
    now = datetime.now(UTC)
    scheduler.run_once(now)
    tick = Every(60).due(now, now + timedelta(minutes=5), 1)[0]
    scheduler.run_once(tick + timedelta(seconds=1))
    [job] = app.store.job_list(task=minutely.name)
    sql_rows(app.url, "UPDATE onceq_jobs SET status = 'succeeded', finished_at = created_at")
    assert app.store.prune_batch(0).job_count == 1  # its job, and so its key, are gone
    again = Scheduler(app.store, list(app.periodics.values()))  # a worker started later
    again.run_once(tick + timedelta(seconds=2))
    made, last = app.store.tick_insert(
        minutely.name, [(tick, app.periodics[minutely.name].job(tick))]
    )
    assert (made, last) == ([], tick)  # the key is free, the tick is not
    assert app.store.job_counts() == []
    listed = app.store.periodic_list()
    assert [(p.name, p.last_tick, p.last_job, p.last_status) for p in listed] == [
        (minutely.name, tick, job.id, None)  # its job was pruned
    ]


def test_bad_schedules_are_refused_in_one_line(app: App) -> None:
    def nothing() -> None: ...

    def needs(x: int) -> None: ...

    cases: list[tuple[dict[str, Any], Any, str]] = [
        ({}, nothing, "give either cron= or every="),
        ({"cron": "* * * * *", "every": 5}, nothing, "give either cron= or every="),
        ({"cron": "61 * * * *"}, nothing, "bad cron expression '61 * * * *': Bad minute"),
        ({"cron": "* * *"}, nothing, "it needs 5 fields"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, nothing, "unknown time zone"),
        ({"every": 0}, nothing, "every= must be a positive number of seconds"),
        ({"every": 1e12}, nothing, "duration 1000000000000.0 is too long: at most 100 years"),
        ({"every": 5, "timezone": "Europe/Paris"}, nothing, "timezone= goes with cron="),
        ({"every": 5, "catch_up": 0}, nothing, "catch_up must be a whole number >= 1"),
        ({"every": 5}, needs, "a tick cannot call its handler (tests.operate.test_periodic"),
    ]
    for options, fn, message in cases:
        with pytest.raises(ConfigError) as refused:
            app.periodic(**options)(fn)
        assert message in str(refused.value) and "\n" not in str(refused.value), options
    assert app.periodics == {}


def test_cron_and_every_ticks() -> None:
    paris = Cron("0 9 * * MON-FRI", "Europe/Paris")
    friday = datetime(2026, 7, 3, 7, 0, tzinfo=UTC)  # 09:00 in Paris (CEST)
    assert paris.after(friday - timedelta(seconds=1)) == friday
    assert paris.local(paris.after(friday)).isoformat() == "2026-07-06T09:00:00+02:00"
    assert paris.due(friday - timedelta(days=7), friday, 100)[-1] == friday
    assert len(paris.due(friday - timedelta(days=7), friday, 100)) == 5
    every = Every(30)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    assert every.after(base) == base + timedelta(seconds=30)
    assert every.due(base, base + timedelta(seconds=95), 10) == [
        base + timedelta(seconds=s) for s in (30, 60, 90)
    ]


def test_onceq_periodic_lists_schedules_with_last_and_next_ticks(sqlite_url: str) -> None:
    app = App(sqlite_url, retention=None)

    @app.periodic(cron="*/5 * * * *", timezone="Europe/Paris")
    def five(tick: datetime) -> None: ...

    now = datetime.now(UTC)
    Scheduler(app.store, list(app.periodics.values())).run_once(now + timedelta(minutes=6))
    app.close()
    listed = json.loads(onceq(sqlite_url, "periodic", "--json").stdout)["periodic"]
    assert [(p["name"], p["spec"]) for p in listed] == [
        (five.name, {"cron": "*/5 * * * *", "timezone": "Europe/Paris", "catch_up": 1})
    ]
    last = datetime.fromisoformat(listed[0]["last_tick"])
    assert datetime.fromisoformat(listed[0]["next_tick"]) - last == timedelta(minutes=5)
    table = onceq(sqlite_url, "periodic").stdout
    assert "*/5 * * * * (Europe/Paris)" in table and "pending" in table
