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
    table = Table(title=f"{len(rows)} job(s)", title_justify="left")
    for column in ("id", "status", "task", "queue", "attempts", "created", "finished", "error"):
        table.add_column(column, overflow="fold")
    for j in rows:
        style = STATUS_STYLE[j.status]
        table.add_row(
            str(j.id), f"[{style}]{j.status}[/]", escape(j.task), escape(j.queue),
            f"{j.attempts}/{j.max_attempts}", _when(j.created_at), _when(j.finished_at),
            escape(_short(j.last_error)) if j.status != "succeeded" else "",
        )  # fmt: skip
    console.print(table)
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
    history = Table(title="attempts", title_justify="left")
    for column in ("#", "token", "worker", "started", "ended", "outcome", "rejected", "error"):
        history.add_column(column, overflow="fold")
    for a in attempts:
        history.add_row(
            str(a.attempt), str(a.token), escape(a.worker), _when(a.started_at),
            _when(a.ended_at), a.outcome or "(live)", a.rejected or "", escape(_short(a.error)),
        )  # fmt: skip
    console.print(history)


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
