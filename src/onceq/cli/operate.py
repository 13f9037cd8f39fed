"""Operating a store: `onceq workers`, `onceq prune`, `onceq periodic`. Thin: each
renders what a store verb returns."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from onceq.cli.common import JsonFlag, UrlOption, console, errors, print_json, store_at


def _ago(when: datetime, now: datetime) -> str:
    seconds = max(0.0, (now - when).total_seconds())
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def workers(url: UrlOption = None, as_json: JsonFlag = False) -> None:
    """The live workers: host, pid, queues, concurrency, started, last seen."""
    with store_at(url, create=False) as store:
        found = store.worker_list()
    if as_json:
        print_json({"workers": [w.to_json() for w in found]})
        return
    now = datetime.now(UTC)
    table = Table(title=f"{len(found)} worker(s)", title_justify="left")
    for column in ("name", "host", "pid", "queues", "concurrency", "version", "started",
                   "last seen"):  # fmt: skip
        table.add_column(column, overflow="fold")
    for w in found:
        queues = "*" if w.queues is None else ", ".join(w.queues)
        table.add_row(
            escape(w.name), escape(w.host), str(w.pid), escape(queues), str(w.concurrency),
            escape(w.version), _when(w.started_at), _ago(w.last_seen, now),
        )  # fmt: skip
    console.print(table)


def prune(
    url: UrlOption = None,
    older_than: Annotated[
        str, typer.Option(help="Age of what goes: 30s, 15m, 12h, 7d (finished before).")
    ] = "7d",
    as_json: JsonFlag = False,
) -> None:
    """Delete finished jobs (with their attempts) and finished workflow runs (with their
    jobs) older than that, in small batches; workers also prune by themselves."""
    from onceq.durations import parse_duration
    from onceq.schedule import retention

    with errors():
        age = parse_duration(older_than)
    with store_at(url, create=False) as store:
        pruned = retention.prune(store, age)
    if as_json:
        print_json({"older_than": age, **pruned.to_json()})
        return
    console.print(
        f"deleted {pruned.job_count} job(s), with their attempts, and {pruned.runs} workflow "
        f"run(s) that finished more than {escape(older_than)} ago"
    )


def periodic(url: UrlOption = None, as_json: JsonFlag = False) -> None:
    """The periodic tasks the workers know: schedule, last tick enqueued, next tick."""
    from onceq.schedule.cron import from_spec

    with store_at(url, create=False) as store:
        found = store.periodic_list()
    now = datetime.now(UTC)
    listed = []
    for p in found:
        with errors():
            schedule = from_spec(p.spec)
        since = p.last_tick or p.created_at
        upcoming = schedule.after(since)
        listed.append((p, schedule, upcoming))
    if as_json:
        print_json({"periodic": [
            {**p.to_json(), "next_tick": None if nxt is None else schedule.local(nxt).isoformat(),
             "overdue": nxt is not None and nxt <= now}
            for p, schedule, nxt in listed
        ]})  # fmt: skip
        return
    table = Table(title=f"{len(found)} periodic task(s)", title_justify="left")
    for name in ("task", "schedule", "catch up", "last tick", "last job", "next tick"):
        table.add_column(name, overflow="fold")
    for p, schedule, nxt in listed:
        spec = p.spec
        shown = (f"every {spec['every']:g}s" if "every" in spec
                 else f"{spec.get('cron')} ({spec.get('timezone') or 'UTC'})")  # fmt: skip
        last = "" if p.last_tick is None else schedule.local(p.last_tick).isoformat()
        job = "" if p.last_job is None else f"{p.last_job} ({p.last_status or 'pruned'})"
        coming = "" if nxt is None else schedule.local(nxt).isoformat()
        if nxt is not None and nxt <= now:
            coming += " (due: no worker has enqueued it yet)"
        table.add_row(escape(p.name), escape(shown), str(spec.get("catch_up", 1)), last, job,
                      coming)  # fmt: skip
    console.print(table)


def register(cli: typer.Typer) -> None:
    """Add these commands to the `onceq` app."""
    for command in (workers, prune, periodic):
        cli.command()(command)
