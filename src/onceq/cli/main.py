"""`onceq`: migrate, worker, enqueue, dashboard, and the sub-apps (jobs, workflows, tools)."""

from __future__ import annotations

from typing import Annotated

import typer

from onceq import logs
from onceq.cli import jobs, operate
from onceq.cli.batch import batch_cli
from onceq.cli.common import (
    AppOption,
    UrlOption,
    console,
    fail,
    guarded,
    parse_json,
    store_at,
    store_url,
)
from onceq.cli.dashboard import dashboard
from onceq.cli.demo import demo
from onceq.cli.tools import bench, diagnose
from onceq.cli.workflow import workflow_cli
from onceq.durations import MAX_SECONDS
from onceq.store import queries
from onceq.version import __version__

cli = typer.Typer(
    name="onceq",
    help="A durable task queue and workflow engine, backed by SQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # usage errors as plain lines, not boxes
)
LogLevel = Annotated[
    str, typer.Option(help="DEBUG, INFO, WARNING or ERROR (the app's own logging config wins).")
]
LogFormat = Annotated[str, typer.Option(help="text, or json: one JSON object per line.")]


def _version(value: bool) -> None:
    if value:
        console.print(f"onceq {__version__}", highlight=False)
        raise typer.Exit()


@cli.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """A durable task queue and workflow engine, backed by SQL."""


jobs.register(cli)
operate.register(cli)
cli.add_typer(workflow_cli, name="workflow")
cli.add_typer(batch_cli, name="batch")
cli.command()(demo)
cli.command()(diagnose)
cli.command()(bench)
cli.command()(dashboard)


@cli.command()
def migrate(url: UrlOption = None) -> None:
    """Create or upgrade the schema (a second run changes nothing)."""
    with store_at(url, check_schema=False) as store:
        applied = store.migrate()
        known = queries.latest(store.dialect)
    if applied:
        console.print(f"applied migration(s) {', '.join(map(str, applied))}; schema at v{known}")
    else:
        console.print(f"schema already at v{known}; nothing to do")


@cli.command()
@guarded
def worker(
    app: AppOption,
    url: UrlOption = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Jobs at once per process.")] = 8,
    processes: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="Queue to serve (repeatable).")
    ] = None,
    burst: Annotated[bool, typer.Option(help="Exit once no job of its queues is left.")] = False,
    lease: Annotated[
        float, typer.Option(min=0.1, max=MAX_SECONDS, help="Lease length, seconds.")
    ] = 30.0,
    grace: Annotated[
        float, typer.Option(min=0, max=MAX_SECONDS, help="Seconds to finish jobs on SIGTERM.")
    ] = 30.0,
    log_level: LogLevel = "INFO",
    log_format: LogFormat = "text",
) -> None:
    """Run workers. SIGTERM/SIGINT drains gracefully; a second signal stops at once (jobs
    still running then, or when --grace ends, are put back, their attempt given back)."""
    from onceq.loader import import_app
    from onceq.worker.supervisor import Supervisor

    problem = logs.check(log_level, log_format)
    if problem:
        fail(problem)
    the_app = import_app(app)  # fail here, with one line, rather than in every child
    logs.setup(log_level, log_format)  # after the import: the app's own config wins
    supervisor = Supervisor(
        app,
        url=store_url(url, the_app),
        processes=processes,
        burst=burst,
        log_level=log_level,
        log_format=log_format,
        worker_options={
            "concurrency": concurrency,
            "queues": queue or None,
            "lease": lease,
            "grace": grace,
        },
    )
    raise typer.Exit(supervisor.run())


@cli.command()
@guarded
def enqueue(
    app: AppOption,
    task: Annotated[str, typer.Argument(help="Task name, as registered.")],
    payload: Annotated[str, typer.Option("--json", help="Arguments as a JSON object.")] = "{}",
    url: UrlOption = None,
    key: Annotated[str | None, typer.Option(help="Idempotency key.")] = None,
    delay: Annotated[
        float, typer.Option(min=0, max=315_360_000, help="Seconds before it may run.")
    ] = 0.0,
    priority: Annotated[
        int | None, typer.Option(min=-(2**31), max=2**31 - 1, help="Higher runs first.")
    ] = None,
    queue: Annotated[str | None, typer.Option(help="Queue (default: the task's).")] = None,
) -> None:
    """Enqueue one job (validated against the task's signature); prints its id."""
    from onceq.loader import import_app

    args = parse_json(payload, "--json")
    if not isinstance(args, dict):
        from onceq.cli.common import fail

        fail("--json must be a JSON object of the task's arguments")
    the_app = import_app(app)
    the_app.use(store_url(url, the_app))
    options = {"key": key, "delay": delay, "queue": queue}
    if priority is not None:
        options["priority"] = priority
    try:
        job = the_app.enqueue(task, args, **{k: v for k, v in options.items() if v is not None})
    finally:
        the_app.close()
    console.print(job.id)


def main() -> None:
    """Entry point of the `onceq` script."""
    cli()
