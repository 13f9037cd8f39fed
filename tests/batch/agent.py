"""A scripted agent for the batch tests: it follows its task's `implementation`, one
directive per line (`round N: ...` applies to round N only):

    write PATH TEXT      overwrite PATH with TEXT
    append PATH TEXT     add a line to PATH
    sleep SECONDS
    fail                 exit 3 (a failed round)
    kill-worker MARKER   SIGKILL the worker running this agent, once (MARKER: a file name)
    kill-worker-always   SIGKILL the worker running this agent, every time
    commit               commit its own change (onceq commits what is left otherwise)
    feedback PATH        write the feedback it was given to PATH
    touch PATH           create PATH (a barrier between tasks: see wait-for)
    wait-for PATH        wait until PATH exists (up to 60 s)
    wait-merged PATH     wait until PATH is on the base branch `main` (up to 60 s)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from killer import kill_worker_once

task = json.loads(Path(os.environ["ONCEQ_TASK_FILE"]).read_text())
assert os.environ["ONCEQ_TASK_NUMBER"] == task["number"]
assert int(os.environ["ONCEQ_TASK_ROUND"]) == task["round"]
for raw in task["implementation"].splitlines():
    line = raw.strip()
    if not line:
        continue
    if line.startswith("round "):
        head, _, line = line.partition(":")
        if int(head.split()[1]) != task["round"]:
            continue
        line = line.strip()
    word, _, rest = line.partition(" ")
    if word == "write":
        path, _, text = rest.partition(" ")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
    elif word == "append":
        path, _, text = rest.partition(" ")
        with open(path, "a") as f:
            f.write(text + "\n")
    elif word == "sleep":
        time.sleep(float(rest))
    elif word == "fail":
        sys.exit(3)
    elif word == "kill-worker":
        kill_worker_once(rest)
    elif word == "kill-worker-always":
        kill_worker_once(f"always-{time.monotonic_ns()}")
    elif word == "commit":
        os.system("git add -A && git -c user.name=agent -c user.email=a@b commit -qm agent")
    elif word == "touch":
        Path(rest).touch()
    elif word == "wait-for":
        deadline = time.monotonic() + 60
        while not Path(rest).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    elif word == "wait-merged":
        deadline = time.monotonic() + 60
        while os.system(f"git cat-file -e main:{rest} 2>/dev/null") != 0:
            if time.monotonic() > deadline:
                sys.exit(f"{rest} never reached main")
            time.sleep(0.01)
    elif word == "feedback":
        Path(rest).write_text(task["feedback"] or "")
    else:
        sys.exit(f"unknown directive {line!r}")
