"""Batches end to end: real repositories, real worker processes, a scripted agent."""

from __future__ import annotations

import sys
import threading
from datetime import datetime
from pathlib import Path

from tests.batch.conftest import Project, git
from tests.helpers import eventually, sql_rows


def test_three_tasks_on_three_workers_are_merged_once_each(project: Project) -> None:
    tasks = project.together({f"1.{i}": f"write src/t{i}.txt change {i}" for i in (1, 2, 3)})
    file = project.batch("three", tasks, verify=["test -f README.md"])
    project.run(file)
    assert sorted(project.merged_tags()) == ["three/1.1", "three/1.2", "three/1.3"]
    # Every commit onceq wrote on the base carries its trailer (one commit per task).
    assert git(project.repo, "rev-list", "--count", f"{project.init}..main") == "3"
    for i in (1, 2, 3):
        assert project.on_main(f"src/t{i}.txt") == f"change {i}"
        assert (project.repo / f"src/t{i}.txt").read_text() == f"change {i}\n"  # it moved
    assert project.status() == ""  # the base's own checkout followed, and is clean
    shown = project.show("three")
    assert shown["status"] == "merged"
    for t in shown["tasks"]:
        assert (t["status"], t["rounds"], t["error"]) == ("merged", 1, None)
        assert t["branch"] == f"onceq/three/{t['number']}"
        assert git(project.repo, "rev-parse", "--verify", t["branch"])
        assert t["started_at"] and t["merged_at"] and t["worktree"]
    worktrees = {t["worktree"] for t in shown["tasks"]}
    assert len(worktrees) == 3  # in parallel, each in its own slot
    # Every task's job ran once: no claim race, no git failure retried.
    attempts = sql_rows(project.url, "SELECT attempts FROM onceq_jobs WHERE task = ?",
                        ("onceq.batch.task",))  # fmt: skip
    assert sorted(a for (a,) in attempts) == [1, 1, 1]


def test_a_batch_starts_only_once_every_task_of_the_one_before_is_merged(project: Project) -> None:
    tasks = [
        {"number": "1.1", "title": "a", "implementation": "write a.txt a\nsleep 0.5"},
        {"number": "1.2", "title": "b", "implementation": "write b.txt b\nsleep 0.2"},
        {"number": "2.1", "title": "c", "batch": 2, "implementation": "write c.txt c"},
        {"number": "3.1", "title": "d", "batch": 3, "implementation": "write d.txt d"},
    ]
    project.run(project.batch("ordered", tasks))
    shown = {t["number"]: t for t in project.show("ordered")["tasks"]}
    at = {n: (datetime.fromisoformat(t["started_at"]), datetime.fromisoformat(t["merged_at"]))
          for n, t in shown.items()}  # fmt: skip
    assert at["2.1"][0] >= max(at["1.1"][1], at["1.2"][1])
    assert at["3.1"][0] >= at["2.1"][1]
    assert project.merged_tags()[2:] == ["ordered/2.1", "ordered/3.1"]


def test_a_failed_verification_goes_back_to_the_agent_with_its_output(project: Project) -> None:
    tasks = [
        {
            "number": "1",
            "title": "fix it",
            "implementation": "\n".join(
                [
                    "round 0: write result.txt bad",
                    "round 1: feedback feedback.txt",
                    "round 1: write result.txt good",
                ]
            ),
            "verification_steps": [
                "grep -q good result.txt || (echo 'result is not good'; exit 1)"
            ],
        }
    ]
    project.run(project.batch("verify", tasks))
    (task,) = project.show("verify")["tasks"]
    assert (task["status"], task["rounds"]) == ("merged", 2)
    assert project.on_main("result.txt") == "good"
    feedback = project.on_main("feedback.txt")  # the agent wrote what it was told
    assert "result is not good" in feedback and "grep -q good" in feedback


def test_a_change_outside_its_files_fails_review_and_names_them(project: Project) -> None:
    tasks = [
        {
            "number": "1",
            "title": "scoped",
            "files": ["src/"],
            "implementation": "write src/ok.txt fine\nwrite other/leak.txt oops",
        }
    ]
    done = project.run(project.batch("scope", tasks, fix_rounds=0), code=1)
    (task,) = project.show("scope")["tasks"]
    assert task["status"] == "failed"
    assert "other/leak.txt" in task["error"] and "src/ok.txt" not in task["error"]
    assert "other/leak.txt" in done.stdout
    assert project.merged_tags() == []
    assert git(project.repo, "rev-parse", "main") == project.init  # nothing landed


def test_tasks_that_conflict_are_merged_one_after_the_other(project: Project) -> None:
    tasks = project.together({"a": "write shared.txt a", "b": "write shared.txt b"})
    project.run(project.batch("conflict", tasks))
    shown = {t["number"]: t for t in project.show("conflict")["tasks"]}
    assert sorted(t["rounds"] for t in shown.values()) == [1, 2]  # the second was sent back
    second = max(shown.values(), key=lambda t: t["rounds"])
    assert project.on_main("shared.txt") == second["number"]  # redone on the new base
    assert sorted(project.merged_tags()) == ["conflict/a", "conflict/b"]
    results = sql_rows(project.url, "SELECT result FROM onceq_jobs WHERE task = ?",
                       ("onceq.batch.task",))  # fmt: skip
    left = [r for (r,) in results if "merge conflict" in str(r)]
    assert len(left) == 1 and "shared.txt" in str(left[0])


def test_a_conflict_with_no_round_left_fails_and_lands_nothing_of_it(project: Project) -> None:
    tasks = project.together({"a": "write shared.txt a", "b": "write shared.txt b"})
    done = project.run(project.batch("noround", tasks, fix_rounds=0), code=1)
    shown = {t["number"]: t for t in project.show("noround")["tasks"]}
    statuses = sorted(t["status"] for t in shown.values())
    assert statuses == ["failed", "merged"]
    failed = next(t for t in shown.values() if t["status"] == "failed")
    assert "merge conflict" in failed["error"] and "shared.txt" in failed["error"]
    assert "failed" in done.stdout
    assert len(project.merged_tags()) == 1


def test_when_a_batch_fails_the_next_says_why_it_never_started(project: Project) -> None:
    tasks = [
        {"number": "1", "title": "broken", "implementation": "fail"},
        {"number": "2", "title": "later", "batch": 2, "implementation": "write b.txt b"},
    ]
    project.run(project.batch("stops", tasks, fix_rounds=0), code=1)
    first, later = project.show("stops")["tasks"]
    assert (first["status"], later["status"]) == ("failed", "pending")
    assert "exit 3" in first["error"]
    assert later["error"].startswith("not started: step 'batch-1' failed")
    assert project.merged_tags() == []


def test_a_task_that_kills_every_worker_ends_failed_not_in_progress(project: Project) -> None:
    tasks = [{"number": "1", "title": "deadly", "implementation": "kill-worker-always"}]
    project.run(project.batch("deadly", tasks, workers=1), code=1, timeout=300)
    (task,) = project.show("deadly")["tasks"]
    assert task["status"] == "failed"
    assert "died" in task["error"]
    runs = sql_rows(project.url, "SELECT attempts, status FROM onceq_jobs")
    assert runs == [(4, "failed")]  # every attempt spent, then no more


def test_a_task_waiting_for_the_merge_turn_verifies_its_merge_onto_the_announced_tip(
    project: Project,
) -> None:
    """While one task holds the turn (here held 2 s before its swap), the other merges
    onto the commit it announced and verifies that; at its own turn the base is there,
    and the swap is all that is left: one verification of its merge commit, made before
    the first task's swap."""
    log = project.root / "verified.log"
    tasks = project.together({"1": "write one.txt 1", "2": "write two.txt 2"})
    step = f'echo "$ONCEQ_TASK_NUMBER $(git rev-parse HEAD) $(git rev-parse main)" >> {log}'
    file = project.batch("ahead", tasks, workers=2, verify=[step])
    env = {"ONCEQ_FAULTS": "batch.merge.before_swap=delay", "ONCEQ_FAULTS_DELAY": "2",
           "ONCEQ_FAULTS_ONCE": str(project.kills)}  # fmt: skip
    project.run(file, env=env)
    assert sorted(project.merged_tags()) == ["ahead/1", "ahead/2"]
    first, last = git(project.repo, "rev-parse", "main^"), git(project.repo, "rev-parse", "main")
    assert git(project.repo, "rev-parse", "main^^") == project.init
    lines = [line.split() for line in log.read_text().splitlines()]
    of_last = [main for _, head, main in lines if head == last]
    # Verified once, while the base was still where it was before the first swap.
    assert of_last == [project.init], lines
    # (The first one's merge is its own reviewed commit: verified once, in review.)
    assert [main for _, head, main in lines if head == first] == [project.init], lines
    assert project.status() == ""


# A verification step that says what it verifies: the task's own commit (review), a
# merge onto the base's tip (merge: at the task's turn) or onto another commit (ahead).
# Arguments: the log, how long a merge ahead takes, and "fail-first-merge" to make the
# first verification at a turn (the first holder's) fail, in 1 s.
KINDS = r"""
import json, os, subprocess, sys, time
from pathlib import Path

def rev(ref):
    return subprocess.run(["git", "rev-parse", ref], capture_output=True, text=True).stdout.strip()

log, ahead_seconds, mode = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
task = json.loads(Path(os.environ["ONCEQ_TASK_FILE"]).read_text())
head, parent = rev("HEAD"), rev("HEAD^")
kind = "review" if head == rev(task["branch"]) else "merge" if parent == rev("main") else "ahead"

def note(event):
    with log.open("a") as f:
        f.write(f"{event} {kind} {time.time()} {task['number']} {head} {parent}\n")

note("start")
if kind == "merge" and mode == "fail-first-merge":
    try:
        os.close(os.open(log.with_suffix(".first"), os.O_CREAT | os.O_EXCL))
        time.sleep(1)
        sys.exit(1)
    except FileExistsError:
        pass
if kind == "ahead":
    time.sleep(ahead_seconds)
note("end")
"""


def _kinds_step(project: Project, *args: str) -> tuple[str, Path]:
    """The KINDS verification step and its log."""
    (project.root / "kinds.py").write_text(KINDS)
    log = project.root / "verify.log"
    return f'{sys.executable} "$ONCEQ_BATCH_DIR/kinds.py" {log} {" ".join(args)}', log


def test_a_merge_ahead_is_cut_short_when_the_holder_leaves_the_queue(project: Project) -> None:
    """The holder's merge fails its verification: what it announced will not land, so
    the task verifying its own merge onto it meanwhile stops, rather than spend a whole
    verification on it before its turn. (The base moves under both tasks by a commit of
    the user's, made once both have started, so each one's merge needs verifying, and no
    earlier merge has left an announcement behind.)"""
    step, log = _kinds_step(project, "3", "fail-first-merge")
    change = "round 0: wait-merged user.txt\nround 0: write {n}.txt {n}\nround 1: write {n}.txt x"
    tasks = project.together({n: change.format(n=n) for n in ("1", "2")})
    started = [project.kills / f"started-{n}" for n in ("1", "2")]

    def user_commits() -> None:
        eventually(lambda: all(p.exists() for p in started), timeout=60)
        (project.repo / "user.txt").write_text("mine\n")
        git(project.repo, "add", "user.txt")
        git(project.repo, "commit", "-qm", "the user's own change")

    user = threading.Thread(target=user_commits, daemon=True)
    user.start()
    project.run(project.batch("cut", tasks, verify=[step]))
    user.join(10)
    assert sorted(project.merged_tags()) == ["cut/1", "cut/2"]
    lines = [line.split() for line in log.read_text().splitlines()]
    landed = set(git(project.repo, "rev-list", "main").split())
    ahead = [(n, head, parent) for event, kind, _, n, head, parent in lines
             if event == "start" and kind == "ahead"]  # fmt: skip
    dead = [a for a in ahead if a[2] not in landed]  # onto a tip that never landed
    assert dead, lines
    ended = {(n, head, parent) for event, _, _, n, head, parent in lines if event == "end"}
    assert not any(a in ended for a in dead), lines  # each one cut short


def test_one_task_at_a_time_merges_ahead(project: Project) -> None:
    """Two tasks wait while the holder keeps the turn 3 s: only one of them verifies a
    merge ahead at a time (the other's would be made stale by the first one's turn).
    (Both of theirs, 0.5 s each, end well before the holder's turn does: none is cut
    short, so each start has its end.)"""
    step, log = _kinds_step(project, "0.5", "pass")
    tasks = project.together({n: f"write {n}.txt {n}" for n in ("1", "2", "3")})
    env = {"ONCEQ_FAULTS": "batch.merge.before_swap=delay", "ONCEQ_FAULTS_DELAY": "3",
           "ONCEQ_FAULTS_ONCE": str(project.kills)}  # fmt: skip
    project.run(project.batch("one", tasks, verify=[step]), env=env)
    assert sorted(project.merged_tags()) == ["one/1", "one/2", "one/3"]
    lines = [line.split() for line in log.read_text().splitlines()]
    events = sorted((float(at), event) for event, kind, at, *_ in lines if kind == "ahead")
    assert events, "nobody merged ahead"
    running = 0
    for _, event in events:
        running += 1 if event == "start" else -1
        assert running <= 1, events
