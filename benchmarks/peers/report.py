"""The one table (rich) and the one JSON document."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Each peer and the onceq backend(s) it is compared with.
PAIRS: list[tuple[str, list[str]]] = [
    ("huey", ["onceq-sqlite"]),
    ("procrastinate", ["onceq-postgres"]),
    ("pgqueuer", ["onceq-postgres"]),
    ("celery", ["onceq-postgres", "onceq-sqlite"]),
    ("rq", ["onceq-postgres", "onceq-sqlite"]),
]


def best(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The fastest complete run of one repeat of a throughput sweep."""
    ok = [r for r in runs if r.get("jobs_per_s")]
    return max(ok, key=lambda r: r["jobs_per_s"]) if ok else None


def comparisons(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (peer, onceq backend, metric) figure pair, with onceq ÷ peer."""
    systems = doc["systems"]
    rows: list[dict[str, Any]] = []
    for peer, onceqs in PAIRS:
        p = systems.get(peer)
        if not p or p.get("skipped"):
            continue
        for oq in onceqs:
            o = systems.get(oq)
            if not o or o.get("skipped"):
                continue
            pair = {"peer": peer, "onceq": oq}
            repeats = max(len(p.get("best", [])), len(o.get("best", [])))
            for k in range(repeats):
                pb = _at(p.get("best", []), k)
                ob = _at(o.get("best", []), k)
                rows.append(
                    {
                        **pair,
                        "metric": f"throughput #{k + 1}",
                        "unit": "jobs/s",
                        "better": "higher",
                        "peer_value": pb and pb["jobs_per_s"],
                        "peer_setting": pb and pb["variant"],
                        "peer_steady": pb and pb.get("steady_per_s"),
                        "onceq_value": ob and ob["jobs_per_s"],
                        "onceq_setting": ob and ob["variant"],
                        "onceq_steady": ob and ob.get("steady_per_s"),
                    }
                )
            pl = _at(p.get("latency", []), 0)
            ol = _at(o.get("latency", []), 0)
            for q in ("p50", "p95", "p99"):
                rows.append(
                    {
                        **pair,
                        "metric": f"latency {q}",
                        "unit": "ms",
                        "better": "lower",
                        "peer_value": _ok(pl, f"{q}_ms"),
                        "peer_setting": pl and pl["variant"],
                        "onceq_value": _ok(ol, f"{q}_ms"),
                        "onceq_setting": ol and ol["variant"],
                    }
                )
            for extra in p.get("latency", [])[1:]:
                rows.append(
                    {
                        **pair,
                        "metric": "latency p50/p95/p99",
                        "unit": "ms",
                        "better": "lower",
                        "peer_value": _ok(extra, "p50_ms"),
                        "peer_detail": _triple(extra),
                        "peer_setting": extra["variant"],
                        "onceq_value": _ok(ol, "p50_ms"),
                        "onceq_detail": _triple(ol),
                        "onceq_setting": ol and ol["variant"],
                    }
                )
            rows.append(
                {
                    **pair,
                    "metric": "duplicates / missing",
                    "unit": "jobs",
                    "better": "lower",
                    "peer_value": _dups(p),
                    "onceq_value": _dups(o),
                }
            )
    for row in rows:
        pv, ov = row.get("peer_value"), row.get("onceq_value")
        if isinstance(pv, int | float) and isinstance(ov, int | float) and pv > 0:
            row["ratio"] = round(ov / pv, 3)
        else:
            row["ratio"] = None
    return rows


def _at(items: list[Any], k: int) -> Any:
    return items[k] if k < len(items) else None


def _ok(run: dict[str, Any] | None, key: str) -> float | None:
    if not run or run.get("status") != "ok":
        return None
    value = run.get(key)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _triple(run: dict[str, Any] | None) -> str | None:
    if not run or run.get("status") != "ok":
        return None
    return f"{run['p50_ms']:.1f} / {run['p95_ms']:.1f} / {run['p99_ms']:.1f}"


def _dups(system: dict[str, Any]) -> str | None:
    runs = [r for repeat in system.get("throughput", []) for r in repeat]
    if not runs:
        return None
    dups = sum(r.get("duplicates", 0) for r in runs)
    missing = sum(r.get("missing", 0) for r in runs if r.get("status") == "ok")
    return f"{dups} / {missing} in {len(runs)} runs"


def _figure(row: dict[str, Any], side: str) -> str:
    value = row.get(f"{side}_value")
    if value is None:
        return "[dim]n/a[/]"
    if isinstance(value, str):
        return value
    setting = row.get(f"{side}_setting")
    if row.get(f"{side}_detail"):
        text = row[f"{side}_detail"]
    elif row["unit"] == "jobs/s":
        text = f"{value:,.0f}"
        steady = row.get(f"{side}_steady")
        if steady:
            text += f" [dim](steady {steady:,.0f})[/]"
    else:
        text = f"{value:,.1f}"
    if setting and (row["unit"] == "jobs/s" or row["metric"] == "latency p50/p95/p99"):
        text += f"\n[dim]{escape(setting)}[/]"
    return text


def _ratio(row: dict[str, Any]) -> str:
    ratio = row.get("ratio")
    if ratio is None:
        return "—"
    good = ratio >= 1 if row["better"] == "higher" else ratio <= 1
    colour = "green" if good else "red"
    return f"[{colour}]{ratio:.2f}x[/]"


NAMES = {
    "huey": "huey (SqliteHuey)",
    "procrastinate": "procrastinate (PG)",
    "pgqueuer": "pgqueuer (PG)",
    "celery": "Celery (Redis)",
    "rq": "RQ (Redis)",
    "onceq-sqlite": "onceq SQLite",
    "onceq-postgres": "onceq PostgreSQL",
}


def table(doc: dict[str, Any]) -> Table:
    meta = doc["meta"]
    t = Table(
        title=(
            f"onceq against the queues a user would pick instead — "
            f"{meta['jobs']:,} no-op jobs on 2 worker processes; "
            f"latency: {meta['latency_jobs']} jobs {meta['latency_interval_ms']:g} ms apart, "
            "1 idle worker"
        ),
        caption=(
            "throughput: jobs/s from worker start to the last job's start (steady: first job "
            "to last), best setting of the sweep, per repeat. ratio = onceq ÷ peer; "
            "↑ higher is better, ↓ lower is better (green: onceq better)."
        ),
        show_lines=False,
    )
    t.add_column("peer")
    t.add_column("metric")
    t.add_column("peer figure", justify="right")
    t.add_column("onceq figure", justify="right")
    t.add_column("onceq ÷ peer", justify="right")
    last = None
    for row in doc["comparisons"]:
        pair = (row["peer"], row["onceq"])
        if pair != last:
            if last is not None:
                t.add_section()
            last = pair
            first = f"[bold]{NAMES[row['peer']]}[/]\nvs {NAMES[row['onceq']]}"
        else:
            first = ""
        arrow = "↑" if row["better"] == "higher" else "↓"
        metric = f"{row['metric']} {arrow}"
        if row["unit"] != "jobs":
            metric += f" [dim]{row['unit']}[/]"
        t.add_row(first, metric, _figure(row, "peer"), _figure(row, "onceq"), _ratio(row))
    return t


def print_table(doc: dict[str, Any], console: Console) -> None:
    console.print(table(doc))
    for key, system in doc["systems"].items():
        if system.get("skipped"):
            console.print(f"[yellow]skipped[/] {key}: {escape(system['skipped'])}")
        for repeat in system.get("throughput", []):
            for run in repeat:
                if run.get("status") != "ok":
                    console.print(
                        escape(f"failed: {key} throughput [{run['variant']}]: {run['status']}")
                    )
        for run in system.get("latency", []):
            if run.get("status") != "ok":
                console.print(escape(f"failed: {key} latency [{run['variant']}]: {run['status']}"))


def sweep_table(doc: dict[str, Any]) -> Table:
    """Every throughput run (the sweep behind the best figures), for --verbose."""
    t = Table(title="every throughput run")
    columns = "system repeat setting jobs/s steady/s 1st-job-s enqueue/s dup missing status"
    for name in columns.split():
        t.add_column(name)
    for key, system in doc["systems"].items():
        for k, repeat in enumerate(system.get("throughput", [])):
            for run in repeat:
                t.add_row(
                    key,
                    str(k + 1),
                    run["variant"],
                    f"{run['jobs_per_s']:,.0f}" if run.get("jobs_per_s") else "-",
                    f"{run['steady_per_s']:,.0f}" if run.get("steady_per_s") else "-",
                    f"{run.get('first_job_s', float('nan')):.2f}",
                    f"{run.get('enqueue_per_s', 0):,.0f}",
                    str(run.get("duplicates", "-")),
                    str(run.get("missing", "-")),
                    run.get("status", "?"),
                )
    return t


def dump_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, default=str)
