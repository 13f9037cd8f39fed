"""What the dashboard and /metrics count, kept without a write per job on the workers'
path and without a row every worker updates.

Frequent events (a job enqueued, finished, retried; its run time) are derived from the
rows. Reading them from a million finished rows at every scrape would cost seconds, so
the history is *folded*: `stats_fold` walks the jobs by id, a part at a time, adds what
each finished job and its attempts contributed to `onceq_stats` (totals per queue, task
and name), and moves a mark. A job of a folded part that had not finished is kept in
`onceq_stats_open` and folded once it has. A read (`stats_read`) is then the folded
totals plus what the jobs above the mark and the open ones add, counted from their rows
in the same snapshot: exact, whatever the process, and nothing is lost by a restart.

Moving things out of the rows keeps the totals whole:
- an operator retry that sends a finished job back to pending reopens it
  (`_stats_reopen`): its failure stays counted, the gauge is corrected
  (`reopened_<status>`), and its next outcome is counted when it comes;
- deleting jobs folds them first, in the same transaction (`_stats_forget`, as
  `queue_purge` does), or deletes only jobs folded already (retention: each batch folds
  first, its statements skip the rest, and `_stats_pruned` takes what it deleted): their
  totals stay and the gauge is corrected (`pruned_<status>`).

Rare events are counted where they happen, in the store's transition path
(`count_jobs`): a lease lost (rescued, or given up by its worker), a rescue, a stale
write refused, a duplicate dispatch suppressed. They are rare by construction, so the
rows they update are not hot.

On PostgreSQL ids commit out of order: an id of a folded part that has no row yet is
kept open as a gap, so its job is counted from its row whenever it commits, until every
transaction that could still commit it has ended (stats_gaps_*). Folds and reads run
under REPEATABLE READ there (`stats_snapshot`).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from onceq.models import FINISHED, HISTOGRAM_BOUNDS, Histogram, Stats, TaskStats
from onceq.store.rows import dt
from onceq.store.tx import Row, Tx

CHUNK = 5000  # ids per fold transaction: short enough never to hold SQLite's lock long
FOLD_BUDGET = 2.0  # seconds a read spends catching up before it counts the rest live
HUGE_ID = 2**62  # "no upper bound", as a bound (a generic plan then still uses the index)
MINUTES_KEPT = 180
EMPTY = "[]"
Event = tuple[str, str, str, float]  # (queue, task, name, n)


# The histograms' buckets as (above, up to) seconds, the last one open-ended (JSON has no
# infinity: a bound no duration reaches stands in for it).
BUCKETS = json.dumps(list(zip((-1e300, *HISTOGRAM_BOUNDS), (*HISTOGRAM_BOUNDS, 1e300),
                              strict=True)))  # fmt: skip


def _events_params(
    *, lo: int = 0, hi: int = 0, fresh: str = EMPTY, closing: str = EMPTY,
    all_open: bool = False, mode: int = 0,
) -> dict[str, Any]:  # fmt: skip
    return {"lo": lo, "hi": hi, "fresh": fresh, "closing": closing, "all_open": all_open,
            "mode": mode, "buckets": BUCKETS}  # fmt: skip


FOLD, FORGET, READ = 0, 1, 2  # stats_events modes (see the SQL)


def add(tx: Tx, events: Iterable[Event]) -> None:
    """Add to the totals, in one statement: repeats summed, keys sorted (two transactions
    then lock shared rows in one order)."""
    summed: dict[tuple[str, str, str], float] = defaultdict(float)
    for queue, task, name, n in events:
        summed[(queue, task, name)] += n
    if summed:
        rows = [[*key, n] for key, n in sorted(summed.items())]
        tx.run("stats_add", {"rows": json.dumps(rows)})


def count_jobs(tx: Tx, names: Mapping[int, Sequence[str]]) -> None:
    """Count rare events of jobs: job id → the names to add 1 to, under its queue and
    task (read here: the statements that changed the jobs need not return them)."""
    if not names:
        return
    labels = tx.all("stats_job_labels", {"ids": json.dumps(sorted(names))})
    add(tx, ((r["queue"], r["task"], name, 1) for r in labels for name in names[r["id"]]))


def _split(rows: Iterable[Row]) -> tuple[list[Event], list[list[Any]]]:
    """stats_events rows as totals and per-minute counts."""
    events: list[Event] = []
    minutes: list[list[Any]] = []
    for r in rows:
        name = r["name"]
        if name.startswith("minute_"):
            minutes.append([int(r["minute"]), name[len("minute_") :], int(r["n"])])
        else:
            events.append((r["queue"], r["task"], name, float(r["n"])))
    return events, minutes


def _record(tx: Tx, rows: Iterable[Row]) -> None:
    events, minutes = _split(rows)
    add(tx, events)
    if minutes:
        summed: dict[tuple[int, str], int] = defaultdict(int)
        for minute, status, n in minutes:
            summed[(minute, status)] += n
        rows_ = [[m, s, n] for (m, s), n in sorted(summed.items())]
        tx.run("stats_minutes_add", {"rows": json.dumps(rows_)})


class StatsVerbs:
    """Mixed into Store: the dialect supplies _in_tx and _read."""

    _in_tx: Callable[..., Any]
    _read: Callable[..., Any]

    def stats_fold(self, limit: int = CHUNK) -> int:
        """Fold the next part of the history (up to `limit` ids) in one transaction; how
        many ids handed out are still not folded (0: caught up)."""

        def fold(tx: Tx) -> int:
            tx.run("stats_snapshot", {})
            tx.run("stats_custom_plans", {})
            mark = tx.one("stats_mark_lock", {})
            assert mark is not None, "onceq_stats_mark has no row"
            horizon = tx.one("stats_horizon", {})
            assert horizon is not None
            lo, last = int(mark["folded_to"]), int(horizon["last_id"])
            hi = max(lo, min(last, lo + limit))
            closing = tx.all("stats_open_closing", {})
            finished = [[r["job_id"], r["after_token"]] for r in closing if r["present"]]
            params = _events_params(lo=lo, hi=hi, closing=json.dumps(finished), mode=FOLD)
            _record(tx, tx.all("stats_events", params))
            if closing:
                tx.run("stats_open_close", {"ids": json.dumps([r["job_id"] for r in closing])})
            tx.run("stats_open_add", {"lo": lo, "hi": hi})
            tx.run("stats_gaps_add", {"lo": lo, "hi": hi})
            tx.run("stats_gaps_check", {"xmax": horizon["xmax"]})
            tx.run("stats_gaps_settle", {"xmin": horizon["xmin"]})
            tx.run("stats_mark_set", {"folded_to": hi})
            now = tx.one("stats_now", {})
            assert now is not None
            tx.run("stats_minutes_trim", {"before": int(now["now"] // 60) - MINUTES_KEPT})
            return max(0, last - hi)

        left: int = self._in_tx(fold, ("stats_fold",))
        return left

    def stats_catch_up(self, budget: float = FOLD_BUDGET) -> int:
        """Fold until caught up or `budget` seconds have passed; ids still behind."""
        deadline = time.monotonic() + budget
        while True:
            left = self.stats_fold()
            if not left or time.monotonic() >= deadline:
                return left

    def stats_read(self, *, fold: bool = True) -> Stats:
        """Every total, the jobs by queue and status, each queue's oldest runnable job's
        age and the last hour per minute, in one snapshot. With `fold`, the history is
        folded first (a write, bounded by FOLD_BUDGET), so the read counts little live."""
        if fold:
            self.stats_catch_up()

        def read(tx: Tx) -> tuple[list[Row], list[Row], list[Row], list[Row], float]:
            tx.run("stats_snapshot", {})
            tx.run("stats_custom_plans", {})
            mark = tx.one("stats_mark_get", {})
            assert mark is not None
            now = tx.one("stats_now", {})
            assert now is not None
            params = _events_params(lo=mark["folded_to"], hi=HUGE_ID, all_open=True, mode=READ)
            since = int(now["now"] // 60) - 59
            return (
                tx.all("stats_all", {}),
                tx.all("stats_events", params),
                tx.all("stats_minutes", {"since": since}),
                tx.all("stats_oldest_runnable", {}),
                float(now["now"]),
            )

        folded, live, minutes, oldest, now = self._read(read)
        return build(folded, live, minutes, oldest, now)

    # -- what moves rows: called in the transaction that moves them ------------------

    def _stats_reopen(self, tx: Tx, rows: Sequence[Row]) -> None:
        """Finished jobs (rows as they were: id, queue, task, status, lease_token,
        finished_at) that an operator retry is sending back to pending. Call after their
        rows are locked."""
        if not rows:
            return
        touched = tx.one("stats_mark_touch", {})
        assert touched is not None
        folded_to = touched["folded_to"]
        ids = json.dumps([r["id"] for r in rows])
        open_ = {r["job_id"] for r in tx.all("stats_open_of", {"ids": ids})}
        events: list[Event] = []
        minutes: list[Row] = []
        reopen = []
        for r in rows:
            status = r["status"]
            events.append((r["queue"], r["task"], f"reopened_{status}", 1))
            if r["id"] <= folded_to and r["id"] not in open_:
                reopen.append([r["id"], r["lease_token"]])  # its outcome is folded already
            else:  # its outcome would be lost with the row's status: counted now
                events.append((r["queue"], r["task"], status, 1))
                if r["finished_at"] is not None:
                    minute = int(dt(r["finished_at"]).timestamp() // 60)
                    minutes.append({"name": f"minute_{status}", "minute": minute, "n": 1})
        _record(tx, [*({"queue": q, "task": t, "name": k, "n": n} for q, t, k, n in events),
                     *minutes])  # fmt: skip
        if reopen:
            tx.run("stats_open_reopen", {"rows": json.dumps(reopen)})

    def _stats_forget(self, tx: Tx, ids: Sequence[int]) -> None:
        """Jobs about to be deleted in this transaction: what they add to the totals is
        folded now, and the gauge forgets them. Lock (or select for deletion) the job
        rows first, then call this, then delete."""
        if not ids:
            return
        tx.run("stats_custom_plans", {})
        row = tx.one("stats_mark_lock", {})
        assert row is not None
        folded_to = row["folded_to"]
        listed = json.dumps(sorted(ids))
        open_ = {r["job_id"]: r["after_token"] for r in tx.all("stats_open_of", {"ids": listed})}
        fresh = [i for i in ids if i > folded_to]
        closing = [[i, t] for i, t in open_.items()]
        params = _events_params(fresh=json.dumps(fresh), closing=json.dumps(closing), mode=FORGET)
        _record(tx, tx.all("stats_events", params))
        labels = tx.all("stats_job_labels", {"ids": listed})
        add(tx, ((r["queue"], r["task"], f"pruned_{r['status']}", 1) for r in labels
                 if r["status"] in FINISHED))  # fmt: skip
        if open_:
            tx.run("stats_open_close", {"ids": json.dumps(sorted(open_))})

    def _stats_pruned(self, tx: Tx, jobs: Mapping[tuple[str, str, str], int]) -> None:
        """Jobs retention deleted in this transaction, by (queue, task, status), folded
        already (its statements delete no other): their totals stay; the gauge forgets
        them."""
        add(tx, ((q, t, f"pruned_{status}", n) for (q, t, status), n in jobs.items()
                 if status in FINISHED))  # fmt: skip


# -- building the record ---------------------------------------------------------------


def build(
    folded: Iterable[Row], live: Iterable[Row], minutes: Iterable[Row], oldest: Iterable[Row],
    now: float,
) -> Stats:  # fmt: skip
    """The Stats record from the folded totals, the live part and the minute counts."""
    per: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    events, live_minutes = _split(live)
    for r in folded:
        per[(r["queue"], r["task"])][r["name"]] += float(r["n"])
    for queue, task, name, n in events:
        per[(queue, task)][name] += n
    jobs: dict[str, dict[str, int]] = {}
    tasks = []
    for (queue, task), names in sorted(per.items()):
        tasks.append(_task_stats(queue, task, names))
        counts = jobs.setdefault(queue, {})
        for status in ("pending", "running"):
            counts[status] = counts.get(status, 0) + int(names.get(f"status_{status}", 0))
        for status in sorted(FINISHED):
            gone = names.get(f"reopened_{status}", 0) + names.get(f"pruned_{status}", 0)
            counts[status] = counts.get(status, 0) + int(names.get(status, 0) - gone)
    first = int(now // 60) - 59
    per_minute: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in minutes:
        per_minute[int(r["minute"])][r["status"]] += int(r["n"])
    for minute, status, n in live_minutes:
        per_minute[minute][status] += n
    return Stats(
        now=datetime.fromtimestamp(now, UTC),
        tasks=tuple(tasks),
        jobs=jobs,
        oldest_runnable={r["queue"]: max(0.0, float(r["age"])) for r in oldest},
        minutes=tuple(
            (
                datetime.fromtimestamp(m * 60, UTC),
                per_minute[m]["succeeded"],
                per_minute[m]["failed"],
                per_minute[m]["cancelled"],
            )
            for m in range(first, first + 60)
        ),
    )


def _task_stats(queue: str, task: str, n: Mapping[str, float]) -> TaskStats:
    def histogram(prefix: str) -> Histogram:
        buckets = tuple(int(n.get(f"{prefix}_b{i}", 0)) for i in range(len(HISTOGRAM_BOUNDS) + 1))
        return Histogram(buckets, n.get(f"{prefix}_sum", 0.0))

    def by_prefix(prefix: str) -> dict[str, int]:
        return {k[len(prefix) :]: int(v) for k, v in sorted(n.items())
                if k.startswith(prefix) and v}  # fmt: skip

    reruns = by_prefix("rerun_")
    unexplained = reruns.pop("unexplained", 0)
    return TaskStats(
        queue=queue,
        task=task,
        enqueued=int(n.get("enqueued", 0)),
        succeeded=int(n.get("succeeded", 0)),
        failed=int(n.get("failed", 0)),
        cancelled=int(n.get("cancelled", 0)),
        retried=int(n.get("retried", 0)),
        lease_losses=int(n.get("lease_lost", 0)),
        rescues=int(n.get("rescued", 0)),
        duplicate_dispatches=int(n.get("dispatch_suppressed", 0)),
        stale_writes=by_prefix("stale_"),
        reruns=reruns,
        reruns_unexplained=unexplained,
        duration=histogram("duration"),
        wait=histogram("wait"),
    )
