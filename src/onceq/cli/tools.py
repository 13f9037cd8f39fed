"""`onceq diagnose` and `onceq bench`."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from onceq.cli.common import JsonFlag, UrlOption, console, err_console, errors, fail, print_json
from onceq.store.urls import parse_url, resolve

DEFAULT_BENCH_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def diagnose(
    url: UrlOption = None,
    tasks: Annotated[int, typer.Option(min=1, help="Tasks in the large scenario.")] = 2000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 4,
    chaos: Annotated[bool, typer.Option(help="Also run it while killing workers.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds a scenario may take.")] = 300.0,
    as_json: JsonFlag = False,
) -> None:
    """Prove exactly-once on the configured store: exit 1 on any duplicate or missing."""
    from onceq.store import open_store
    from onceq.tools.diagnose import Diagnosis, Report, scenarios

    target = resolve(url)
    reports: list[Report] = []
    with errors():
        store = open_store(target)
        try:
            diagnosis = Diagnosis(store, target, timeout=timeout)
            for scenario in scenarios(tasks, workers, chaos):
                with err_console.status("running scenarios…"):
                    report = scenario(diagnosis)
                reports.append(report)
                if not as_json:
                    mark = "[green]ok[/]" if report.ok else "[red]FAILED[/]"
                    err_console.print(f"{mark} {report.scenario}")
        finally:
            store.close()
    ok = all(r.ok for r in reports)
    if as_json:
        print_json({"store": parse_url(target).dialect, "ok": ok,
                    "scenarios": [r.to_json() for r in reports]})  # fmt: skip
    else:
        table = Table(title=f"onceq diagnose on {parse_url(target).dialect}", title_justify="left")
        for column in ("scenario", "tasks", "workers", "executions", "duplicates", "missing",
                       "re-runs after crash", "kills", "seconds", "efficiency"):  # fmt: skip
            table.add_column(column)
        for r in reports:
            eff = "" if r.efficiency is None else f"{100 * r.efficiency:.1f}%"
            style = "green" if r.ok else "red"
            table.add_row(
                r.scenario, str(r.tasks), str(r.workers), str(r.executions),
                f"[{style}]{r.duplicates}[/]", f"[{style}]{r.missing}[/]", str(r.crash_reruns),
                str(r.kills), f"{r.seconds:.2f}", eff,
            )  # fmt: skip
        console.print(table)
        for r in reports:
            for note in r.notes[:10]:
                console.print(f"[red]{escape(r.scenario)}:[/] {escape(note)}", highlight=False)
        console.print("[green]no duplicate, no missing execution[/]" if ok
                      else "[red]exactly-once violated[/]")  # fmt: skip
    raise typer.Exit(0 if ok else 1)


def bench(
    url: UrlOption = None,
    backend: Annotated[str, typer.Option(help="sqlite, postgres or all.")] = "all",
    postgres_url: Annotated[
        str | None, typer.Option(help="PostgreSQL database for the postgres runs.")
    ] = None,
    quick: Annotated[bool, typer.Option(help="Small sizes: a smoke test.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Throughput, latency and coordination efficiency, per backend, as a table."""
    from onceq.tools.bench import Bench, Figure, Sizes, isolated

    if backend not in ("sqlite", "postgres", "all"):
        fail(f"unknown backend {backend!r}: expected sqlite, postgres or all")
    configured = resolve(url)
    pg_url = postgres_url
    if pg_url is None and parse_url(configured).dialect == "postgres":
        pg_url = configured
    pg_url = pg_url or os.environ.get("ONCEQ_BENCH_POSTGRES_URL") or DEFAULT_BENCH_POSTGRES
    backends = ["sqlite", "postgres"] if backend == "all" else [backend]
    sizes = Sizes.quick() if quick else Sizes()
    figures: list[Figure] = []
    skipped: dict[str, str] = {}
    for name in backends:
        with errors():
            try:
                with isolated(name, pg_url) as target:
                    run = Bench(name, target, sizes, lambda m: err_console.print(f"[dim]{m}[/]"))
                    try:
                        figures += run.all()
                    finally:
                        run.close()
            except Exception as exc:
                from onceq.errors import ConfigError

                if isinstance(exc, ConfigError) and backend == "all":
                    skipped[name] = str(exc)
                    err_console.print(f"[yellow]skipping {name}:[/] {exc}")
                    continue
                raise
    if as_json:
        print_json({"figures": [f.to_json() for f in figures], "skipped": skipped})
        return
    table = Table(title="onceq bench", title_justify="left")
    for column in ("backend", "scenario", "value", "unit", "detail"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for f in figures:
        table.add_row(f.backend, f.scenario, f"{f.value:,.1f}", f.unit, f.detail)
    console.print(table)
