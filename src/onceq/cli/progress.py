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

from onceq.cli.tables import fitted
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


def follow(
    get_run: Callable[[], Run],
    console: Console,
    every: float = 0.1,
    *,
    stalled: Callable[[float], None] | None = None,
    stall_after: float = 5.0,
) -> Run:
    """Show the run's steps as progress bars until it ends; the final Run. If no job of
    the run has started after `stall_after` seconds (no worker serves its store?),
    `stalled(seconds)` is called once."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    )
    bars: dict[str, TaskID] = {}
    began = time.monotonic()
    with progress:
        while True:
            run = get_run()
            waited = time.monotonic() - began
            if stalled is not None and waited >= stall_after and not _started(run):
                stalled(waited)
                stalled = None
            for step in run.steps:
                if step.name not in bars:
                    bars[step.name] = progress.add_task(escape(step.name), total=None, status="")
                _update(progress, bars[step.name], step)
            if run.status != "running":
                return run
            time.sleep(every)


def _started(run: Run) -> bool:
    """Whether any job of the run has been claimed (is running or finished)."""
    return any(n for s in run.steps for status, n in s.counts.items() if status != "pending")


def _update(progress: Progress, bar: TaskID, step: StepState) -> None:
    done = sum(step.counts.get(s, 0) for s in FINAL_JOBS)
    style = STEP_STYLE[step.status]
    total = step.total if step.status != "waiting" else None
    if step.status in ("skipped", "cancelled") and not step.total:
        total = 0
    progress.update(bar, total=total, completed=done, status=f"[{style}]{step.status}[/]")
    if step.status != "running" and step.status != "waiting":
        progress.stop_task(bar)


def steps_table(run: Run, title: str | None = None, console: Console | None = None) -> Table:
    """A run's steps: status, jobs dispatched against items, time taken, error."""
    title = title or f"run {run.id} ({escape(run.name)}): {run.status}"
    errors = any(s.error for s in run.steps)
    cells = []
    for s in run.steps:
        seconds = ""
        if s.started_at and s.finished_at:
            seconds = f"{(s.finished_at - s.started_at).total_seconds():.2f}"
        cells.append([
            escape(s.name), f"[{STEP_STYLE[s.status]}]{s.status}[/]",
            "" if s.total is None else str(s.total), str(s.dispatched),
            str(s.counts.get("succeeded", 0)),
            str(s.counts.get("failed", 0) + s.counts.get("cancelled", 0)), seconds,
            *([escape(s.error or "")] if errors else []),
        ])  # fmt: skip
    headers = ["step", "status", "items", "dispatched", "done", "failed", "seconds"]
    headers += ["error"] if errors else []
    return fitted(console or Console(), title, headers, cells, {"step", "error"})
