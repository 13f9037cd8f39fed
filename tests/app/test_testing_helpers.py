"""onceq's testing helpers: an in-memory store on the real claim path, run_until_idle()
running workflow successors too, and a pytest plugin that is inert until asked."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from onceq import App, Workflow
from onceq.testing import memory_store


def test_run_until_idle_runs_what_jobs_and_workflows_enqueue(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path}/not-used.db")

    @app.task(name="split")
    def split(text: str) -> list[str]:
        return text.split()

    @app.task(name="shout")
    def shout(word: str) -> str:
        return word.upper()

    @app.task(name="join")
    def join(words: list[str]) -> str:
        return "-".join(words)

    flow = (
        Workflow("words", input=["text"])
        .step("split", split, args={"text": "$input.text"}, next=["shout"])
        .step("shout", shout, with_items="$steps.split.result", args={"word": "$item"},
              next=["join"])
        .step("join", join, args={"words": "$steps.shout.results"})
    )  # fmt: skip
    with memory_store(app):
        run_id = app.run_workflow(flow, {"text": "once and only once"})
        worker = app.run_until_idle()
        assert worker.counts["succeeded"] == 6  # split, 4 items, join: one claim each
        run = app.get_run(run_id)
        assert run.status == "succeeded"
        assert app.store.run_results(run_id, "join") == ["ONCE-AND-ONLY-ONCE"]
        attempts = [a for j in app.store.job_list() for a in app.store.attempt_list(j.id)]
        assert {a.outcome for a in attempts} == {"succeeded"}  # leased, fenced, recorded
    assert not (tmp_path / "not-used.db").exists()


def test_the_pytest_plugin_imports_nothing_of_onceq_until_asked(tmp_path: Path) -> None:
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    probe = textwrap.dedent(f"""
        import sys, pytest
        code = pytest.main(["-q", "-p", "no:cacheprovider", {str(tmp_path)!r}])
        assert "onceq_pytest" in sys.modules, "the plugin was not loaded"
        loaded = sorted(m for m in sys.modules if m == "onceq" or m.startswith("onceq."))
        print("LOADED", loaded)
        sys.exit(code)
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LOADED []" in result.stdout
