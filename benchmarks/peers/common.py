"""What every system's runner shares: services, worker processes, the ledger, stats.

A runner (one module per system) says how to get a fresh store, enqueue, and start its
workers; workloads.py drives the same workloads through every runner.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PEERS_DIR = Path(__file__).resolve().parent
PG_URL = os.environ.get("PEERS_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379/5")
REDIS_MARK = "onceq-peers:owner"  # the key that says this Redis db is the benchmark's
STOP_GRACE = 20.0  # seconds a worker gets to exit after SIGTERM before SIGKILL
# A directory holding an `onceq` package to measure instead of the installed one (e.g. a
# `git archive` of a commit, while the work tree is being edited): first on sys.path here
# and on the workers' PYTHONPATH.
ONCEQ_SRC = os.environ.get("PEERS_ONCEQ_SRC")
if ONCEQ_SRC:
    sys.path.insert(0, ONCEQ_SRC)


# -- runners -----------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One setting of a system's workers: `label` goes in the table, `options` to the
    runner (and the JSON)."""

    label: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """One measured run: a temp dir (logs, SQLite files), its ledger dir, the
    environment of its worker processes, and the runner's own state."""

    tmp: Path
    ledger: Path
    env: dict[str, str]
    state: dict[str, Any] = field(default_factory=dict)


class Runner:
    """A system under test. Subclasses fill in the hooks below."""

    key = ""  # as given to --only
    title = ""  # as shown in the table
    backend = ""  # SQLite, PostgreSQL or Redis
    packages: tuple[str, ...] = ()
    service: str | None = None  # "postgres" or "redis"
    burst = False  # its workers exit by themselves once the queue is empty

    def unavailable(self) -> str | None:
        """Why this system cannot run here (one line), or None."""
        missing = [p for p in self.packages if importlib.util.find_spec(p) is None]
        if missing:
            return f"package {', '.join(missing)} not installed (pip install -e '.[peers]')"
        if self.service == "postgres":
            return postgres_problem()
        if self.service == "redis":
            return redis_problem()
        return None

    def throughput_variants(self) -> list[Variant]:
        """Worker settings to try for throughput; the first is the default."""
        raise NotImplementedError

    def latency_variants(self) -> list[Variant]:
        """Worker settings for the latency run (one process); the first is the headline."""
        raise NotImplementedError

    @contextlib.contextmanager
    def store(self, run: Run) -> Iterator[None]:
        """A fresh, empty queue for this run, removed afterwards."""
        yield

    def enqueue_bulk(self, run: Run, variant: Variant, n: int) -> None:
        """Enqueue no-op jobs 0..n-1 the fastest documented way."""
        raise NotImplementedError

    def enqueue_one(self, run: Run, i: int, t: float) -> None:
        """Enqueue one latency job the ordinary way (`t`: the producer's time.time())."""
        raise NotImplementedError

    def worker_commands(
        self, run: Run, variant: Variant, *, processes: int, burst: bool
    ) -> list[list[str]]:
        """The commands that start `processes` worker processes (cwd: benchmarks/peers)."""
        raise NotImplementedError

    def worker_env(self, variant: Variant) -> dict[str, str]:
        """Extra environment for this variant's workers."""
        return {}


@contextlib.contextmanager
def new_run(key: str, keep: bool = False) -> Iterator[Run]:
    """A temp dir with an empty ledger dir; workers see the peers dir on PYTHONPATH."""
    tmp = Path(tempfile.mkdtemp(prefix=f"peers-{key}-"))
    ledger = tmp / "ledger"
    ledger.mkdir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [*filter(None, [ONCEQ_SRC, str(PEERS_DIR), os.environ.get("PYTHONPATH")])]
    )
    env["PEERS_LEDGER_DIR"] = str(ledger)
    env["PYTHONUNBUFFERED"] = "1"
    try:
        yield Run(tmp=tmp, ledger=ledger, env=env)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


# -- services ----------------------------------------------------------------------


def postgres_problem() -> str | None:
    """Why PostgreSQL at PG_URL is not usable for the benchmark, or None."""
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL at {PG_URL} unreachable: {reason}"
    return None


def with_database(url: str, name: str) -> str:
    """The URL with its database replaced."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


@contextlib.contextmanager
def fresh_database(tag: str) -> Iterator[str]:
    """CREATE DATABASE for one run; its URL; DROP ... WITH (FORCE) afterwards."""
    import psycopg
    from psycopg import sql

    name = f"peers_{tag}_{uuid.uuid4().hex[:8]}".replace("-", "_")
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(PG_URL, name)
    finally:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        for attempt in range(30):  # the server may be restarting (someone else's tests)
            try:
                with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(drop)
                break
            except psycopg.OperationalError:
                if attempt == 29:
                    raise
                time.sleep(2.0)


def redis_problem() -> str | None:
    """Why the Redis db at REDIS_URL is not usable (unreachable, or holds keys that are
    not the benchmark's), or None."""
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_timeout=3)
        client.ping()
        if client.dbsize() and not client.exists(REDIS_MARK):
            return (
                f"Redis db {REDIS_URL} is not empty and not this benchmark's: "
                "set PEERS_REDIS_URL to a free db"
            )
    except Exception as exc:
        return f"Redis at {REDIS_URL} unreachable: {exc}"
    return None


@contextlib.contextmanager
def fresh_redis_db() -> Iterator[str]:
    """FLUSHDB the benchmark's own Redis db before and after a run."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.set(REDIS_MARK, "1")
    try:
        yield REDIS_URL
    finally:
        client.flushdb()
        client.close()


# -- worker processes --------------------------------------------------------------


@dataclass
class Workers:
    """Worker processes of one run, each the leader of its own process group."""

    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]
    started: float  # time.time() just before the first was started

    def running(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def wait(self, timeout: float) -> bool:
        """Wait for all to exit by themselves; False on timeout."""
        deadline = time.monotonic() + timeout
        for p in self.procs:
            left = deadline - time.monotonic()
            try:
                p.wait(max(left, 0.0))
            except subprocess.TimeoutExpired:
                return False
        return True

    def stop(self) -> list[int | None]:
        """SIGTERM each, wait STOP_GRACE, then SIGKILL whatever is left of their groups
        (children included). Returns the exit codes (None: had to be killed)."""
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        clean = self.wait(STOP_GRACE)
        codes = [p.poll() for p in self.procs]
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)  # leftovers: children, forked horses
        if not clean:
            for p in self.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(5)
        return codes

    def log_tail(self, lines: int = 6) -> str:
        """The last lines of every worker's output, for an error message."""
        out = []
        for path in self.logs:
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").strip().splitlines()
                out.extend(text[-lines:])
        return " | ".join(out)[-1500:]


def start_workers(run: Run, commands: list[list[str]], extra_env: dict[str, str]) -> Workers:
    """Start the worker commands in benchmarks/peers, output to the run's temp dir."""
    env = {**run.env, **extra_env}
    procs, logs = [], []
    started = time.time()
    for n, argv in enumerate(commands):
        log = run.tmp / f"worker-{n}.log"
        with log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    argv,
                    cwd=PEERS_DIR,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        logs.append(log)
    return Workers(procs, logs, started)


def python(*args: str) -> list[str]:
    """A command run by this interpreter (the venv's)."""
    return [sys.executable, *args]


# -- the ledger --------------------------------------------------------------------


class Ledger:
    """Reads the handlers' ledger files incrementally (complete lines only)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._offsets: dict[str, int] = {}
        self.counts: dict[int, int] = {}
        self.first: dict[int, tuple[float, float]] = {}  # i -> (started, enqueued)
        self.started_min = math.inf
        self.started_max = -math.inf

    def poll(self) -> int:
        """Read what was appended since the last poll; the number of distinct jobs seen."""
        with os.scandir(self.directory) as entries:
            for entry in entries:
                offset = self._offsets.get(entry.name, 0)
                if entry.stat().st_size <= offset:
                    continue
                with open(entry.path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
                end = data.rfind(b"\n") + 1
                self._offsets[entry.name] = offset + end
                for line in data[:end].splitlines():
                    self._add(line)
        return len(self.counts)

    def _add(self, line: bytes) -> None:
        i_text, _job, started_text, enqueued_text = line.split()
        i, started = int(i_text), float(started_text)
        self.counts[i] = self.counts.get(i, 0) + 1
        if i not in self.first:
            self.first[i] = (started, float(enqueued_text))
        if i >= 0:  # not a warm-up job
            self.started_min = min(self.started_min, started)
            self.started_max = max(self.started_max, started)

    def has(self, i: int) -> bool:
        return i in self.counts

    def tally(self, expected: range) -> dict[str, int]:
        """Executions, jobs run more than once, extra executions, jobs never run."""
        wanted = [self.counts.get(i, 0) for i in expected]
        return {
            "executions": sum(wanted),
            "duplicates": sum(1 for c in wanted if c > 1),
            "extra_executions": sum(c - 1 for c in wanted if c > 1),
            "missing": sum(1 for c in wanted if c == 0),
            "unexpected": sum(c for i, c in self.counts.items() if i not in expected and i >= 0),
        }


# -- the machine -------------------------------------------------------------------


class CpuMeter:
    """How busy the whole machine was, and how much CPU our reaped worker processes
    (and their descendants) used, since it was made: to tell a run that shared the
    machine with someone else's work."""

    def __init__(self) -> None:
        self._busy, self._total = _proc_stat()
        self._children = _children_cpu()
        self._self = _self_cpu()
        self._services = _service_cpu()
        self._wall = time.monotonic()

    def read(self) -> dict[str, float]:
        busy, total = _proc_stat()
        wall = max(time.monotonic() - self._wall, 1e-9)
        cpus = os.cpu_count() or 1
        share = (busy - self._busy) / max(total - self._total, 1)
        machine = share * wall * cpus
        workers = _children_cpu() - self._children
        services = _service_cpu() - self._services
        harness = _self_cpu() - self._self
        return {
            "machine_cpu_pct": round(100.0 * share, 1),
            "machine_cpu_s": round(machine, 2),
            "workers_cpu_s": round(workers, 2),
            "services_cpu_s": round(services, 2),  # PostgreSQL and Redis servers
            "harness_cpu_s": round(harness, 2),
            # what none of the above accounts for: someone else's work on the machine
            "others_cpu_s": round(machine - workers - services - harness, 2),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }


def _proc_stat() -> tuple[int, int]:
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _self_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


SERVICES = ("postgres", "redis-server")


def _service_cpu() -> float:
    """CPU seconds used so far by the PostgreSQL and Redis servers: each top-level server
    process's own time and that of the children it reaped (ended backends), plus its
    live children's. A server restarted meanwhile makes this meaningless (it is noted)."""
    procs: dict[int, tuple[int, str, int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        rest = text[text.rindex(")") + 2 :].split()
        own = int(rest[11]) + int(rest[12])
        reaped = int(rest[13]) + int(rest[14])
        procs[int(entry)] = (int(rest[1]), comm, own, reaped)
    ticks = 0
    for pid, (ppid, comm, own, reaped) in procs.items():
        if comm not in SERVICES or procs.get(ppid, (0, ""))[1] == comm:
            continue  # not a server, or not its top-level process
        ticks += own + reaped
        ticks += sum(p[2] for p in procs.values() if p[0] == pid)
    return ticks / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- stats -------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100), linear between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    data = sorted(values)
    rank = (len(data) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


def versions() -> dict[str, str]:
    """Installed versions of every system (and drivers) in this run."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in (
        "onceq",
        "huey",
        "procrastinate",
        "pgqueuer",
        "celery",
        "kombu",
        "rq",
        "redis",
        "psycopg",
        "asyncpg",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "-"
    return out
