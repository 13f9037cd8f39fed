"""Entry points of the processes the chaos tests start (`python -m tests.chaos.run …`).

    worker OPTIONS_JSON           a bare `app.worker(**options).run()`, as in a user's
                                  own process (no supervisor); logs to stderr
    enqueue COUNT IDS_FILE TAG    enqueues COUNT jobs one by one, appends every id that
                                  came back to IDS_FILE; exit 1 if any enqueue raised

The store URL comes from ONCEQ_URL, the ledger from ONCEQ_CHAOS_LEDGER.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

from onceq import logs
from tests.chaos.apps import app, short


def worker(options_json: str) -> None:
    options = json.loads(options_json)
    burst = options.pop("burst", False)
    logs.setup(options.pop("log_level", "INFO"))
    app.worker(**options).run(burst=burst)


def enqueue(count: int, ids_file: str, tag: str) -> int:
    """Enqueue `count` jobs; every tenth carries a key shared by all enqueuers."""
    errors = 0
    fd = os.open(ids_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for n in range(count):
            try:
                if n % 10 == 0:
                    job = short.configure(key=f"shared-{n}").enqueue(n=n)
                else:
                    job = short.enqueue(n=n)
            except Exception:
                errors += 1
                sys.stderr.write(f"enqueue {tag}/{n} raised:\n{traceback.format_exc()}\n")
                continue
            os.write(fd, f"{job.id} {tag} {n}\n".encode())
    finally:
        os.close(fd)
        app.close()
    return 1 if errors else 0


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "worker":
        worker(*args)
        return 0
    if command == "enqueue":
        return enqueue(int(args[0]), args[1], args[2])
    sys.stderr.write(f"unknown command {command!r}\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
