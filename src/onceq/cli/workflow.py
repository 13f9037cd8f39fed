"""`onceq workflow run|show|cancel|list`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from onceq.cli.common import (
    AppOption,
    JsonFlag,
    RunId,
    UrlOption,
    console,
    err_console,
    errors,
    fail,
    parse_json,
    print_json,
    store_at,
    store_url,
)
from onceq.cli.progress import follow, steps_table
from onceq.store.urls import redact

workflow_cli = typer.Typer(
    help="Run and inspect workflows.", no_args_is_help=True, rich_markup_mode=None
)


@workflow_cli.command("run")
def run_workflow(
    app: AppOption,
    file: Annotated[Path, typer.Argument(help="The workflow's YAML file.")],
    input_json: Annotated[
        str, typer.Option("--input", help="The run's input, a JSON object.")
    ] = "{}",
    url: UrlOption = None,
    wait: Annotated[bool, typer.Option(help="Follow the run with live progress.")] = False,
    hint_after: Annotated[float, typer.Option(hidden=True, min=0)] = 5.0,
) -> None:
    """Check a workflow against the app and start a run; prints the run id."""
    from onceq.loader import import_app
    from onceq.workflow import Workflow

    data = parse_json(input_json, "--input")
    with errors():
        workflow = Workflow.load(file)
        the_app = import_app(app)
        the_app.use(store_url(url, the_app))
        run_id = the_app.run_workflow(workflow, data)
    if not wait:
        console.print(run_id)
        return
    console.print(f"run {run_id} started")

    def stalled(waited: float) -> None:
        err_console.print(
            f"[yellow]hint:[/] no job of run {run_id} has started after {waited:.0f}s: is a "
            f"worker serving this store? (onceq worker --app {escape(app)} --url "
            f"{escape(redact(the_app.url))})",
            highlight=False,
            soft_wrap=True,
        )

    with errors():
        run = follow(lambda: the_app.get_run(run_id), console, stalled=stalled,
                     stall_after=hint_after)  # fmt: skip
    console.print(steps_table(run, console=console))
    if run.error:
        console.print(f"[red]{escape(run.error)}[/]", highlight=False)
    raise typer.Exit(0 if run.status == "succeeded" else 1)


@workflow_cli.command("show")
def show(
    run_id: RunId,
    url: UrlOption = None,
    results: Annotated[bool, typer.Option(help="Include every step's results.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """A run's steps: done, running, pending, results and errors."""
    with store_at(url, create=False) as store:
        run = store.run_get(run_id)
        step_results = {s.name: store.run_results(run_id, s.name) for s in run.steps}
    if as_json:
        document = run.to_json()
        for step in document["steps"]:
            step["results"] = step_results[step["name"]]
        print_json(document)
        return
    console.print(steps_table(run, console=console))
    if run.error:
        console.print(f"[red]{escape(run.error)}[/]", highlight=False)
    if results:
        for name, values in step_results.items():
            console.print(f"[bold]{escape(name)}[/]: {escape(str(values))}", highlight=False)


@workflow_cli.command("cancel")
def cancel(run_id: RunId, url: UrlOption = None) -> None:
    """Cancel a run: pending jobs cancelled, running ones finish without advancing it."""
    with store_at(url, create=False) as store:
        before = store.run_cancel(run_id)
    if before != "running":
        fail(f"run {run_id} already ended: it is {before}", 1)
    console.print(f"run {run_id} cancelled")


@workflow_cli.command("list")
def list_runs(
    url: UrlOption = None,
    limit: Annotated[int, typer.Option(min=1, max=1_000_000)] = 20,
    as_json: JsonFlag = False,
) -> None:
    """Recent runs, newest first."""
    with store_at(url, create=False) as store:
        runs = store.run_list(limit=limit)
    if as_json:
        print_json([r.to_json() for r in runs])
        return
    for r in runs:
        console.print(
            f"{r.id}\t{r.name}\t{r.status}\t{r.created_at:%Y-%m-%d %H:%M:%S}\t{r.error or ''}"
        )
