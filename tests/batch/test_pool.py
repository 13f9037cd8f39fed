"""The worktree pool: slots repaired whatever state they are found in, worktrees made
one at a time per repository, and `onceq batch clean` taking it all away."""

from __future__ import annotations

import subprocess
import sys
import time

from onceq.batch import pool
from tests.batch.conftest import Project, git
from tests.helpers import eventually, sql_rows


def test_a_resumed_batch_repairs_deleted_and_locked_worktrees(project: Project) -> None:
    tasks = project.together({"1": "write one.txt 1", "2": "fail"})  # two slots in use
    file = project.batch("repair", tasks, workers=2, fix_rounds=0)
    project.run(file, code=1)
    assert [t["status"] for t in project.show("repair")["tasks"]] == ["merged", "failed"]
    slots = sorted((project.repo / ".git" / "onceq-worktrees" / "repair").glob("slot-*"))
    assert len(slots) == 2
    subprocess.run(["rm", "-rf", str(slots[0])], check=True)  # deleted by hand
    admin = git(slots[1], "rev-parse", "--absolute-git-dir")
    (project.root / admin / "index.lock").write_text("")  # left by a killed git
    tasks[1] = {**tasks[1], "implementation": "write two.txt 2"}
    file = project.batch("repair", tasks, workers=2, fix_rounds=0)  # fixed, same name
    project.run(file)
    assert [t["status"] for t in project.show("repair")["tasks"]] == ["merged", "merged"]
    assert sorted(project.merged_tags()) == ["repair/1", "repair/2"]  # 1 not merged again
    assert project.on_main("two.txt") == "2"
    listing = git(project.repo, "worktree", "list", "--porcelain")
    assert "prunable" not in listing


def test_worktrees_are_created_one_at_a_time(project: Project) -> None:
    tasks = [{"number": str(i), "title": f"t{i}", "implementation": f"write f{i}.txt {i}"}
             for i in range(6)]  # fmt: skip
    file = project.batch("serial", tasks, workers=6)
    common = project.repo / ".git"
    with pool.repo_lock(common):  # as another worktree creation in this repository would
        proc = subprocess.Popen(
            [sys.executable, "-m", "onceq", "batch", "run", str(file), "--url", project.url],
            cwd=project.root, env=project.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        query = "SELECT count(*) FROM onceq_jobs WHERE status = 'running'"

        def running() -> bool:
            try:
                return int(sql_rows(project.url, query)[0][0]) == 6  # a worker each
            except Exception:  # the store is not made yet
                return False

        eventually(running, timeout=60, every=0.05)
        time.sleep(0.5)  # they hold their slots; none may make its worktree yet
        assert git(project.repo, "worktree", "list").count("\n") == 0
        assert {t["status"] for t in project.show("serial")["tasks"]} == {"pending"}
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert len(project.merged_tags()) == 6
    assert git(project.repo, "worktree", "list").count("\n") == 6  # main and six slots
    attempts = sql_rows(project.url, "SELECT attempts FROM onceq_jobs")
    assert [a for (a,) in attempts] == [1] * 6  # no creation failed and was retried


def test_clean_removes_the_worktrees_and_branches_and_forgets_the_batch(project: Project) -> None:
    tasks = [{"number": str(i), "title": f"t{i}", "implementation": f"write f{i}.txt {i}"}
             for i in range(2)]  # fmt: skip
    file = project.batch("tidy", tasks, workers=2)
    project.run(file)
    assert git(project.repo, "for-each-ref", "refs/heads/onceq/tidy").count("\n") == 1
    done = project.onceq("batch", "clean", str(file))
    assert done.returncode == 0, done.stderr
    assert "MB freed" in done.stdout and "2 branch(es)" in done.stdout
    assert not (project.repo / ".git" / "onceq-worktrees" / "tidy").exists()
    assert git(project.repo, "for-each-ref", "refs/heads/onceq") == ""
    assert git(project.repo, "worktree", "list").count("\n") == 0
    assert project.on_main("f1.txt") == "1"  # what was merged stays merged
    shown = project.onceq("batch", "show", "tidy")
    assert shown.returncode == 2 and "no batch named 'tidy'" in shown.stderr
    listed = project.onceq("batch", "list", "--json")
    assert listed.returncode == 0 and "tidy" not in listed.stdout
