"""Rows as the records the layers above see (onceq.models)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from onceq.models import (
    Attempt,
    BatchRecord,
    BatchTaskRecord,
    Job,
    Lease,
    PeriodicRecord,
    Run,
    StepState,
    WorkerRecord,
)
from onceq.store import jsoncodec
from onceq.store.tx import Row


def job(row: Row) -> Job:
    """A job row (`SELECT *`)."""
    return Job(
        id=row["id"],
        queue=row["queue"],
        task=row["task"],
        args=json_or_raw(row["args"]),
        status=row["status"],
        priority=row["priority"],
        run_at=dt(row["run_at"]),
        key=row["key"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        lease_token=row["lease_token"],
        lease_expires_at=dt_or_none(row["lease_expires_at"]),
        # the row keeps its last holder; a pending job has none
        worker=None if row["status"] == "pending" else row["worker"],
        result=json_or_raw(row["result"]),
        last_error=row["last_error"],
        last_traceback=row["last_traceback"],
        created_at=dt(row["created_at"]),
        started_at=dt_or_none(row["started_at"]),
        finished_at=dt_or_none(row["finished_at"]),
        run_id=row["run_id"],
        step=row["step"],
        item=row["item"],
        concurrency_key=row["concurrency_key"],
    )


def leases(rows: list[Row]) -> list[Lease]:
    """Claimed rows as leases, in claim order: priority (high first), run_at, id."""
    rows.sort(key=lambda r: (-r["priority"], r["run_at"], r["id"]))
    return [
        Lease(
            job_id=r["id"],
            token=r["token"],
            task=r["task"],
            args=r["args"],
            queue=r["queue"],
            attempts=r["attempts"],
            max_attempts=r["max_attempts"],
            run_id=r["run_id"],
            step=r["step"],
            item=r["item"],
        )
        for r in rows
    ]


def attempt(r: Row) -> Attempt:
    """An attempt row."""
    return Attempt(
        job_id=r["job_id"],
        attempt=r["attempt"],
        token=r["token"],
        worker=r["worker"],
        started_at=dt(r["started_at"]),
        ended_at=dt_or_none(r["ended_at"]),
        outcome=r["outcome"],
        error=r["error"],
        rejected=r["rejected"],
    )


def run(row: Row, steps: Sequence[Row], counts: Sequence[Row]) -> Run:
    """A run row with its steps (in definition order) and their jobs counted by status."""
    definition = json_or_raw(row["definition"])  # (a broken one is still shown)
    names = definition.get("steps") if isinstance(definition, dict) else None
    rank = {name: i for i, name in enumerate(names if isinstance(names, dict) else {})}
    per_step: dict[str, dict[str, int]] = {}
    for c in counts:
        per_step.setdefault(c["step"], {})[c["status"]] = c["n"]
    states = sorted(steps, key=lambda s: rank.get(s["step"], len(rank)))
    return Run(
        id=row["id"],
        name=row["name"],
        status=row["status"],
        input=json_or_raw(row["input"]),
        error=row["error"],
        created_at=dt(row["created_at"]),
        finished_at=dt_or_none(row["finished_at"]),
        steps=tuple(
            StepState(
                name=s["step"],
                status=s["status"],
                total=s["total"],
                counts=per_step.get(s["step"], {}),
                error=s["error"],
                started_at=dt_or_none(s["started_at"]),
                finished_at=dt_or_none(s["finished_at"]),
            )
            for s in states
        ),
    )


def worker(row: Row) -> WorkerRecord:
    """A worker registry row."""
    queues = json_or_raw(row["queues"])
    return WorkerRecord(
        name=row["name"],
        host=row["host"],
        pid=row["pid"],
        queues=list(queues) if isinstance(queues, list) else None,
        concurrency=row["concurrency"],
        version=row["version"],
        started_at=dt(row["started_at"]),
        last_seen=dt(row["last_seen"]),
    )


def periodic(row: Row) -> PeriodicRecord:
    """A periodic task's row (with its last job's status)."""
    spec = json_or_raw(row["spec"])
    return PeriodicRecord(
        name=row["name"],
        spec=spec if isinstance(spec, dict) else {},
        last_tick=dt_or_none(row["last_tick"]),
        last_job=row["last_job"],
        last_status=row["last_status"],
        created_at=dt(row["created_at"]),
        seen_at=dt(row["seen_at"]),
    )


def dt(value: Any) -> datetime:
    """A stored time (SQLite: unix seconds) as an aware datetime."""
    if isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(value, UTC)


def dt_or_none(value: Any) -> datetime | None:
    return None if value is None else dt(value)


def json_or_raw(text: str | None) -> Any:
    """Decode stored JSON; a value written around onceq that is not JSON is shown raw."""
    try:
        return jsoncodec.loads(text)
    except ValueError:
        return text


def batch(row: Row, tasks: list[Row], run_status: str | None, worktrees: list[str]) -> BatchRecord:
    """A batch row, its task rows, its run's status and its slots' paths."""
    return BatchRecord(
        name=row["name"],
        repo=row["repo"],
        base=row["base"],
        base_start=row["base_start"],
        definition=json.loads(d) if isinstance(d := row["definition"], str) else d,
        run_id=row["run_id"],
        run_status=run_status,
        created_at=dt(row["created_at"]),
        worktrees=worktrees,
        tasks=[
            BatchTaskRecord(
                number=t["number"],
                title=t["title"],
                batch_no=t["batch_no"],
                status=t["status"],
                rounds=t["rounds"],
                branch=t["branch"],
                worktree=t["worktree"],
                start=t["start"],
                verified=t["verified"],
                feedback=t["feedback"],
                error=t["error"],
                merged_as=t["merged_as"],
                started_at=dt_or_none(t["started_at"]),
                merged_at=dt_or_none(t["merged_at"]),
                updated_at=dt(t["updated_at"]),
            )
            for t in tasks
        ],
    )
