"""`pgq run apps.pgqueuer_app:create_pgqueuer` without its CLI.

pgqueuer 1.6.0's `pgq run` dies at start-up next to typer 0.29 (its --log-level parser
hands a str where an enum is expected: AttributeError: 'str' object has no attribute
'name'), so this calls `pgqueuer.run()`, documented as what `pgq run` does, on uvloop
as the CLI does.

    python -m apps.pgqueuer_worker --batch-size 10 [--drain]
"""

from __future__ import annotations

import argparse
import asyncio

import pgqueuer
from pgqueuer.core import logconfig
from pgqueuer.types import QueueExecutionMode

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency of pgqueuer on Linux
    uvloop = None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--drain", action="store_true")
    args = parser.parse_args()
    logconfig.setup_fancy_logger(logconfig.LogLevel.WARNING)
    mode = QueueExecutionMode.drain if args.drain else QueueExecutionMode.continuous
    coro = pgqueuer.run("apps.pgqueuer_app:create_pgqueuer", batch_size=args.batch_size, mode=mode)
    if uvloop is not None:
        uvloop.run(coro)
    else:
        asyncio.run(coro)


if __name__ == "__main__":
    main()
