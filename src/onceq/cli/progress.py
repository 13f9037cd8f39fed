"""A live view of a workflow run: one progress bar per step."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from onceq.models import Run, StepState

STEP_STYLE = {
    "waiting": "dim",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "dim",
    "skipped": "dim",
}
FINAL_JOBS = ("succeeded", "failed", "cancelled")


def follow(get_run: Callable[[], Run], console: Console, every: float = 0.1) -> Run:
    """Show the run's steps as progress bars until it ends; the final Run."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    )
    bars: dict[str, TaskID] = {}
    with progress:
        while True:
            run = get_run()
            for step in run.steps:
                if step.name not in bars:
                    bars[step.name] = progress.add_task(escape(step.name), total=None, status="")
                _update(progress, bars[step.name], step)
            if run.status != "running":
                return run
            time.sleep(every)


def _update(progress: Progress, bar: TaskID, step: StepState) -> None:
    done = sum(step.counts.get(s, 0) for s in FINAL_JOBS)
    style = STEP_STYLE[step.status]
    total = step.total if step.status != "waiting" else None
    if step.status in ("skipped", "cancelled") and not step.total:
        total = 0
    progress.update(bar, total=total, completed=done, status=f"[{style}]{step.status}[/]")
    if step.status != "running" and step.status != "waiting":
        progress.stop_task(bar)


def steps_table(run: Run, title: str | None = None) -> Table:
    """A run's steps: status, jobs dispatched against items, time taken, error."""
    title = title or f"run {run.id} ({escape(run.name)}): {run.status}"
    table = Table(title=title, title_justify="left")
    for column in ("step", "status", "items", "dispatched", "done", "failed", "seconds"):
        table.add_column(column, no_wrap=True)
    errors = any(s.error for s in run.steps)
    if errors:
        table.add_column("error", overflow="fold")
    for s in run.steps:
        seconds = ""
        if s.started_at and s.finished_at:
            seconds = f"{(s.finished_at - s.started_at).total_seconds():.2f}"
        style = STEP_STYLE[s.status]
        table.add_row(
            escape(s.name), f"[{style}]{s.status}[/]", "" if s.total is None else str(s.total),
            str(s.dispatched), str(s.counts.get("succeeded", 0)),
            str(s.counts.get("failed", 0) + s.counts.get("cancelled", 0)), seconds,
            *([escape(s.error or "")] if errors else []),
        )  # fmt: skip
    return table
