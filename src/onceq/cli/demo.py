"""`onceq demo`: the README's first command. A fan-out/fan-in workflow on the embedded
SQLite, run by two worker processes, with live progress and a closing proof."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.panel import Panel

from onceq.cli.common import console, errors
from onceq.cli.progress import follow, steps_table


def demo(
    pages: Annotated[int, typer.Option(min=1, max=500, help="Items in the fan-out.")] = 36,
    keep: Annotated[bool, typer.Option(help="Keep the demo's database afterwards.")] = False,
) -> None:
    """Run a fan-out/fan-in workflow on a fresh SQLite file with 2 worker processes."""
    from onceq.examples import demo as example
    from onceq.workflow import Workflow

    folder = Path(tempfile.mkdtemp(prefix="onceq-demo-"))
    url = f"sqlite:///{folder}/demo.db"
    text = resources.files("onceq.examples").joinpath("demo.yaml").read_text()
    console.print(Panel.fit(
        f"[bold]onceq demo[/]: workflow [cyan]crawl[/] on {url}\n"
        f"fetch_index → fetch_page x {pages} (3 at a time) + fetch_sitemap → validate (a join)\n"
        "2 worker processes; every step must be dispatched exactly once.",
    ))  # fmt: skip
    with errors():
        example.app.use(url)
        run_id = example.app.run_workflow(
            Workflow.from_yaml(text, "demo.yaml"), {"site": "https://example.org", "pages": pages}
        )
    log = open(folder / "workers.log", "wb")  # noqa: SIM115 - the workers write to it
    workers = subprocess.Popen(
        [sys.executable, "-m", "onceq", "worker", "--app", "onceq.examples.demo:app",
         "--processes", "2", "--concurrency", "4", "--log-level", "WARNING"],
        env={**os.environ, "ONCEQ_URL": url}, stdout=log, stderr=log,
    )  # fmt: skip
    started = time.monotonic()
    try:
        with errors():
            run = follow(lambda: example.app.get_run(run_id), console)
    finally:
        _stop(workers)
        log.close()
    elapsed = time.monotonic() - started
    console.print(steps_table(run, f"run {run.id}: {run.status} in {elapsed:.1f}s", console))
    _proof(example.app, run_id)
    if keep:
        console.print(f"database kept: {url} (try: onceq jobs --url {url})")
    else:
        example.app.close()
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()
    raise typer.Exit(0 if run.status == "succeeded" else 1)


def _stop(workers: subprocess.Popen[bytes]) -> None:
    """Drain the workers; a second signal, then a kill, if they do not stop in time."""
    for _ in range(2):
        workers.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            workers.wait(30)
            return
    workers.kill()
    workers.wait()


def _proof(app: object, run_id: int) -> None:
    """Count dispatches from the job rows themselves: one per (step, item)."""
    from onceq.app import App

    assert isinstance(app, App)
    jobs = app.store.job_list(run_id=run_id, limit=100_000)
    keys = [(j.step, j.item) for j in jobs]
    retried = sum(1 for j in jobs if j.attempts > 1)
    duplicates = len(keys) - len(set(keys))
    validate = app.store.run_results(run_id, "validate")
    console.print(
        f"{len(jobs)} jobs for {len(set(keys))} (step, item) pairs: "
        f"[{'green' if not duplicates else 'red'}]{duplicates} duplicate dispatches[/]; "
        f"{retried} job(s) retried after a failure (same job, same dispatch)."
    )
    if validate:
        console.print(f"validate ran once and saw: {validate[0]}", highlight=False)
