"""An app with a small payload limit (1,000 bytes of JSON), for the limit's tests."""

from __future__ import annotations

from onceq import App

app = App(max_payload=1000)


@app.task(retries=2, retry_backoff=0)
def echo(text: str) -> str:
    return text


@app.task(retries=2, retry_backoff=0)
def grow(size: int) -> str:
    return "x" * size


@app.task(subprocess=True)
def grow_in_subprocess(size: int) -> str:
    return "x" * size
