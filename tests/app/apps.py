"""An app as a user writes it, for the tests of the CLI's URL rule, logging and
shutdown: its store URL is given to App(...) in the module (from ONCEQ_TEST_APP_URL,
which the test sets), not through ONCEQ_URL."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from onceq import App, current_job

app = App(os.environ.get("ONCEQ_TEST_APP_URL") or None)
log = logging.getLogger("tests.app.handlers")

if os.environ.get("ONCEQ_TEST_APP_LOGGING"):  # the app configures logging its own way
    logging.basicConfig(
        filename=os.environ["ONCEQ_TEST_APP_LOGGING"],
        level=logging.INFO,
        format="APPFMT %(levelname)s %(name)s %(message)s",
    )


@app.task
def greet(name: str) -> str:
    log.info("greeting %s", name)
    return f"hello {name}"


@app.task
def explode(why: str) -> None:
    raise RuntimeError(f"exploded: {why}")


@app.task
def hold(marker: str) -> str:
    """Writes `marker` once running, then waits until the file is removed (the test
    stops the worker meanwhile)."""
    path = Path(marker)
    path.write_text(str(current_job().job_id))
    while path.exists():
        time.sleep(0.02)
    return "released"
