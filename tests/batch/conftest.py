"""Batch tests run the real thing: `onceq batch run` as a process, its worker
processes, a real git repository in a temp dir, and a scripted agent (agent.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).parent


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


class Project:
    """A repository with one commit on `main`, a store, and batch files beside it."""

    def __init__(self, root: Path, url: str) -> None:
        self.root, self.url = root, url
        self.repo = root / "repo"
        self.kills = root / "kills"
        self.kills.mkdir()
        self.repo.mkdir()
        git(self.repo, "init", "-q", "-b", "main")
        git(self.repo, "config", "user.name", "test")
        git(self.repo, "config", "user.email", "test@example.com")
        (self.repo / "README.md").write_text("# a project\n")
        (self.repo / "shared.txt").write_text("original\n")
        git(self.repo, "add", ".")
        git(self.repo, "commit", "-qm", "init")
        self.init = git(self.repo, "rev-parse", "HEAD")
        self.env = {**os.environ, "KILL_DIR": str(self.kills)}

    def together(self, changes: dict[str, str], **fields: object) -> list[dict[str, object]]:
        """Tasks whose first rounds run at the same time, from the same base tip: each
        waits, before making its change, until every one has started."""
        started = [self.kills / f"started-{n}" for n in changes]
        return [
            {"number": n, "title": f"task {n}", **fields, "implementation": "\n".join(
                [f"round 0: touch {self.kills / f'started-{n}'}"]
                + [f"round 0: wait-for {p}" for p in started] + [change])}
            for n, change in changes.items()
        ]  # fmt: skip

    def batch(self, name: str, tasks: list[dict[str, Any]], **options: Any) -> Path:
        document = {"name": name, "repo": "repo", "base": "main", "workers": 3,
                    "agent": f'{sys.executable} "$ONCEQ_BATCH_DIR/agent.py"',
                    "fix_rounds": 2, "timeout": 60, **options, "tasks": tasks}  # fmt: skip
        for script in ("agent.py", "killer.py"):
            (self.root / script).write_text((HERE / script).read_text())
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def onceq(self, *args: str, timeout: float = 180, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return subprocess.run(
            [sys.executable, "-m", "onceq", *args, "--url", self.url], cwd=self.root,
            env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def run(self, file: Path, *extra: str, code: int | None = 0, **kw: Any
            ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        done = self.onceq("batch", "run", str(file), *extra, **kw)
        if code is not None:
            assert done.returncode == code, done.stdout + done.stderr + self.worker_log(file)
        return done

    def worker_log(self, file: Path) -> str:
        name = yaml.safe_load(file.read_text())["name"]
        log = self.repo / ".git" / "onceq-worktrees" / name / "workers.log"
        return log.read_text()[-4000:] if log.exists() else ""

    def show(self, name: str) -> dict[str, Any]:
        done = self.onceq("batch", "show", name, "--json")
        assert done.returncode == 0, done.stderr
        document: dict[str, Any] = json.loads(done.stdout)
        return document

    def merged_tags(self) -> list[str]:
        """The Onceq-Task trailers on main since the first commit, oldest first."""
        text = git(self.repo, "log", "--reverse", "--format=%(trailers:key=Onceq-Task,valueonly)",
                   f"{self.init}..main")  # fmt: skip
        return [line.strip() for line in text.splitlines() if line.strip()]

    def on_main(self, path: str) -> str:
        return git(self.repo, "show", f"main:{path}")

    def status(self) -> str:
        return git(self.repo, "status", "--porcelain")


@pytest.fixture
def project(tmp_path: Path, store_url: str) -> Project:
    return Project(tmp_path, store_url)
