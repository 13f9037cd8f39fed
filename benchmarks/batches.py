"""Coordination efficiency of code-task batches in real git worktrees, the seed's three
scenarios (2 tasks on 2 workers, 4 on 3, 6 on 3, an agent that takes 2 s), side by side
on both backends; the same figures `onceq bench` reports, with more rounds.

    python benchmarks/batches.py [--rounds 3] [--seconds 2.0] [--backends sqlite,postgres]

efficiency = ceil(tasks / workers) * seconds / (last merge - submission), with worktree
creation, commits, verification and merges inside the clock (onceq.tools.batchbench).
PostgreSQL: ONCEQ_BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import os
import statistics

from onceq.store import open_store
from onceq.tools import batchbench
from onceq.tools.bench import isolated

PG_URL = os.environ.get("ONCEQ_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SCENARIOS = ((2, 2), (4, 3), (6, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        with isolated(backend, PG_URL) as url:
            store = open_store(url)
            try:
                for tasks, workers in SCENARIOS:
                    found = [batchbench.scenario(store, url, tasks, workers, args.seconds)[0]
                             for _ in range(args.rounds)]  # fmt: skip
                    print(f"{backend:9} {tasks} tasks / {workers} workers: efficiency median "
                          f"{statistics.median(found):.1f}% (rounds: "
                          f"{', '.join(f'{x:.1f}' for x in found)})", flush=True)  # fmt: skip
            finally:
                store.close()


if __name__ == "__main__":
    main()
