"""The worktree pool: `workers` git worktrees per batch, made once and reused.

A slot is a row in the store, held by a job's lease (store.batch_slot_take). Whoever
takes a slot resets it before use, whatever state it is found in: a slot whose holder
died may hold half a change, a stale `index.lock`, or nothing at all (deleted by hand).
Worktrees are created one at a time per repository, under a file lock: concurrent
`git worktree add` calls race on the repository's config lock and leave orphans.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from onceq.batch import git
from onceq.errors import LeaseLost

POOL_DIR = "onceq-worktrees"  # under the repository's .git: out of its working tree


def pool_root(common_dir: Path, batch: str) -> Path:
    return common_dir / POOL_DIR / batch


def slot_path(common_dir: Path, batch: str, slot: int) -> Path:
    return pool_root(common_dir, batch) / f"slot-{slot}"


@contextmanager
def repo_lock(common_dir: Path) -> Iterator[None]:
    """One worktree creation or removal at a time in this repository (all processes)."""
    with _flock(common_dir / POOL_DIR / ".lock", lambda: False):
        yield


@contextmanager
def merge_lock(
    common_dir: Path,
    batch: str,
    should_stop: Callable[[], bool],
    meanwhile: Callable[[], object] = lambda: None,
) -> Iterator[None]:
    """The machine-local side of a batch's merge queue: whoever waits for the turn gets
    it the moment its holder lets go (or dies: the kernel lets go for it), without
    polling the store. The store's turn, fenced by the job's lease, stays the rule.
    `meanwhile` is called between looks at a busy lock."""
    with _flock(pool_root(common_dir, batch) / ".merge.lock", should_stop, meanwhile):
        yield


@contextmanager
def ahead_lock(common_dir: Path, batch: str) -> Iterator[bool]:
    """Whether this task may merge ahead now (runner._speculate): one at a time."""
    with open(pool_root(common_dir, batch) / ".ahead.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def announce_tip(common_dir: Path, batch: str, new: str) -> None:
    """Say which commit the merge turn's holder is about to move the base to, so that
    those waiting can merge onto it and verify that meanwhile (a hint only: whoever
    uses it checks that the base is really there)."""
    path = pool_root(common_dir, batch) / ".next-tip"
    temporary = path.with_suffix(f".{os.getpid()}")
    temporary.write_text(new)
    temporary.replace(path)


def announced_tip(common_dir: Path, batch: str) -> str | None:
    try:
        return (pool_root(common_dir, batch) / ".next-tip").read_text().strip() or None
    except OSError:
        return None


@contextmanager
def _flock(
    path: Path, should_stop: Callable[[], bool], meanwhile: Callable[[], object] = lambda: None
) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if should_stop():
                    raise LeaseLost(f"lost the lease while waiting for {path.name}") from None
                meanwhile()
                time.sleep(0.001)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare(repo: Path, common_dir: Path, path: Path, start: str) -> None:
    """Make `path` a clean worktree on a detached HEAD at `start`."""
    if not _usable(path):
        with repo_lock(common_dir):
            if path.exists():
                _remove(repo, path)  # half made or broken: start again
            path.parent.mkdir(parents=True, exist_ok=True)
            # --force: a worktree deleted by hand is still registered at this path.
            # --no-checkout: only the registration needs the lock, not the files.
            git.git(repo, "worktree", "add", "-q", "--force", "--detach", "--no-checkout",
                    str(path), start)  # fmt: skip
        git.git(path, "checkout", "-q", "-f", "--detach", start)
        return
    (_admin(path) / "index.lock").unlink(missing_ok=True)  # its writer is gone: ours now
    reset(path, start)


def reset(path: Path, start: str) -> None:
    """Throw away everything in the worktree and check `start` out (detached)."""
    git.git(path, "checkout", "-q", "-f", "--detach", start)
    clean(path)


def clean(path: Path) -> None:
    """Remove every file git does not track, ignored ones included."""
    git.git(path, "clean", "-q", "-f", "-f", "-d", "-x")


def detach(path: Path) -> None:
    """Put a worktree whose HEAD an agent pointed at a branch back on a detached HEAD,
    its files and index kept: onceq's commit then moves no branch (not the base, which
    an agent can check out where the user's own checkout is elsewhere)."""
    if (_admin(path) / "HEAD").read_text().startswith("ref:"):
        git.git(path, "checkout", "-q", "--detach")


def head(path: Path) -> str:
    """The commit a worktree is at: read from its HEAD file while it is detached (as
    onceq keeps it), from git otherwise (an agent may have checked a branch out)."""
    text = (_admin(path) / "HEAD").read_text().strip()
    if not text.startswith("ref:") and len(text) in (40, 64):
        return text
    found = git.rev(path, "HEAD")
    if found is None:
        raise git.GitError(f"the worktree at {path} has no commit checked out")
    return found


def _admin(path: Path) -> Path:
    """A worktree's own git folder, from its `.git` file ("gitdir: …")."""
    text = (path / ".git").read_text().strip()
    return (path / text.removeprefix("gitdir:").strip()).resolve()


def _usable(path: Path) -> bool:
    """A worktree git still knows: its .git file points at its admin folder, and that
    folder points back at it."""
    try:
        admin = _admin(path)
        back = Path((admin / "gitdir").read_text().strip()).parent
    except OSError:
        return False
    return back.resolve() == path.resolve() and (admin / "HEAD").is_file()


def _remove(repo: Path, path: Path) -> None:
    git.git(repo, "worktree", "remove", "--force", "--force", str(path), check=False)
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
    git.git(repo, "worktree", "prune")


def remove_pool(repo: Path, common_dir: Path, batch: str, paths: list[str]) -> int:
    """Remove a batch's worktrees; the bytes freed."""
    root = pool_root(common_dir, batch)
    freed = _size(root)
    with repo_lock(common_dir):
        for p in paths:
            _remove(repo, Path(p))
        shutil.rmtree(root, ignore_errors=True)
        git.git(repo, "worktree", "prune")
    return freed


def _size(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total
