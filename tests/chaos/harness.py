"""The fault-injection tier's harness: a ledger of handler executions, real processes to
start, kill, stop and resume, and an offline checker of the store's history.

The ledger: every handler start and end (and a few other events) is one JSON line,
appended with O_APPEND by whichever process runs the handler: job id, attempt, lease
token (from `onceq.current_job()`), pid, monotonic and wall time, event.

The checker reads the store's own history (onceq_jobs, onceq_attempts) and the ledger,
checks the guarantees of SPEC.md per job, and returns figures (`Figures`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from onceq.store.urls import parse_url
from tests.helpers import ATTEMPT_HISTORY

ROOT = Path(__file__).resolve().parents[2]
LEDGER_ENV = "ONCEQ_CHAOS_LEDGER"
GATES_ENV = "ONCEQ_CHAOS_GATES"
FIGURES_ENV = "ONCEQ_CHAOS_FIGURES"
CHILD_ENV = "ONCEQ_CHAOS_CHILD"  # set in every process a test starts (see apps.py)
SOAK = os.environ.get("ONCEQ_SOAK", "").lower() not in ("", "0", "false", "no")

FINISHED = frozenset({"succeeded", "failed", "cancelled"})
LEASE_LOSS = frozenset({"lease_expired", "worker_died"})
# Outcomes a holder records itself: a heartbeat refused on such a lease only raced its
# own holder's completion (see test_zombie.py), it was not a zombie's write.
OWN_END = frozenset({"succeeded", "failed", "retried", "released"})


def soak(default: Any, soaked: Any) -> Any:
    """The default figure, or the soak one under ONCEQ_SOAK=1."""
    return soaked if SOAK else default


# -- the ledger ------------------------------------------------------------------------


def ledger_write(event: str, **extra: Any) -> None:
    """Append one event of the running handler to the ledger (no-op without one)."""
    path = os.environ.get(LEDGER_ENV)
    if not path:
        return
    from onceq import current_job

    ctx = current_job()
    entry = {
        "event": event,
        "job": ctx.job_id,
        "attempt": ctx.attempt,
        "token": ctx.token,
        "task": ctx.task,
        "worker": ctx.worker,
        "pid": os.getpid(),
        "mono": time.monotonic(),
        "wall": time.time(),
        "run": ctx.run_id,
        "step": ctx.step,
        "item": ctx.item,
        **extra,
    }
    line = (json.dumps(entry, ensure_ascii=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one write: O_APPEND keeps lines whole across processes
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Entry:
    event: str
    job: int
    attempt: int
    token: int
    task: str
    worker: str
    pid: int
    mono: float
    wall: float
    run: int | None
    step: str | None
    item: int | None
    extra: dict[str, Any]


_ENTRY_FIELDS = set(Entry.__dataclass_fields__) - {"extra"}


def read_ledger(path: str | Path) -> list[Entry]:
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        raw = json.loads(line)
        base = {k: raw.pop(k) for k in list(raw) if k in _ENTRY_FIELDS}
        out.append(Entry(**base, extra=raw))
    return out


# -- the database ----------------------------------------------------------------------


def backend(url: str) -> str:
    return parse_url(url).dialect


def sql(url: str, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Portable SQL (`?` placeholders) straight against the store's database."""
    parsed = parse_url(url)
    if parsed.dialect == "sqlite":
        import sqlite3

        conn = sqlite3.connect(parsed.target, timeout=60, isolation_level=None)
        try:
            return conn.execute(query, tuple(params)).fetchall()
        finally:
            conn.close()
    import psycopg

    options = f"-c search_path={parsed.options['schema']}" if "schema" in parsed.options else ""
    with psycopg.connect(parsed.target, autocommit=True, options=options) as pg:
        cur = pg.execute(query.replace("?", "%s").encode(), tuple(params))
        return cur.fetchall() if cur.description else []


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


def db_now(url: str) -> float:
    """The clock that stamps the store's times (PostgreSQL's; SQLite: this machine's)."""
    if backend(url) == "sqlite":
        return time.time()
    ((now,),) = sql(url, "SELECT clock_timestamp()")
    return _epoch(now) or 0.0


def statuses(url: str) -> Counter[str]:
    rows = sql(url, "SELECT status, count(*) FROM onceq_jobs GROUP BY status")
    return Counter({status: n for status, n in rows})


def holders(url: str) -> dict[str, int]:
    """Workers holding running jobs, and how many each."""
    rows = sql(
        url, "SELECT worker, count(*) FROM onceq_jobs WHERE status = 'running' GROUP BY worker"
    )
    return {worker: n for worker, n in rows}


def all_finished(url: str, expected: int | None = None) -> bool:
    counts = statuses(url)
    total = sum(counts.values())
    if expected is not None and total < expected:
        return False
    return total > 0 and counts["pending"] == 0 and counts["running"] == 0


def write_lock_free(url: str, job_ids: Sequence[int]) -> bool:
    """Whether nobody holds the write lock (SQLite) or a lock on these jobs' rows
    (PostgreSQL): a process stopped inside a transaction would block the others."""
    parsed = parse_url(url)
    if parsed.dialect == "sqlite":
        import sqlite3

        conn = sqlite3.connect(parsed.target, timeout=0.5, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            conn.close()
    import psycopg
    from psycopg import errors

    options = f"-c search_path={parsed.options['schema']}" if "schema" in parsed.options else ""
    with psycopg.connect(parsed.target, options=options) as pg:
        try:
            pg.execute(
                "SELECT id FROM onceq_jobs WHERE id = ANY(%s) FOR UPDATE NOWAIT", (list(job_ids),)
            )
            return True
        except errors.LockNotAvailable:
            return False
        finally:
            pg.rollback()


# -- PostgreSQL server control ---------------------------------------------------------


def pg_cluster() -> tuple[str, str] | None:
    """(version, name) of the local Debian cluster on port 5432, if we can control it."""
    if os.geteuid() != 0 or not Path("/usr/bin/pg_ctlcluster").exists():
        return None
    versions = sorted(Path("/etc/postgresql").glob("*/main"))
    if not versions:
        return None
    return versions[-1].parent.name, "main"


def pg_ready(url: str) -> bool:
    import psycopg

    try:
        psycopg.connect(parse_url(url).target, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def pg_ctl(action: str, *args: str) -> None:
    cluster = pg_cluster()
    assert cluster is not None
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, action, *args],
        check=True,
        capture_output=True,
        timeout=120,
    )


def ensure_postgres_running(url: str) -> None:
    """Start the server again if a test left it down."""
    if pg_ready(url):
        return
    with contextlib.suppress(subprocess.CalledProcessError):
        pg_ctl("start")
    deadline = time.monotonic() + 60
    while not pg_ready(url) and time.monotonic() < deadline:
        time.sleep(0.2)


def pg_connections(url: str, application_name: str) -> int:
    ((n,),) = sql(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = ?",
        (application_name,),
    )
    return int(n)


# -- processes -------------------------------------------------------------------------


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def children(pid: int) -> list[int]:
    """The worker processes a supervisor started: its children that lead a process group
    of their own (each worker makes one, for it and its subprocess handlers)."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        leader = int(fields[2]) == int(proc.name)
        if int(fields[1]) == pid and leader and fields[0] not in ("Z", "X"):
            out.append(int(proc.name))
    return sorted(out)


def log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


class Chaos:
    """One test's chaos kit: its store URL, ledger, gates, logs and processes.

    Every process it starts is killed (SIGCONT first, then SIGKILL to its group and to
    its worker children) when the test ends, whatever happened.
    """

    def __init__(self, url: str, tmp: Path, scenario: str) -> None:
        self.url = url
        self.backend = backend(url)
        self.tmp = tmp
        self.scenario = scenario
        self.ledger = tmp / "ledger.jsonl"
        self.gates = tmp / "gates"
        self.gates.mkdir(exist_ok=True)
        self.appname = f"onceq-chaos-{uuid.uuid4().hex[:10]}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logfile: dict[int, Path] = {}  # pid: its log
        self._count = 0

    # -- starting processes ------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "ONCEQ_URL": self.url,
            LEDGER_ENV: str(self.ledger),
            GATES_ENV: str(self.gates),
            CHILD_ENV: "1",
            "PGAPPNAME": self.appname,
            # this tree's code, whatever onceq the interpreter has installed
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT / "src"), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
        env.pop("ONCEQ_TEST_LEDGER", None)
        return env

    def _popen(
        self, args: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, *args],
                cwd=ROOT,
                env={**self.env(), **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs.append(proc)
        self.logfile[proc.pid] = log
        return proc

    def worker(
        self, name: str | None = None, env: dict[str, str] | None = None, **options: Any
    ) -> tuple[subprocess.Popen[bytes], str]:
        """A bare worker process (`app.worker(**options).run()`); (process, name). `env`
        adds to its environment (another ONCEQ_URL, ONCEQ_FAULTS…)."""
        self._count += 1
        name = name or f"w{self._count}"
        options = {"name": name, **options}
        args = ["-m", "tests.chaos.run", "worker", json.dumps(options)]
        return self._popen(args, self.log(name), env), name

    def supervisor(
        self, tag: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """`onceq worker --app tests.chaos.apps:app ARGS`, as a user starts it."""
        return self._popen(
            ["-m", "onceq", "worker", "--app", "tests.chaos.apps:app", *args], self.log(tag), env
        )

    def enqueuer(
        self, tag: str, count: int, ids_file: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        args = ["-m", "tests.chaos.run", "enqueue", str(count), str(ids_file), tag]
        return self._popen(args, self.log(tag), env)

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    def logs(self) -> dict[str, str]:
        return {p.stem: log_text(p) for p in sorted(self.tmp.glob("*.log"))}

    # -- faults ------------------------------------------------------------------------

    def pause(self, proc: subprocess.Popen[bytes], held: Sequence[int]) -> int:
        """SIGSTOP `proc` at a moment it holds no database lock (see write_lock_free);
        returns how many tries it took."""
        for tries in range(1, 200):
            os.kill(proc.pid, signal.SIGSTOP)
            wait_for(lambda: proc_state(proc.pid) == "T", timeout=10)
            if write_lock_free(self.url, held):
                return tries
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.01 * tries)
        raise AssertionError("could not stop the worker outside a transaction")

    def terminate(self, proc: subprocess.Popen[bytes], timeout: float = 90) -> int:
        """SIGTERM and wait for the exit code. A process that does not exit is asked, with
        its worker children, for its threads' stacks (see apps.py), shown in the failure."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log = self.logfile.get(proc.pid)
            size = log.stat().st_size if log else 0
            for pid in [proc.pid, *children(proc.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR1)
            time.sleep(1)  # each process writes its dump itself: give them a moment
            tail = log.read_bytes()[size:].decode(errors="replace")[-8000:] if log else ""
            raise AssertionError(
                f"pid {proc.pid} ({log.name if log else '?'}) still running {timeout}s after "
                f"SIGTERM; its threads:\n{tail}\nits log before:\n{log_text(log)[-1500:]}"
                if log
                else f"pid {proc.pid} still running {timeout}s after SIGTERM"
            ) from None

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                kids = children(proc.pid)
                for pid in [proc.pid, *kids]:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGCONT)
                        os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)

    # -- results -----------------------------------------------------------------------

    def check(self, **kwargs: Any) -> Figures:
        return check(self.url, self.ledger, **kwargs)

    def report(self, figures: Figures, **faults: Any) -> dict[str, Any]:
        return report(self.scenario, figures, **faults)

    def finished_ok(self, figures: Figures) -> None:
        """Every job succeeded and no guarantee broke."""
        figures.assert_clean()
        assert figures.statuses == {"succeeded": figures.jobs}, figures.statuses


def proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "X"


def wait_for(fn: Callable[[], Any], timeout: float = 60.0, every: float = 0.02) -> Any:
    """Like tests.helpers.eventually, with the generous timeouts this tier needs."""
    from tests.helpers import eventually

    return eventually(fn, timeout=timeout, every=every)


# -- the checker -----------------------------------------------------------------------


@dataclass
class Figures:
    """What the checker counted; `violations` lists every broken guarantee."""

    backend: str
    jobs: int = 0
    lost: int = 0
    attempts: int = 0
    handler_starts: int = 0
    reruns: int = 0
    reruns_lease_loss: int = 0
    reruns_retry: int = 0
    # refused writes in onceq_attempts.rejected, and those that were heartbeats racing
    # their own holder's completion rather than a stale holder's writes
    rejected: int = 0
    rejected_self_race: int = 0
    rejected_ops: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    runs: int = 0
    successor_executions: int = 0
    violations: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        if self.violations:
            shown = "\n  ".join(self.violations[:25])
            more = len(self.violations) - 25
            raise AssertionError(
                f"{len(self.violations)} violation(s):\n  {shown}"
                + (f"\n  ... and {more} more" if more > 0 else "")
            )


@dataclass(frozen=True)
class _Job:
    id: int
    task: str
    status: str
    lease_token: int
    attempts: int
    run_id: int | None
    step: str | None
    item: int | None


@dataclass(frozen=True)
class _Attempt:
    job_id: int
    token: int
    attempt: int
    worker: str
    started: float
    ended: float | None
    outcome: str | None
    rejected: tuple[str, ...]
    error: str | None = None


def stopped(attempt: _Attempt) -> bool:
    """A lease handed back by a shutdown (its worker stopped after a signal, with the
    handler running): `stopped`, the attempt given back as for an unstarted one, but its
    handler may have run — and runs again under the next lease."""
    return attempt.outcome == "stopped"


def read_history(url: str) -> tuple[list[_Job], dict[int, list[_Attempt]]]:
    jobs = [
        _Job(*row)
        for row in sql(
            url,
            "SELECT id, task, status, lease_token, attempts, run_id, step, item "
            "FROM onceq_jobs ORDER BY id",
        )
    ]
    attempts: dict[int, list[_Attempt]] = defaultdict(list)
    for job_id, token, attempt, worker, started, ended, outcome, rejected, error in sql(
        url, ATTEMPT_HISTORY
    ):
        attempts[job_id].append(
            _Attempt(
                job_id,
                token,
                attempt,
                worker,
                _epoch(started) or 0.0,
                _epoch(ended),
                outcome,
                tuple(rejected.split(",")) if rejected else (),
                error,
            )
        )
    return jobs, attempts


def check(
    url: str,
    ledger: Path,
    *,
    expected_ids: Iterable[int] | None = None,
    instrumented: Callable[[str], bool] = lambda task: task.startswith("chaos."),
    successor_steps: Iterable[str] = (),
    allow_unfinished: bool = False,
) -> Figures:
    """Check the history of every job in the store against the guarantees.

    Per job: it ended succeeded/failed/cancelled (nothing lost); its lease tokens are
    1..lease_token, each with an attempt record, in time order; no two leases overlap
    in database time (attempt k+1 starts at or after attempt k ended); attempt numbers
    count every lease that was not handed back; a succeeded job has exactly one
    committed completion, under its current token; in the ledger, no lease ran its
    handler twice, every handler ran under a recorded lease, and every repeated start
    follows a lease loss (lease_expired, worker_died) or a retry (the handler failed);
    a succeeded job of an `instrumented` task ran its handler under the winning lease.
    Workflows: one job per (run, step, item), and one execution per run of each
    `successor_steps` step.
    """
    figures = Figures(backend(url))
    v = figures.violations.append
    jobs, attempts = read_history(url)
    entries = read_ledger(ledger)
    starts: dict[int, list[Entry]] = defaultdict(list)
    for e in entries:
        if e.event == "start":
            starts[e.job].append(e)
    by_id = {j.id: j for j in jobs}
    figures.jobs = len(jobs)
    figures.statuses = dict(Counter(j.status for j in jobs))

    if expected_ids is not None:
        missing = sorted(set(expected_ids) - set(by_id))
        figures.lost += len(missing)
        for job_id in missing[:20]:
            v(f"job {job_id}: enqueue returned its id, but it is not in the store")
    for job_id in sorted(set(starts) - set(by_id)):
        v(f"job {job_id}: its handler ran, but the job is not in the store")

    for job in jobs:
        atts = attempts.get(job.id, [])
        where = f"job {job.id} ({job.task[:40]})"
        figures.attempts += len(atts)
        for a in atts:
            figures.outcomes[a.outcome or "open"] = figures.outcomes.get(a.outcome or "open", 0) + 1
            figures.rejected += len(a.rejected)
            for op in a.rejected:
                figures.rejected_ops[op] = figures.rejected_ops.get(op, 0) + 1
                if op == "heartbeat" and a.outcome in OWN_END:
                    figures.rejected_self_race += 1

        if job.status not in FINISHED and not allow_unfinished:
            figures.lost += 1
            v(f"{where}: left {job.status}")
        tokens = [a.token for a in atts]
        if tokens != list(range(1, job.lease_token + 1)):
            v(f"{where}: lease tokens {tokens} are not 1..{job.lease_token}")
        for prev, nxt in pairwise(atts):
            if nxt.started < prev.started:
                v(f"{where}: lease {nxt.token} started before lease {prev.token}")
            if prev.ended is None:
                v(f"{where}: lease {prev.token} never ended, yet lease {nxt.token} started")
            elif prev.ended > nxt.started:
                v(
                    f"{where}: leases {prev.token} and {nxt.token} overlap in database time "
                    f"({prev.ended - nxt.started:.6f}s)"
                )
        spent = 0
        for a in atts:
            if a.attempt != spent + 1:
                v(f"{where}: lease {a.token} is attempt {a.attempt}, expected {spent + 1}")
            if a.outcome not in ("released", "stopped"):  # (attempts given back)
                spent += 1
        if job.attempts != spent:
            v(f"{where}: attempts={job.attempts}, but {spent} leases were spent")
        if job.status in FINISHED and any(a.ended is None for a in atts):
            v(f"{where}: {job.status}, yet an attempt is still open")
        wins = [a for a in atts if a.outcome == "succeeded"]
        if job.status == "succeeded":
            if len(wins) != 1:
                v(f"{where}: succeeded with {len(wins)} committed completions")
            elif wins[0].token != job.lease_token:
                v(f"{where}: completion under lease {wins[0].token}, current {job.lease_token}")
        elif wins:
            v(f"{where}: {job.status}, yet lease {wins[0].token} recorded a success")

        # The ledger: what really ran.
        att_by_token = {a.token: a for a in atts}
        ran = Counter(e.token for e in starts.get(job.id, []))
        figures.handler_starts += sum(ran.values())
        for token, n in ran.items():
            if n > 1:
                v(f"{where}: lease {token} ran its handler {n} times")
            if token not in att_by_token:
                v(f"{where}: the handler ran under lease {token}, which the store never granted")
            elif att_by_token[token].outcome == "released":
                v(f"{where}: lease {token} was handed back as unstarted, but its handler ran")
        if (
            job.status == "succeeded"
            and wins
            and instrumented(job.task)
            and wins[0].token not in ran
        ):
            v(f"{where}: succeeded under lease {wins[0].token}, whose handler never ran")
        for prev_token, token in pairwise(sorted(ran)):
            figures.reruns += 1
            prev = att_by_token.get(prev_token)
            outcome = prev.outcome if prev else None
            if outcome in LEASE_LOSS or (prev is not None and stopped(prev)):
                figures.reruns_lease_loss += 1
            elif outcome == "retried":
                figures.reruns_retry += 1
            else:
                v(
                    f"{where}: ran again under lease {token} after lease {prev_token} "
                    f"ended {outcome!r} (no lease loss, no retry)"
                )

    # Workflows: one job per (run, step, item); one successor execution per run.
    seen = Counter((j.run_id, j.step, j.item) for j in jobs if j.run_id is not None)
    for (run_id, step, item), n in seen.items():
        if n > 1:
            v(f"run {run_id}: step {step} item {item} has {n} jobs")
    successors = set(successor_steps)
    if successors:
        runs = {j.run_id for j in jobs if j.run_id is not None}
        figures.runs = len(runs)
        for run_id in sorted(r for r in runs if r is not None):
            for step in sorted(successors):
                ids = [j.id for j in jobs if j.run_id == run_id and j.step == step]
                executions = sum(len(starts.get(i, [])) for i in ids)
                figures.successor_executions += executions
                if len(ids) != 1 or executions != 1:
                    v(
                        f"run {run_id}: successor {step} has {len(ids)} job(s) and ran "
                        f"{executions} time(s)"
                    )
    return figures


# -- a steady supply of jobs -----------------------------------------------------------


class Feeder:
    """A thread that keeps about `backlog` jobs of `task` pending, so that faults land on
    work in flight. Its own store, reopened after an error (the server may be down);
    `ids` are the acknowledged enqueues, `errors` what the enqueue calls raised
    (`read_errors`: what reading the backlog raised)."""

    def __init__(
        self,
        url: str,
        task: str,
        payload: Callable[[int], dict[str, Any]],
        *,
        backlog: int = 200,
        batch: int = 100,
        one_by_one: bool = False,
        pause: float = 0.0,
    ) -> None:
        import threading

        self.url, self.task, self.payload = url, task, payload
        self.backlog, self.batch, self.one_by_one = backlog, batch, one_by_one
        self.pause = pause  # between two one-by-one enqueues
        self.ids: list[int] = []
        self.errors: list[BaseException] = []
        self.read_errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        from tests.chaos.conftest import fresh_app

        app = None
        while not self._stop.is_set():
            try:
                missing = self.backlog - statuses(self.url)["pending"]
            except Exception as exc:  # the server is down: not an enqueue's error
                self.read_errors.append(exc)
                self._stop.wait(0.1)
                continue
            if missing <= 0:
                self._stop.wait(0.02)
                continue
            try:
                if app is None:
                    app = fresh_app(self.url)
                self._enqueue(app, min(missing, self.batch))
            except Exception as exc:
                self.errors.append(exc)
                if app is not None:
                    with contextlib.suppress(Exception):
                        app.close()
                app = None
                self._stop.wait(0.1)
        if app is not None:
            app.close()

    def _enqueue(self, app: Any, count: int) -> None:
        task = app.tasks[self.task]
        if self.one_by_one:
            for _ in range(count):
                if self._stop.is_set():
                    return
                self.ids.append(task.enqueue(**self.payload(len(self.ids))).id)
                self._stop.wait(self.pause)
            return
        news = [
            task.new_job(task.validate((), self.payload(len(self.ids) + n)), {})
            for n in range(count)
        ]
        self.ids += app.store.job_insert_many(news)


# -- figures ---------------------------------------------------------------------------


def figures_path() -> Path | None:
    path = os.environ.get(FIGURES_ENV)
    return Path(path) if path else None


RECORDS: list[dict[str, Any]] = []  # this session's, for the terminal summary


def report(scenario: str, figures: Figures, **faults: Any) -> dict[str, Any]:
    """Print one scenario's figures and append them to the figures file."""
    record = {"scenario": scenario, **asdict(figures), "faults": faults}
    record["violations"] = len(figures.violations)
    RECORDS.append(record)
    line = json.dumps(record, default=str)
    print(f"\nCHAOS {line}")
    path = figures_path()
    if path is not None:
        with open(path, "a") as f:
            f.write(line + "\n")
    return record


@contextlib.contextmanager
def sampling(fn: Callable[[], Any], every: float = 0.1) -> Iterator[list[Any]]:
    """Call `fn` on a thread every `every` seconds while the block runs; the samples
    (exceptions are skipped: the server may be down)."""
    import threading

    samples: list[Any] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                samples.append(fn())
            stop.wait(every)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(10)
