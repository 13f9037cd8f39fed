"""git, as the batch runner uses it: one function per thing it asks of git.

Read-only calls run with GIT_OPTIONAL_LOCKS=0, so that a `git status` here never takes
the index lock from under an agent working in the same worktree. Nothing here moves a
branch that a worktree has checked out: worktrees stay on a detached HEAD and branches
are written with update-ref, so no branch is ever "already checked out" elsewhere.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from onceq.errors import OnceqError

IDENTITY = ("-c", "user.name=onceq", "-c", "user.email=onceq@localhost")


class GitError(OnceqError):
    """A git command failed (worth another attempt of the task: a lock, a full disk)."""


def git(
    cwd: str | Path,
    *args: str,
    read_only: bool = False,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):  # the caller's own git, if any
        env.pop(var, None)
    if read_only:
        env["GIT_OPTIONAL_LOCKS"] = "0"
    done = subprocess.run(
        [_executable(), *args],
        cwd=cwd,
        env=env,
        input=input,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise GitError(
            f"git {args[0]} failed in {cwd}: {detail[-1] if detail else done.returncode}"
        )
    return done


@functools.cache
def _executable() -> str:
    """git's path, looked up once (not along PATH at every call)."""
    return shutil.which("git") or "git"


def out(cwd: str | Path, *args: str) -> str:
    """The trimmed output of a read-only git command."""
    return git(cwd, *args, read_only=True).stdout.strip()


def common_dir(repo: str | Path) -> Path:
    """The repository's shared .git directory (the same from any of its worktrees)."""
    return Path(repo, out(repo, "rev-parse", "--git-common-dir")).resolve()


@functools.cache
def common_dir_cached(repo: Path) -> Path:
    """common_dir, asked once per process and repository (it does not move)."""
    return common_dir(repo)


@functools.cache
def identity_cached(repo: Path) -> tuple[str, ...]:
    return identity(repo)


def is_branch_name(cwd: str | Path, name: str) -> bool:
    """Whether `name` is a branch's name as git writes refs, not an expression that
    merely resolves to a commit (`main~1`, `main^`): one the merge could not move."""
    done = git(cwd, "check-ref-format", f"refs/heads/{name}", read_only=True, check=False)
    return done.returncode == 0


def rev(cwd: str | Path, ref: str) -> str | None:
    found = git(cwd, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", read_only=True,
                check=False)  # fmt: skip
    return found.stdout.strip() or None if found.returncode == 0 else None


def identity(repo: str | Path) -> tuple[str, ...]:
    """`-c` options naming onceq as the committer where the repository names nobody."""
    known = git(repo, "config", "user.email", read_only=True, check=False).stdout.strip()
    return () if known else IDENTITY


def commit_all(worktree: str | Path, message: str, who: Sequence[str]) -> bool:
    """Commit whatever is left in the worktree; False when nothing was. (Without the
    `git maintenance run --auto` a commit starts after itself: a process more on every
    round, for housekeeping the repository's own next commit or fetch does anyway.)"""
    git(worktree, "add", "-A")
    done = git(worktree, *who, "-c", "maintenance.auto=false", "commit", "-q", "--no-verify",
               "-m", message, check=False)  # fmt: skip
    if done.returncode == 0:
        return True
    if "nothing to commit" in done.stdout + done.stderr:
        return False
    raise GitError(f"git commit failed in {worktree}: {(done.stderr or done.stdout).strip()}")


def changed_files(cwd: str | Path, base: str, head: str) -> list[str]:
    """The files `head` changes since it left `base` (three dots: from their merge base)."""
    text = out(cwd, "diff", "--name-only", "--no-renames", f"{base}...{head}")
    return [line for line in text.splitlines() if line]


def set_ref(cwd: str | Path, ref: str, new: str, old: str | None = None) -> bool:
    """Point `ref` at `new`; with `old`, only if it still points there (compare and swap).
    False when it had moved."""
    args = ["update-ref", ref, new] + ([old] if old is not None else [])
    done = git(cwd, *args, check=False)
    if done.returncode == 0:
        return True
    if old is not None and rev(cwd, ref) != old:
        return False
    raise GitError(f"git update-ref {ref} failed: {done.stderr.strip()}")


def merge_tree(cwd: str | Path, base: str, head: str) -> tuple[str | None, str]:
    """The tree of merging `head` onto `base`, without touching any checkout: (tree, "")
    or (None, what conflicted)."""
    done = git(cwd, "merge-tree", "--write-tree", "--messages", base, head, read_only=True,
               check=False)  # fmt: skip
    if done.returncode == 0:
        return done.stdout.split()[0], ""
    if done.returncode == 1:
        lines = done.stdout.splitlines()[1:]  # after the tree: conflicted files, messages
        conflicted = sorted({ln.split("\t", 1)[1] for ln in lines if "\t" in ln})
        messages = [ln for ln in lines if ln and "\t" not in ln]
        return None, "conflict in " + ", ".join(conflicted) + "\n" + "\n".join(messages)
    raise GitError(f"git merge-tree failed: {done.stderr.strip()}")


def commit_tree(cwd: str | Path, tree: str, parent: str, message: str, who: Sequence[str]) -> str:
    return git(
        cwd, *who, "commit-tree", tree, "-p", parent, "-F", "-", input=message
    ).stdout.strip()


def tasks_merged(cwd: str | Path, tip: str, since: str) -> dict[str, str]:
    """The `Onceq-Task` trailers of the commits after `since` up to `tip`: {tag: commit}."""
    fmt = "%H%x00%(trailers:key=Onceq-Task,valueonly,separator=%x01)"
    text = out(cwd, "log", f"--format={fmt}", tip, f"^{since}")
    found: dict[str, str] = {}
    for line in text.splitlines():
        commit, _, tags = line.partition("\x00")
        for tag in filter(None, (t.strip() for t in tags.split("\x01"))):
            found.setdefault(tag, commit)
    return found


def revs(cwd: str | Path, *refs: str) -> list[str]:
    """Several commits or trees (`x^{tree}`) in one call; GitError if one is missing.
    (Full ref names only, as onceq writes them: nothing here separates them from paths.)"""
    return out(cwd, "rev-parse", *refs).split()


def checkouts(repo: str | Path, branch: str) -> list[Path]:
    """Every working tree that has `branch` checked out (the repository's own, or a
    linked worktree of the user's; onceq's own stay detached)."""
    return [path for path, _ in _checkouts(repo, branch)]


def _checkouts(repo: str | Path, branch: str) -> list[tuple[Path, str]]:
    """checkouts, with the commit each is at (the branch's tip, as git read it)."""
    text = out(repo, "worktree", "list", "--porcelain")
    found, path, head = [], None, ""
    for line in text.splitlines():
        if line.startswith("worktree "):
            path, head = Path(line.removeprefix("worktree ")), ""
        elif line.startswith("HEAD "):
            head = line.removeprefix("HEAD ")
        elif line == f"branch refs/heads/{branch}" and path is not None:
            found.append((path, head))
    return found


def dirty(worktree: str | Path) -> list[str]:
    """Uncommitted changes in a working tree (`git status --porcelain` lines)."""
    text = git(worktree, "status", "--porcelain", "--untracked-files=normal", read_only=True).stdout
    return [line for line in text.splitlines() if line]


def advance(repo: str | Path, branch: str, old: str, new: str, since: str) -> tuple[bool, str]:
    """Move `branch` from `old` to `new` only if it is still at `old` (compare and swap),
    and every checkout of it along with it. (False, "") when it had moved; (False, why)
    when a checkout of it has local changes in the way (nothing is moved then: the
    base is never moved under a checkout that cannot follow)."""
    found = _checkouts(repo, branch)
    if any(tip != old for _, tip in found):
        return False, ""  # moved already: nothing to bring any checkout to
    trees = [tree for tree, _ in found]  # none: the swap below is the only check needed
    for tree in trees:
        problem = catch_up(tree, old, since)
        if problem is None:
            dry = git(tree, "read-tree", "-n", "-m", "-u", old, new, check=False)
            problem = None if dry.returncode == 0 else _last_line(dry)
        if problem is not None:
            return False, (f"the checkout of {branch} at {tree} has local changes in the "
                           f"way ({problem}): commit or stash them")  # fmt: skip
    if not set_ref(repo, f"refs/heads/{branch}", new, old):
        return False, ""
    for tree in trees:
        git(tree, "read-tree", "-m", "-u", old, new, check=False)  # checked just above
    return True, ""


def catch_up(tree: str | Path, tip: str, since: str) -> str | None:
    """Bring a checkout whose index is still at an earlier tip of its branch (a worker
    died between moving the branch and moving the checkout) to `tip`; None when it is
    there, else what is in the way. Only tips onceq made count: from `since` on."""

    def at(commit: str) -> bool:
        return git(tree, "diff-index", "--cached", "--quiet", commit, read_only=True,
                   check=False).returncode == 0  # fmt: skip

    if at(tip):
        return None
    for commit in [*out(tree, "rev-list", "--first-parent", tip, f"^{since}").split()[1:], since]:
        if at(commit):
            done = git(tree, "read-tree", "-m", "-u", commit, tip, check=False)
            return None if done.returncode == 0 else _last_line(done)
    return "its index holds staged changes"


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit {done.returncode}"
