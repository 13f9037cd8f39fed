"""Looking at jobs and acting on them: jobs, job, retry, cancel."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from onceq.cli.common import (
    MAX_ID,
    JobId,
    JsonFlag,
    UrlOption,
    console,
    fail,
    print_json,
    store_at,
)
from onceq.cli.tables import fitted
from onceq.models import JOB_STATUSES

STATUS_STYLE = {
    "pending": "yellow",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "dim",
}


def _when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _clock(value: datetime | None) -> str:
    """The time of day alone (an attempt's date is its job's, shown above it)."""
    return "" if value is None else value.astimezone().strftime("%H:%M:%S")


def _short_when(value: datetime | None) -> str:
    """A time in 14 columns (month-day hour:minute:second): the year is in `job ID`."""
    return "" if value is None else value.astimezone().strftime("%m-%d %H:%M:%S")


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[-1] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def jobs(
    url: UrlOption = None,
    status: Annotated[str | None, typer.Option(help="Only jobs in this status.")] = None,
    queue: Annotated[str | None, typer.Option(help="Only jobs of this queue.")] = None,
    task: Annotated[str | None, typer.Option(help="Only jobs of this task.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1_000_000, help="Rows to show.")] = 50,
    offset: Annotated[int, typer.Option(min=0, max=MAX_ID, help="Rows to skip.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """List jobs, newest first, with counts by queue and status."""
    if status is not None and status not in JOB_STATUSES:
        fail(f"unknown status {status!r}: expected one of {', '.join(JOB_STATUSES)}")
    with store_at(url, create=False) as store:
        rows = store.job_list(status=status, queue=queue, task=task, limit=limit, offset=offset)
        counts = store.job_counts()
    if as_json:
        print_json({
            "jobs": [j.to_json() for j in rows],
            "counts": [{"queue": q, "status": s, "count": n} for q, s, n in counts],
        })  # fmt: skip
        return
    cells = [
        [str(j.id), f"[{STATUS_STYLE[j.status]}]{j.status}[/]", escape(j.task), escape(j.queue),
         f"{j.attempts}/{j.max_attempts}", _short_when(j.created_at),
         escape(_short(j.last_error)) if j.status != "succeeded" else ""]
        for j in rows
    ]  # fmt: skip
    headers = ("id", "status", "task", "queue", "tries", "created", "error")
    console.print(fitted(console, f"{len(rows)} job(s)", headers, cells,
                         {"task", "queue", "error"}))  # fmt: skip
    summary = ", ".join(f"{q}/{s}: {n}" for q, s, n in counts)
    console.print(f"[dim]{escape(summary) or 'no jobs'}[/]")


def job(
    job_id: JobId,
    url: UrlOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Show one job: its fields, result or error, and its attempt history."""
    with store_at(url, create=False) as store:
        found = store.job_get(job_id)
        attempts = store.attempt_list(job_id)
    if as_json:
        print_json({"job": found.to_json(), "attempts": [a.to_json() for a in attempts]})
        return
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column(overflow="fold")
    for name, value in found.to_json().items():
        if name != "last_traceback" and value is not None:
            fields.add_row(name, escape(str(value)))
    console.print(fields)
    if found.last_traceback:
        console.print("[bold]last traceback[/]")
        console.print(found.last_traceback, highlight=False, markup=False)
    cells = [
        [str(a.attempt), str(a.token), escape(a.worker), _clock(a.started_at),
         _clock(a.ended_at), a.outcome or "(live)", a.rejected or "",
         escape(_short(a.error))]
        for a in attempts
    ]  # fmt: skip
    headers = ("#", "token", "worker", "started", "ended", "outcome", "rejected", "error")
    console.print(fitted(console, "attempts", headers, cells, {"worker", "error"}))


def retry(
    job_id: JobId,
    url: UrlOption = None,
    attempts: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="Attempts to allow from now.")
    ] = 1,
) -> None:
    """Put a failed or cancelled job back to pending."""
    with store_at(url, create=False) as store:
        found = store.job_retry(job_id, extra_attempts=attempts)
    console.print(
        f"job {found.id} is pending again ({found.max_attempts - found.attempts} attempt(s) left)"
    )


def cancel(
    job_id: JobId,
    url: UrlOption = None,
) -> None:
    """Cancel a pending or running job (a running handler's result is then refused)."""
    with store_at(url, create=False) as store:
        before = store.job_cancel(job_id)
    if before in ("pending", "running"):
        console.print(f"job {job_id} cancelled (was {before})")
    else:
        fail(f"job {job_id} already finished: it is {before}", 1)


def register(cli: typer.Typer) -> None:
    """Add these commands to the `onceq` app."""
    for command in (jobs, job, retry, cancel):
        cli.command()(command)
