"""Make a small repository next to batch.yaml (./calc, a fresh git repository), then
run the batch on it: three tasks in parallel in three worktrees, one sent back once by
its tests, then a fourth that needs the other three — each merged into `main` once.

    python examples/batch/demo.py            # or: make batch-demo
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE / "calc"


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True, text=True)
    return done.stdout


def main() -> int:
    if REPO.exists():
        shutil.rmtree(REPO)
    (REPO / "calc").mkdir(parents=True)
    (REPO / "tests").mkdir()
    (REPO / "calc" / "__init__.py").write_text("")
    (REPO / "tests" / "__init__.py").write_text("")
    (REPO / "README.md").write_text("# calc\n")
    git("init", "-q", "-b", "main")
    git("add", ".")
    git("-c", "user.name=demo", "-c", "user.email=demo@localhost", "commit", "-qm", "calc: empty")
    store = HERE / "batch-demo.db"
    store.unlink(missing_ok=True)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # its python
    env = {**os.environ, "PATH": path, "AGENT_SECONDS": os.environ.get("AGENT_SECONDS", "1")}
    url = f"sqlite:///{store}"
    code = subprocess.call([sys.executable, "-m", "onceq", "batch", "run", str(HERE / "batch.yaml"),
                            "--url", url], env=env)  # fmt: skip
    print("\n$ git log --oneline main   (in examples/batch/calc)")
    print(git("log", "--oneline", "main"), end="")
    print("\n$ onceq batch show calc --url", url)
    subprocess.call([sys.executable, "-m", "onceq", "batch", "show", "calc", "--url", url])
    return code


if __name__ == "__main__":
    sys.exit(main())
