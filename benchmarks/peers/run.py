"""onceq against the queues a user would pick instead: the same workloads, in one go.

    python benchmarks/peers/run.py [--only huey,onceq-sqlite,...] [--jobs 20000]
                                   [--repeat 2] [--quick] [--verbose] [--json]

Systems: onceq-sqlite, onceq-postgres, huey, procrastinate, pgqueuer, celery, rq.
A system whose package or service is missing is skipped with a one-line reason.
Install the peers with `pip install -e '.[peers]'`. Services: PEERS_PG_URL (default
postgresql://postgres@127.0.0.1:5432/test; each run gets a fresh database, dropped
afterwards) and PEERS_REDIS_URL (default redis://127.0.0.1:6379/5: flushed before and
after each run, so it must be a db of its own). See README.md for every setting.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import common
import report
import workloads
from rich.console import Console
from rich.markup import escape
from sys_celery import Celery
from sys_huey import Huey
from sys_onceq import Onceq
from sys_pgqueuer import Pgqueuer
from sys_procrastinate import Procrastinate
from sys_rq import Rq

os.environ.setdefault("PEERS_REDIS_URL", common.REDIS_URL)  # apps.celery_app reads it

# Interleaved so that a noisy minute on a shared machine hits several systems, not one.
RUNNERS: list[common.Runner] = [
    Onceq("sqlite"),
    Huey(),
    Onceq("postgres"),
    Procrastinate(),
    Pgqueuer(),
    Celery(),
    Rq(),
]


def main() -> None:
    # SIGTERM unwinds like an error, so every run's cleanup (workers, databases) happens
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    keys = [r.key for r in RUNNERS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help=f"comma-separated subset of: {','.join(keys)}")
    parser.add_argument("--jobs", type=int, default=20_000, help="no-op jobs per throughput run")
    parser.add_argument("--repeat", type=int, default=2, help="throughput sweeps (default 2)")
    parser.add_argument("--quick", action="store_true", help="first (default) setting only")
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--latency-interval-ms", type=float, default=10.0)
    parser.add_argument(
        "--workloads", default="throughput,latency", help="throughput,latency (default both)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per throughput run, s")
    parser.add_argument("--keep", action="store_true", help="keep temp dirs (worker logs)")
    parser.add_argument("--verbose", action="store_true", help="also print every run")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    parser.add_argument("--from-json", metavar="FILE", help="only print the table of a saved run")
    args = parser.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            show(json.load(f), args.verbose)
        return

    wanted = keys if not args.only else [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = set(wanted) - set(keys)
    if unknown:
        parser.error(f"unknown system(s) {', '.join(sorted(unknown))}; known: {', '.join(keys)}")
    chosen = [r for r in RUNNERS if r.key in wanted]
    kinds = {w.strip() for w in args.workloads.split(",")}

    log = Console(stderr=True)
    doc: dict[str, Any] = {"meta": meta(args), "systems": {}}
    for runner in chosen:
        reason = runner.unavailable()
        doc["systems"][runner.key] = {
            "title": runner.title,
            "backend": runner.backend,
            "skipped": reason,
            "throughput": [],
            "best": [],
            "latency": [],
        }
        if reason:
            log.print(f"[yellow]skip[/] {runner.key}: {reason}")
    live = [r for r in chosen if not doc["systems"][r.key]["skipped"]]

    if "throughput" in kinds:
        for k in range(args.repeat):
            for runner in live:
                system = doc["systems"][runner.key]
                variants = runner.throughput_variants()[: 1 if args.quick else None]
                # a variant marked "once" is too slow to be the best: the first sweep only
                variants = [v for v in variants if k == 0 or not v.options.get("once")]
                runs = []
                for variant in variants:
                    step = f"[{k + 1}/{args.repeat}] {runner.key} throughput [{variant.label}]"
                    log.print(escape(step + "…"))
                    try:
                        run = workloads.throughput(
                            runner, variant, args.jobs, timeout=args.timeout, keep=args.keep
                        )
                    except Exception as exc:  # one system's failure must not end the run
                        run = _crashed(variant, exc)
                    log.print(f"    {_brief(run)}")
                    runs.append(run)
                system["throughput"].append(runs)
                system["best"].append(report.best(runs))

    if "latency" in kinds:
        for runner in live:
            system = doc["systems"][runner.key]
            for variant in runner.latency_variants():
                log.print(escape(f"{runner.key} latency [{variant.label}]…"))
                try:
                    run = workloads.latency(
                        runner,
                        variant,
                        jobs=args.latency_jobs,
                        interval=args.latency_interval_ms / 1000,
                        keep=args.keep,
                    )
                except Exception as exc:
                    run = _crashed(variant, exc)
                log.print(f"    {_brief(run)}")
                system["latency"].append(run)

    doc["meta"]["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    doc["meta"]["loadavg_end"] = os.getloadavg()
    doc["comparisons"] = report.comparisons(doc)
    if args.json:
        sys.stdout.write(report.dump_json(doc) + "\n")
        return
    show(doc, args.verbose)


def show(doc: dict[str, Any], verbose: bool) -> None:
    out = Console(width=None if sys.stdout.isatty() else 200)
    if verbose:
        out.print(report.sweep_table(doc))
    report.print_table(doc, out)


def _crashed(variant: common.Variant, exc: Exception) -> dict[str, Any]:
    return {
        "variant": variant.label,
        "options": variant.options,
        "status": f"harness error: {type(exc).__name__}: {exc}",
    }


def _brief(run: dict[str, Any]) -> str:
    if run.get("status") != "ok":
        tail = run.get("log_tail", "")
        return f"[red]{escape(str(run.get('status')))}[/] {escape(tail[-300:])}"
    if "jobs_per_s" in run:
        return (
            f"{run['jobs_per_s']:,.0f} jobs/s (steady {run.get('steady_per_s') or 0:,.0f}, "
            f"first job after {run['first_job_s']:.2f}s), enqueue {run['enqueue_per_s']:,.0f}/s, "
            f"dup {run['duplicates']}, missing {run['missing']}"
        )
    return (
        f"p50 {run['p50_ms']:.1f} ms, p95 {run['p95_ms']:.1f}, p99 {run['p99_ms']:.1f}, "
        f"max {run['max_ms']:.1f}; dup {run['duplicates']}, missing {run['missing']}"
    )


def meta(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "jobs": args.jobs,
        "repeats": args.repeat,
        "quick": args.quick,
        "latency_jobs": args.latency_jobs,
        "latency_interval_ms": args.latency_interval_ms,
        "latency_idle_s": 2.0,
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "postgres": _server_version_pg(),
        "redis": _server_version_redis(),
        "versions": common.versions(),
        "pg_url": common.PG_URL,
        "redis_url": common.REDIS_URL,
        "clock": time.get_clock_info("time").implementation,
        "onceq_path": _onceq_path(),
        "onceq_src_env": common.ONCEQ_SRC,
        "work_tree_commit": _git("rev-parse", "--short", "HEAD"),
        "work_tree_src_dirty": bool(_git("status", "--porcelain", "--", ":/src")),
    }


def _onceq_path() -> str | None:
    try:
        import onceq
    except Exception as exc:  # a work tree caught mid-edit
        return f"cannot import onceq: {exc}"
    return os.path.dirname(onceq.__file__)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=common.PEERS_DIR, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _server_version_pg() -> str | None:
    try:
        import psycopg

        with psycopg.connect(common.PG_URL, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else None
    except Exception:
        return None


def _server_version_redis() -> str | None:
    try:
        import redis

        return str(redis.Redis.from_url(common.REDIS_URL, socket_timeout=3).info()["redis_version"])
    except Exception:
        return None


if __name__ == "__main__":
    main()
