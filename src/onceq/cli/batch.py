"""`onceq batch run|show|list|clean`: code-task batches (onceq.batch)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from onceq.cli.common import JsonFlag, UrlOption, console, errors, fail, print_json, store_at
from onceq.models import BatchRecord, BatchTaskRecord

batch_cli = typer.Typer(
    help="Code-task batches: parallel changes in git worktrees, merged once.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
FileArg = Annotated[Path, typer.Argument(help="The batch's YAML file.")]
STYLE = {"merged": "green", "failed": "red", "approved": "cyan", "fixing": "yellow",
         "pending": "dim"}  # fmt: skip


@batch_cli.command("run")
def run_batch(
    file: FileArg,
    url: UrlOption = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="Tasks at once (default: the file's).")
    ] = None,
) -> None:
    """Run a batch with its own workers, live; again with the same name resumes it.
    Exit 0 when every task is merged, 1 when any failed."""
    from onceq import batch

    with errors():
        spec = batch.load(file)
        batch.preflight(spec, file)  # before any store is opened or created
    with store_at(url) as store, Live(console=console, auto_refresh=False) as live:

        def show(record: BatchRecord) -> None:
            live.update(tasks_table(record), refresh=True)

        record = batch.run(file, store, workers=workers, progress=show)
    console.line()
    merged = sum(t.status == "merged" for t in record.tasks)
    console.print(f"batch {record.name}: {merged} of {len(record.tasks)} task(s) merged "
                  f"into {record.base}")  # fmt: skip
    for t in record.tasks:
        if t.status == "failed":
            console.print(f"[red]task {escape(t.number)} failed: {escape(t.error or '')}[/]",
                          highlight=False)  # fmt: skip
    raise typer.Exit(0 if merged == len(record.tasks) else 1)


@batch_cli.command("show")
def show(
    name: Annotated[str, typer.Argument(help="The batch's name.")],
    url: UrlOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Each task's status, rounds, branch, worktree, times, and why it failed."""
    with store_at(url, create=False) as store:
        record = store.batch_get(name)
    if record is None:
        fail(f"no batch named {name!r} in this store")
    if as_json:
        print_json(to_json(record))
        return
    console.print(tasks_table(record))


@batch_cli.command("list")
def list_batches(url: UrlOption = None, as_json: JsonFlag = False) -> None:
    """Every batch and how many of its tasks are in each status."""
    with store_at(url, create=False) as store:
        found = store.batch_list()
    if as_json:
        print_json([{"name": r.name, "repo": r.repo, "base": r.base,
                     "status": status_of(r, counts), "created_at": r.created_at.isoformat(),
                     "tasks": counts} for r, counts in found])  # fmt: skip
        return
    for r, counts in found:
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        console.print(f"{escape(r.name)}\t{status_of(r, counts)}\t{escape(r.repo)}\t{summary}",
                      highlight=False)  # fmt: skip


@batch_cli.command("clean")
def clean(
    file: FileArg,
    url: UrlOption = None,
    force: Annotated[bool, typer.Option(help="Even while its run is still going.")] = False,
) -> None:
    """Remove a batch's worktrees and branches, prune, and forget the batch."""
    from onceq import batch

    with store_at(url, create=False) as store, errors():
        freed, branches = batch.clean(file, store, force=force)
    console.print(f"removed the worktrees ({freed / 1e6:.1f} MB freed) and {branches} branch(es)")


def status_of(record: BatchRecord, statuses: Iterable[str] | None = None) -> str:
    """The batch's status: its run's, in words a batch user reads. Without a run (none
    was needed, or retention deleted the one that ended) it is its tasks' (`statuses`,
    else the record's): merged only if every one of them is."""
    if record.run_status is not None:
        return "merged" if record.run_status == "succeeded" else record.run_status
    found = [t.status for t in record.tasks] if statuses is None else list(statuses)
    return "merged" if all(s == "merged" for s in found) else "failed"


def to_json(record: BatchRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "status": status_of(record),
        "repo": record.repo,
        "base": record.base,
        "run_id": record.run_id,
        "tasks": [
            {
                "number": t.number,
                "title": t.title,
                "batch": t.batch_no,
                "status": t.status,
                "rounds": t.rounds,
                "branch": t.branch,
                "worktree": t.worktree,
                "started_at": _iso(t.started_at),
                "merged_at": _iso(t.merged_at),
                "merged_as": t.merged_as,
                "verified": t.verified,
                "error": t.error,
            }
            for t in record.tasks
        ],
    }


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def tasks_table(record: BatchRecord) -> Table:
    table = Table(title=f"batch {escape(record.name)} → {escape(record.base)} "
                        f"({status_of(record)})")  # fmt: skip
    for column in ("task", "status", "round", "worktree", "elapsed", "verification"):
        table.add_column(column, overflow="fold")
    now = datetime.now(UTC)
    for t in record.tasks:
        style = STYLE.get(t.status, "cyan")
        table.add_row(
            escape(f"{t.number} {t.title}"),
            f"[{style}]{t.status}[/]",
            str(t.rounds),
            escape(Path(t.worktree).name if t.worktree else "-"),
            _elapsed(t, now),
            escape((t.error if t.status == "failed" else t.verified) or ""),
        )
    return table


def _elapsed(t: BatchTaskRecord, now: datetime) -> str:
    if t.started_at is None:
        return "-"
    end = t.merged_at or (t.updated_at if t.status == "failed" else now)
    return f"{(end - t.started_at).total_seconds():.1f}s"
