"""A scripted stand-in for a coding agent (an AI agent or a script of your own).

onceq runs it in the task's worktree with the task in $ONCEQ_TASK_FILE (JSON: every
field of the task, `round`, and `feedback` — what sent it back, or null). This one
reads the task's `implementation` as files to write:

    === path/to/file.py          write these lines to that file
    === path/to/file.py round 0  ... only on round 0 (a first try that a test catches)

and leaves its changes uncommitted: onceq commits them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

task = json.loads(Path(os.environ["ONCEQ_TASK_FILE"]).read_text())
print(f"agent: task {task['number']} {task['title']!r}, round {task['round']}")
if task["feedback"]:
    print("agent: told last time:", task["feedback"].splitlines()[0])
time.sleep(float(os.environ.get("AGENT_SECONDS", "1")))  # "thinking"

files: dict[str, list[str]] = {}
target = None
for line in task["implementation"].splitlines():
    if line.startswith("=== "):
        path, _, only = line[4:].partition(" round ")
        target = path.strip() if not only or int(only) == task["round"] else None
        if target is not None:
            files[target] = []
    elif target is not None:
        files[target].append(line)
for path, lines in files.items():
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines).rstrip() + "\n")
    print(f"agent: wrote {path}")
