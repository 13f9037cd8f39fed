"""The workloads, identical for every system.

throughput: enqueue N no-op jobs (bulk), then start 2 worker processes; jobs/s from just
    before the workers are started until the last handler started (ledger timestamps).
    The same run's ledger gives duplicates (ran more than once) and missing (never ran).
latency: start 1 worker process, run a warm-up job, leave it idle, then enqueue 200
    jobs 10 ms apart, one call each; enqueue->start is the handler's time.time() minus
    the producer's, taken just before its enqueue call.
"""

from __future__ import annotations

import time
from typing import Any

from common import CpuMeter, Ledger, Runner, Variant, new_run, percentile, start_workers

POLL = 0.25  # how often the harness reads the ledger while workers run
SETTLE = 1.0  # after the last job showed up: time for a late duplicate to show too
WARMUP_ID = -1


def throughput(
    runner: Runner, variant: Variant, jobs: int, *, timeout: float = 600.0, keep: bool = False
) -> dict[str, Any]:
    """One throughput run of `runner` with `variant`, 2 worker processes."""
    result: dict[str, Any] = {"variant": variant.label, "options": variant.options, "jobs": jobs}
    with new_run(runner.key, keep) as run, runner.store(run):
        began = time.perf_counter()
        runner.enqueue_bulk(run, variant, jobs)
        result["enqueue_s"] = round(time.perf_counter() - began, 3)
        result["enqueue_per_s"] = round(jobs / max(result["enqueue_s"], 1e-9), 1)

        commands = runner.worker_commands(run, variant, processes=2, burst=runner.burst)
        result["commands"] = [" ".join(c[1:]) for c in commands]
        ledger = Ledger(run.ledger)
        machine = CpuMeter()
        workers = start_workers(run, commands, runner.worker_env(variant))
        status = "ok"
        try:
            deadline = time.monotonic() + timeout
            while ledger.poll() < jobs:
                if not workers.running():
                    status = "workers exited before every job ran"
                    break
                if time.monotonic() > deadline:
                    status = f"timed out after {timeout:.0f}s"
                    break
                time.sleep(POLL)
            if runner.burst and status == "ok" and not workers.wait(60.0):
                status = "burst workers did not exit within 60s of the last job"
            elif not runner.burst:
                time.sleep(SETTLE)
        finally:
            codes = workers.stop()
        result.update(machine.read())
        ledger.poll()
        tally = ledger.tally(range(jobs))
        result.update(tally)
        result["exit_codes"] = codes
        if tally["missing"] and status == "ok":
            status = "some jobs never ran"
        if ledger.started_max > 0:
            wall = ledger.started_max - workers.started
            steady = ledger.started_max - ledger.started_min
            result["wall_s"] = round(wall, 3)
            result["jobs_per_s"] = round(jobs / wall, 1) if not tally["missing"] else None
            result["first_job_s"] = round(ledger.started_min - workers.started, 3)
            result["steady_per_s"] = (
                round((jobs - 1) / steady, 1) if steady > 0 and not tally["missing"] else None
            )
        result["status"] = status
        if status != "ok":
            result["log_tail"] = workers.log_tail()
    return result


def latency(
    runner: Runner,
    variant: Variant,
    *,
    jobs: int = 200,
    interval: float = 0.010,
    idle: float = 2.0,
    keep: bool = False,
) -> dict[str, Any]:
    """One latency run of `runner` with `variant`, 1 worker process."""
    result: dict[str, Any] = {
        "variant": variant.label,
        "options": variant.options,
        "jobs": jobs,
        "interval_ms": interval * 1000,
        "idle_s": idle,
    }
    with new_run(runner.key, keep) as run, runner.store(run):
        commands = runner.worker_commands(run, variant, processes=1, burst=False)
        result["commands"] = [" ".join(c[1:]) for c in commands]
        ledger = Ledger(run.ledger)
        machine = CpuMeter()
        workers = start_workers(run, commands, runner.worker_env(variant))
        try:
            runner.enqueue_one(run, WARMUP_ID, time.time())
            if not _wait_for(ledger, lambda: ledger.has(WARMUP_ID), workers, 60.0):
                result["status"] = "the warm-up job never ran"
                result["log_tail"] = workers.log_tail()
                return result
            time.sleep(idle)  # idle: whatever backs off when there is nothing to do has

            enqueue_calls = []
            start = time.perf_counter()
            for k in range(jobs):
                pause = start + k * interval - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                t = time.time()
                runner.enqueue_one(run, k, t)
                enqueue_calls.append(time.time() - t)
            produced = time.perf_counter() - start
            done = _wait_for(ledger, lambda: all(ledger.has(i) for i in range(jobs)), workers, 60.0)
        finally:
            codes = workers.stop()
        result.update(machine.read())
        ledger.poll()
        tally = ledger.tally(range(jobs))
        samples = [
            (ledger.first[i][0] - ledger.first[i][1]) * 1000
            for i in range(jobs)
            if i in ledger.first
        ]
        result.update(tally)
        result["exit_codes"] = codes
        result["producer_s"] = round(produced, 3)
        result["enqueue_call_ms_p50"] = round(percentile(enqueue_calls, 50) * 1000, 3)
        for p in (50, 95, 99):
            result[f"p{p}_ms"] = round(percentile(samples, p), 2)
        result["max_ms"] = round(max(samples), 2) if samples else None
        result["min_ms"] = round(min(samples), 2) if samples else None
        result["status"] = "ok" if done and not tally["missing"] else "some jobs never ran"
        if result["status"] != "ok":
            result["log_tail"] = workers.log_tail()
    return result


def _wait_for(ledger: Ledger, done: Any, workers: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        ledger.poll()
        if done():
            return True
        if time.monotonic() > deadline or not workers.running():
            return False
        time.sleep(0.01)
