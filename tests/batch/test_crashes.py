"""A worker SIGKILLed at each stage of a task (agent running, verifying, between the
commit and the review, while merging, right after the base moved): the task is re-run
on a reset worktree, nothing is merged twice, no partial work lands, and the attempt
history says why it ran again."""

from __future__ import annotations

import sys

import pytest

from onceq.store import open_store
from tests.batch.conftest import Project

KILLER = f'{sys.executable} "$ONCEQ_BATCH_DIR/killer.py"'
STAGES = {
    # stage: (extra directive for task 1's agent, its verification steps, fault point)
    "agent": ("kill-worker agent", [], None),
    "verifying": ("", [f"{KILLER} verify"], None),
    # (after the bystander merged: the base moved, so the merge result is verified)
    "post-merge verification": ("wait-merged log2.txt", [f"{KILLER} verify --on 2"], None),
    "after the commit": ("", [], "batch.pr_created"),
    "before the swap": ("", [], "batch.merge.before_swap"),
    "after the swap": ("", [], "batch.merge.swapped"),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_worker_killed_at_each_stage_merges_every_task_once(project: Project, stage: str) -> None:
    directive, verify, point = STAGES[stage]
    runs = project.kills / "agent-runs"
    tasks = [
        {"number": "1", "title": "crashes", "implementation":
            f"append {runs} 1\nappend log.txt one\n{directive}\nsleep 0.2"},
        {"number": "2", "title": "bystander", "implementation":
            f"append {runs} 2\nappend log2.txt two\nsleep 0.2"},
    ]  # fmt: skip
    env = {}
    if point is not None:  # crash there once: the first worker that gets there exits
        env = {"ONCEQ_FAULTS": f"{point}=crash", "ONCEQ_FAULTS_ONCE": str(project.kills)}
    tasks[0]["verification_steps"] = verify  # task 1's own: it is the one killed
    file = project.batch("crash", tasks, workers=2)
    project.run(file, env=env)

    assert sorted(project.merged_tags()) == ["crash/1", "crash/2"]  # each exactly once
    assert project.on_main("log.txt") == "one"  # the killed round's work did not land
    assert project.on_main("log2.txt") == "two"
    assert project.status() == ""
    store = open_store(project.url)
    try:
        history = {j.args["number"]: [a.outcome for a in store.attempt_list(j.id)]
                   for j in store.job_list(task="onceq.batch.task")}  # fmt: skip
        errors = [a.error or "" for j in store.job_list(task="onceq.batch.task")
                  for a in store.attempt_list(j.id)]  # fmt: skip
    finally:
        store.close()
    # One worker died (a fault point fires in whichever task gets there first; the
    # kills are in task 1): its task ran again, the other once.
    crashed = [n for n, outcomes in history.items() if outcomes != ["succeeded"]]
    assert len(crashed) == 1, (history, sorted(p.name for p in project.kills.iterdir()),
                               project.worker_log(file)[-3000:])  # fmt: skip
    assert history[crashed[0]] == ["worker_died", "succeeded"]
    assert point is not None or crashed == ["1"]
    assert any("died" in e for e in errors)
    agent_runs = runs.read_text().split()
    # Killed while its agent ran: the round is redone; killed later: the agent's change
    # was committed already and is reviewed or merged as it is.
    for n in ("1", "2"):
        again = n == crashed[0] and stage == "agent"
        assert agent_runs.count(n) == (2 if again else 1), (n, agent_runs)
