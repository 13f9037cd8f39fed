"""Finding the user's App from a `module:attribute` reference (the CLI's --app)."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import TYPE_CHECKING

from onceq.errors import ConfigError

if TYPE_CHECKING:
    from onceq.app import App


def import_app(ref: str) -> App:
    """Import `package.module:attr` and return the App it names (cwd is importable)."""
    from onceq.app import App

    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"bad --app {ref!r}: expected module:attribute, e.g. myproject.tasks:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(f"cannot import {module_name!r} for --app: {exc}") from None
        raise ConfigError(f"--app module {module_name!r} failed to import: "
                          f"{_where(exc)}{type(exc).__name__}: {exc}") from None  # fmt: skip
    except Exception as exc:  # the user's module raised while being imported
        raise ConfigError(f"--app module {module_name!r} failed to import: "
                          f"{_where(exc)}{type(exc).__name__}: {exc}") from None  # fmt: skip
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise ConfigError(f"--app {ref!r} is not an onceq App (got {type(app).__name__})")
    return app


def _where(exc: BaseException) -> str:
    """`file:line: ` of the line that raised (a SyntaxError names its own)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}: "
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if "importlib" not in f.filename]
    return f"{user[-1].filename}:{user[-1].lineno}: " if user else ""
