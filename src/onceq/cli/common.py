"""What every command shares: the --url and --app options, errors, JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from onceq.errors import InvalidTransition, OnceqError
from onceq.store import Store, open_store
from onceq.store.urls import resolve

if TYPE_CHECKING:
    from onceq.app import App

console = Console()
err_console = Console(stderr=True)

UrlOption = Annotated[
    str | None,
    typer.Option("--url", envvar="ONCEQ_URL", help="Store URL (default sqlite:///onceq.db)."),
]
AppOption = Annotated[
    str, typer.Option("--app", help="Your App, as module:attribute (e.g. myproject.tasks:app).")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
MAX_ID = 2**63 - 1  # ids are 64-bit: anything larger is a usage error, not an overflow
JobId = Annotated[int, typer.Argument(min=1, max=MAX_ID, help="Job id.")]
RunId = Annotated[int, typer.Argument(min=1, max=MAX_ID, help="Run id.")]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one error line and exit (2: bad usage or input; 1: refused or failed)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def errors() -> Iterator[None]:
    """Turn onceq's own errors into one line and an exit code."""
    try:
        yield
    except InvalidTransition as exc:
        fail(str(exc), 1)
    except OnceqError as exc:
        fail(str(exc), 2)


def store_url(url: str | None, app: App | None = None) -> str:
    """The one rule of every command: --url, else ONCEQ_URL (typer reads it into `url`),
    else the URL the --app's App(...) was given, else sqlite:///onceq.db."""
    return url or (app.configured_url if app is not None else None) or resolve(None)


@contextmanager
def store_at(url: str | None, *, check_schema: bool = True, create: bool = True) -> Iterator[Store]:
    """An open store for one command; `create=False` for the commands that only look or
    act on what exists, which then say "no store at …" instead of creating one."""
    with errors():
        store = open_store(store_url(url), check_schema=check_schema, create=create)
    try:
        with errors():
            yield store
    finally:
        store.close()


def print_json(document: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def parse_json(text: str, what: str) -> Any:
    """JSON from the command line — inline, `@FILE`, or `-` for standard input (large
    payloads do not fit in a shell's argument) — or a one-line error naming where it
    broke."""
    source = what
    if text == "-":
        text, source = sys.stdin.read(), f"{what} (standard input)"
    elif text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"{what}: cannot read {str(path)!r}: {exc.strerror}")
        except UnicodeDecodeError:
            fail(f"{what}: {str(path)!r} is not UTF-8 text")
        source = f"{what} ({path})"
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{source} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: run a command under errors()."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with errors():
            return fn(*args, **kwargs)

    return wrapper
