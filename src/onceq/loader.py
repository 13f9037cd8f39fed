"""Finding the user's App from a `module:attribute` reference (the CLI's --app)."""

from __future__ import annotations

import importlib
import os
import sys
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
        raise ConfigError(f"cannot import {module_name!r} for --app: {exc}") from exc
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise ConfigError(f"--app {ref!r} is not an onceq App (got {type(app).__name__})")
    return app
