"""Defects a review found, each reproduced: the base's compare and swap under a checkout
that was rewound, verification on a clean checkout, background children, scopes."""

from __future__ import annotations

import json
import sys

from tests.batch.conftest import Project, git


def test_a_base_rewound_during_a_merge_is_merged_onto_not_overwritten(project: Project) -> None:
    # Task 2's post-merge verification (its second call) rewinds main by hand, dropping
    # task 1's merge: the swap from the old tip must fail, and task 2 merge onto the
    # rewound tip — not fast-forward over it, which brought task 1 back.
    counter = project.kills / "calls"
    rewind = (f'echo x >> {counter}; if [ "$(wc -l < {counter})" -eq 2 ]; then '
              f"git -C {project.repo} reset -q --hard HEAD~1; fi")  # fmt: skip
    tasks = [
        {"number": "1", "title": "one", "implementation": "write one.txt 1"},
        {"number": "2", "title": "two",
         "implementation": "wait-merged one.txt\nwrite two.txt 2",
         "verification_steps": [rewind]},
    ]  # fmt: skip
    project.run(project.batch("rewind", tasks, workers=2))
    assert project.merged_tags() == ["rewind/2"]  # what the user dropped stays dropped
    files = git(project.repo, "ls-tree", "--name-only", "main").split()
    assert "two.txt" in files and "one.txt" not in files
    assert project.status() == ""


def test_verification_sees_only_the_commit_not_ignored_leftovers(project: Project) -> None:
    (project.repo / ".gitignore").write_text("build/\n")
    git(project.repo, "add", ".gitignore")
    git(project.repo, "commit", "-qm", "ignore build")
    tasks = [{"number": "1", "title": "t",
              "implementation": "write build/artifact x\nwrite a.txt a",
              "verification_steps": ["test -f build/artifact"]}]  # fmt: skip
    project.run(project.batch("ignored", tasks, fix_rounds=0), code=1)
    (task,) = project.show("ignored")["tasks"]
    assert task["status"] == "failed" and "test -f build/artifact" in task["error"]
    assert project.merged_tags() == []


def test_a_background_child_does_not_hold_a_step_past_its_end(project: Project) -> None:
    tasks = [{"number": "1", "title": "t", "implementation": "write a.txt a",
              "verification_steps": ["sleep 300 & echo started"]}]  # fmt: skip
    project.run(project.batch("background", tasks, timeout=60), timeout=120)  # a hang fails
    assert project.merged_tags() == ["background/1"]


def test_a_glob_in_files_stays_inside_its_folder(project: Project) -> None:
    tasks = [{"number": "1", "title": "t", "files": ["src/*.txt"],
              "implementation": "write src/ok.txt ok\nwrite src/deep/evil.txt no"}]  # fmt: skip
    project.run(project.batch("glob", tasks, fix_rounds=0), code=1)
    (task,) = project.show("glob")["tasks"]
    assert "src/deep/evil.txt" in task["error"] and "src/ok.txt" not in task["error"]


def test_an_agent_command_may_start_with_a_shell_builtin(project: Project) -> None:
    tasks = [{"number": "1", "title": "t", "implementation": "write a.txt a"}]
    file = project.batch("builtin", tasks)
    text = file.read_text().replace("agent: ", "agent: cd . && ", 1)
    file.write_text(text)
    project.run(file)
    assert project.merged_tags() == ["builtin/1"]


def test_a_failed_batch_whose_run_was_pruned_is_still_shown_failed(project: Project) -> None:
    # Retention deletes the ended run; the batch's status then came from a missing run
    # and read "merged", in `batch show` and `batch list`, for a batch that merged nothing.
    tasks = [{"number": "1", "title": "broken", "implementation": "fail"}]
    project.run(project.batch("pruned", tasks, fix_rounds=0), code=1)
    assert project.show("pruned")["status"] == "failed"
    pruned = project.onceq("prune", "--older-than", "0s")
    assert pruned.returncode == 0 and "1 workflow run" in pruned.stdout, pruned.stdout
    shown = project.show("pruned")
    assert shown["run_id"] is None and shown["tasks"][0]["status"] == "failed"
    assert shown["status"] == "failed"
    listed = json.loads(project.onceq("batch", "list", "--json").stdout)
    assert [b["status"] for b in listed] == ["failed"]


def test_an_agent_that_checks_the_base_out_does_not_get_onceqs_commit_onto_it(
    project: Project,
) -> None:
    """Where the user's checkout is on another branch, an agent can check the base out
    in its worktree. onceq commits what it left on a detached HEAD: the base moves only
    by a merge, never by an unreviewed round."""
    git(project.repo, "checkout", "-qb", "dev")  # the user's own checkout is elsewhere
    agent = project.root / "checkout-agent.sh"
    agent.write_text("git checkout -q main\necho x > mine.txt\n")
    tasks = [{"number": "1", "title": "one"}]
    file = project.batch("co", tasks, agent=f"sh {agent}", verify=["false"], fix_rounds=0)
    project.run(file, code=1)
    assert git(project.repo, "rev-parse", "main") == project.init  # nothing unverified on it
    (task,) = project.show("co")["tasks"]
    assert task["status"] == "failed" and "verification" in task["error"]
    assert "mine.txt" in git(project.repo, "ls-tree", "--name-only", "onceq/co/1").split()


KILL_WITH_LOCK = r"""
import os, signal, subprocess, sys
from pathlib import Path
sys.path.insert(0, os.environ["ONCEQ_BATCH_DIR"])
from killer import worker_pid
folder = Path(os.environ["KILL_DIR"])
counter = folder / "lock.calls"
calls = len(counter.read_text()) if counter.exists() else 0
counter.write_text("x" * (calls + 1))
if calls + 1 == int(sys.argv[1]):
    found = subprocess.run(["git", "rev-parse", "--git-dir"], capture_output=True, text=True)
    Path(found.stdout.strip(), "index.lock").write_text("")  # as a killed git leaves it
    os.kill(worker_pid(), signal.SIGKILL)
    signal.pause()
"""


def test_a_task_taken_up_at_its_merge_repairs_the_slot_its_killed_holder_left(
    project: Project,
) -> None:
    """Killed during its post-merge verification with an index.lock left in its slot:
    the attempt that takes the approved task up again cleans the slot first (every
    attempt failed on the lock, and the task ended failed)."""
    (project.root / "lock.py").write_text(KILL_WITH_LOCK)
    step = f'{sys.executable} "$ONCEQ_BATCH_DIR/lock.py" 2'  # its review, then the merge's
    tasks = [
        {"number": "1", "title": "killed", "verification_steps": [step],
         "implementation": "append log.txt one\nwait-merged log2.txt"},
        {"number": "2", "title": "bystander", "implementation": "append log2.txt two"},
    ]  # fmt: skip
    file = project.batch("lock", tasks, workers=2)
    project.run(file)
    assert (project.kills / "lock.calls").read_text() == "xxx"  # killed once, then again
    assert sorted(project.merged_tags()) == ["lock/1", "lock/2"]
    assert project.status() == ""
