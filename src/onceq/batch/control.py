"""Starting, watching and cleaning up a batch: what `onceq batch run|clean` do.

`preflight` checks everything a batch needs before anything is created (a bad file, a
path that is not a repository, an unknown base, a dirty checkout of it, an agent that
does not exist: one line each). `submit` records the batch and starts its run in one
transaction; `run` also starts the worker processes and watches until the run ends.
"""

from __future__ import annotations

import ctypes
import json
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onceq.batch import git, pool
from onceq.batch.spec import BatchSpec, load
from onceq.batch.worker import ATTEMPTS, TASK
from onceq.batch.worker import app as batch_app
from onceq.errors import BatchError
from onceq.models import BatchRecord
from onceq.store import Store
from onceq.store.batches import NewBatch
from onceq.workflow import Workflow

WORKER_APP = "onceq.batch.worker:app"


@dataclass(frozen=True, slots=True)
class Prepared:
    spec: BatchSpec
    file_dir: Path  # relative paths of the file are from here
    repo: Path
    common: Path
    base_tip: str
    who: tuple[str, ...]  # `-c` options naming onceq as committer where nobody is named


def queue_of(name: str) -> str:
    """A batch's own queue (onceq.*: a worker serves it only when it names it)."""
    return f"onceq.batch.{name}"


def preflight(spec: BatchSpec, file: str | Path) -> Prepared:
    """Check the machine side of a batch: BatchError in one line for the first problem."""
    file_dir = Path(file).resolve().parent
    where = (file_dir / spec.repo).resolve()
    if not where.is_dir():
        raise BatchError(f"repo {spec.repo!r}: {where} is not a directory")
    found = git.git(where, "rev-parse", "--git-common-dir", read_only=True, check=False)
    if found.returncode != 0:
        raise BatchError(f"repo {spec.repo!r}: {where} is not a git repository")
    bare = git.out(where, "rev-parse", "--is-bare-repository") == "true"
    repo = where if bare else Path(git.out(where, "rev-parse", "--show-toplevel"))
    if not git.is_branch_name(repo, spec.base):
        raise BatchError(f"base {spec.base!r}: not a branch name (the base must be a branch "
                         "the merges can move, not a revision like main~1)")  # fmt: skip
    tip = git.rev(repo, f"refs/heads/{spec.base}")
    if tip is None:
        raise BatchError(f"base {spec.base!r}: no such branch in {repo}")
    for checkout in git.checkouts(repo, spec.base):
        changes = git.dirty(checkout)
        if changes:
            raise BatchError(
                f"the checkout of {spec.base} at {checkout} has uncommitted changes "
                f"({len(changes)}, e.g. {changes[0][3:]!r}): commit or stash them first"
            )
    _check_agent(spec.agent, repo)
    return Prepared(spec, file_dir, repo, git.common_dir(repo), tip, git.identity(repo))


def _check_agent(command: str, repo: Path) -> None:
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise BatchError(f"agent {command!r}: {exc}") from None
    program = words[0] if words else ""
    if not program or "$" in program or "=" in program:
        return  # an expansion or an assignment: the shell will say
    if _shell_knows(program):
        return  # a builtin or keyword (cd, set…), or found on PATH
    if "/" in program:
        if (
            not (Path(program).is_absolute() and Path(program).exists())
            and not (repo / program).exists()
        ):
            raise BatchError(f"agent command not found: {program!r} (it runs in the worktree)")
    else:
        raise BatchError(f"agent command not found: {program!r} is not on PATH")


def _shell_knows(word: str) -> bool:
    done = subprocess.run(["/bin/sh", "-c", 'command -v -- "$1"', "sh", word],
                          capture_output=True, check=False)  # fmt: skip
    return done.returncode == 0 and "/" not in word


def _make_run(spec: BatchSpec) -> Callable[[dict[int, list[str]]], tuple[str, str, Any, list[str]]]:
    def make(todo: dict[int, list[str]]) -> tuple[str, str, Any, list[str]]:
        workflow = Workflow(f"batch:{spec.name}", input=[f"b{k}" for k in todo])
        order = sorted(todo)
        for k, after in zip(order, [*order[1:], None], strict=True):
            workflow.step(f"batch-{k}", TASK, with_items=f"$input.b{k}",
                          args={"batch": spec.name, "number": "$item"},
                          next=[f"batch-{after}"] if after is not None else [])  # fmt: skip
        definition = workflow.definition.compile(batch_app)
        steps = {name: step.model_copy(update={"queue": queue_of(spec.name),
                                               "max_attempts": ATTEMPTS})
                 for name, step in definition.steps.items()}  # fmt: skip
        definition = definition.model_copy(update={"steps": steps})
        data = {f"b{k}": numbers for k, numbers in todo.items()}
        return definition.name, definition.model_dump_json(), data, list(definition.steps)

    return make


def submit(store: Store, prepared: Prepared, workers: int | None = None) -> tuple[int | None, bool]:
    """Record the batch (or take it up again) and start its run: (run id, or None when
    every task is merged already; whether the run is new)."""
    spec = prepared.spec
    slots = workers or spec.workers
    new = NewBatch(
        name=spec.name,
        repo=str(prepared.repo),
        base=spec.base,
        base_start=prepared.base_tip,
        # The repository's facts every task needs, found once here, not in each worker.
        definition=json.dumps(
            {
                "spec": spec.model_dump(),
                "dir": str(prepared.file_dir),
                "common": str(prepared.common),
                "who": prepared.who,
            }
        ),
        tasks=[
            {
                "number": t.number,
                "title": t.title,
                "batch_no": t.batch,
                "position": i,
                "branch": spec.branch(t.number),
            }
            for i, t in enumerate(spec.tasks)
        ],
        slots=[(i, str(pool.slot_path(prepared.common, spec.name, i))) for i in range(slots)],
    )
    return store.batch_submit(new, _make_run(spec))


def run(
    file: str | Path,
    store: Store,
    *,
    workers: int | None = None,
    progress: Callable[[BatchRecord], None] | None = None,
    poll: float = 0.2,
) -> BatchRecord:
    """Run a batch to its end with its own worker processes; the batch as it ended."""
    spec = load(file)
    prepared = preflight(spec, file)
    run_id, _ = submit(store, prepared, workers)
    if run_id is not None:
        with _workers(store.url, spec.name, workers or spec.workers, prepared.common):
            while True:
                record = _get(store, spec.name)
                if progress is not None:
                    progress(record)
                if record.run_status != "running":
                    break
                time.sleep(poll)
    store.batch_settle(spec.name)
    record = _get(store, spec.name)
    if progress is not None:
        progress(record)
    return record


class _workers:
    """`onceq worker` for the batch's queue, as a child process; drained at the end."""

    def __init__(self, url: str, name: str, processes: int, common: Path) -> None:
        log = pool.pool_root(common, name) / "workers.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.args = [sys.executable, "-m", "onceq", "worker", "--app", WORKER_APP,
                     "--url", url, "--processes", str(processes), "--concurrency", "1",
                     "--queue", queue_of(name), "--grace", "10"]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _workers:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL,
                                         preexec_fn=_drain_when_orphaned)  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _drain_when_orphaned() -> None:
    """In the worker pool's process, before it starts: SIGTERM (a drain) when the
    `batch run` that started it dies, however it dies (Linux's parent-death signal)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


def _get(store: Store, name: str) -> BatchRecord:
    record = store.batch_get(name)
    if record is None:
        raise BatchError(f"no batch named {name!r} in this store")
    return record


def clean(file: str | Path, store: Store, *, force: bool = False) -> tuple[int, int]:
    """Remove a batch's worktrees and branches and forget it: (bytes freed, branches)."""
    spec = load(file)
    record = _get(store, spec.name)
    if record.run_status == "running" and not force:
        raise BatchError(f"batch {spec.name!r} is still running (run {record.run_id}): "
                         "let it end, or pass --force")  # fmt: skip
    repo = Path(record.repo)
    if record.run_status == "running" and record.run_id is not None:
        store.run_cancel(record.run_id)
    common = git.common_dir(repo)
    freed = pool.remove_pool(repo, common, spec.name, record.worktrees)
    refs = git.out(repo, "for-each-ref", "--format=%(refname)", f"refs/heads/onceq/{spec.name}/")
    branches = [r for r in refs.splitlines() if r]
    for ref in branches:
        git.git(repo, "update-ref", "-d", ref)
    store.batch_delete(spec.name)
    return freed, len(branches)
