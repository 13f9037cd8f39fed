"""Tasks of the workflow-argument tests (tests/app/test_workflow_args.py)."""

from __future__ import annotations

from onceq import App

app = App()


@app.task
def fetch(url: str) -> str:
    return f"<html>{url}</html>"


@app.task
def count(pages: list[str], minimum: int) -> int:
    return max(len(pages), minimum)


@app.task
def size() -> int:
    return 3


@app.task
def label(text: str) -> str:
    return text.upper()
