"""Tasks for the dashboard tests: some succeed, some fail, one has a hostile name."""

from __future__ import annotations

from onceq import App, current_job

app = App()

HOSTILE_TASK = "tests.<script>alert('task')</script>"
HOSTILE_ERROR = "ValueError: <script>alert('error')</script> & <b>bold</b>"


@app.task
def ok(n: int) -> dict[str, int]:
    return {"n": n}


@app.task(retries=2, retry_backoff=0)
def sturdy(n: int) -> int:
    """Succeeds, with attempts to spare (a lost lease costs one)."""
    return n


@app.task
def boom(n: int) -> None:
    raise ValueError(HOSTILE_ERROR)


@app.task(retries=2, retry_backoff=0)
def flaky(n: int) -> int:
    """Fails its first attempt, succeeds on the retry."""
    if current_job().attempt == 1:
        raise ConnectionError(f"flaky {n}: first attempt")
    return n


@app.task
def total(values: list[dict[str, int]]) -> int:
    return sum(v["n"] for v in values)


@app.task(name=HOSTILE_TASK)
def hostile(payload: dict[str, str]) -> str:
    raise RuntimeError(HOSTILE_ERROR)
