"""The `onceq` command."""

from onceq.cli.main import cli, main

__all__ = ["cli", "main"]
