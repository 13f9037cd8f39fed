"""Problem 6 of issue 14: the command line's edges — --version, completion, tables at
80 columns, JSON from a file or standard input, one line for a broken --app or a bad
--log-level, read-only commands that never create a store, the reason of a refused
connection, a hint when `workflow run --wait` sees no worker, "did you mean"."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import psycopg

import onceq as onceq_package
from onceq import App
from tests.app.cli import APP, environment, onceq, start
from tests.helpers import eventually


def test_version_and_completion(tmp_path: Path) -> None:
    shown = onceq("--version", cwd=tmp_path)
    assert (shown.returncode, shown.stdout) == (0, f"onceq {onceq_package.__version__}\n")
    script = onceq("--show-completion", "bash", cwd=tmp_path)
    assert script.returncode == 0 and "complete" in script.stdout


def test_tables_fit_80_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    app = App(url)

    @app.task(name="media.images.resize_the_uploaded_image_to_a_thumbnail")
    def resize(image_id: int) -> int:
        raise ValueError("the image could not be decoded: truncated PNG stream at byte 4096")

    ids = [resize.enqueue(image_id=n).id for n in range(3)]
    app.worker(handle_signals=False).run(burst=True)
    app.close()
    env = environment(COLUMNS="80")
    for args, rows in ((["jobs"], [str(i) for i in ids]), (["job", str(ids[0])], ["1"])):
        out = onceq(*args, "--url", url, cwd=tmp_path, env=env).stdout
        lines = out.splitlines()
        assert all(len(line) <= 80 for line in lines), out
        # one line per row, its status whole, never folded onto the next line
        found = [x for x in lines if x.split()[:1] in ([r] for r in rows) and "failed" in x]
        assert len(found) == len(rows), out


def test_json_from_a_file_or_standard_input(tmp_path: Path) -> None:
    env = environment(ONCEQ_URL=f"sqlite:///{tmp_path}/s.db")
    big = "x" * 300_000  # larger than a command line can carry
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps({"name": big}))
    from_file = onceq("enqueue", "--app", APP, "tests.app.apps.greet", "--json", f"@{payload}",
                      cwd=tmp_path, env=env)  # fmt: skip
    from_stdin = onceq("enqueue", "--app", APP, "tests.app.apps.greet", "--json", "-",
                       cwd=tmp_path, env=env, stdin=json.dumps({"name": "small"}))  # fmt: skip
    assert from_file.returncode == from_stdin.returncode == 0, from_file.stderr
    shown = json.loads(onceq("job", from_file.stdout.strip(), "--json", cwd=tmp_path,
                             env=env).stdout)  # fmt: skip
    assert shown["job"]["args"] == {"name": big}
    missing = onceq("enqueue", "--app", APP, "tests.app.apps.greet", "--json", "@nope.json",
                    cwd=tmp_path, env=env)  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr == "error: --json: cannot read 'nope.json': No such file or directory\n"


def test_one_line_for_a_broken_app_a_bad_log_level_and_a_task_typo(tmp_path: Path) -> None:
    env = environment(ONCEQ_URL=f"sqlite:///{tmp_path}/s.db")
    cases = [
        (["worker", "--app", "tests.app.broken_app:app"],
         "--app module 'tests.app.broken_app' failed to import: "),
        (["worker", "--app", APP, "--log-level", "LOUD"], "unknown --log-level 'LOUD'"),
        (["enqueue", "--app", APP, "tests.app.apps.gret"],
         "unknown task 'tests.app.apps.gret': the app has no task of that name "
         "(did you mean 'tests.app.apps.greet'?)"),
    ]  # fmt: skip
    for args, message in cases:
        result = onceq(*args, cwd=tmp_path, env=env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    broken = onceq(*cases[0][0], cwd=tmp_path, env=env).stderr
    assert "broken_app.py:6: NameError: name 'undefined_name' is not defined" in broken


def test_commands_that_need_a_store_never_create_one(tmp_path: Path, pg_server: str) -> None:
    typo = tmp_path / "typo.db"
    batch = tmp_path / "batch.yaml"  # clean finds its store before it reads the file
    schema = f"onceq_typo_{uuid.uuid4().hex[:8]}"
    for url in (f"sqlite:///{typo}", f"{pg_server}?schema={schema}"):
        for args in (["jobs"], ["job", "1"], ["workflow", "show", "1"], ["workflow", "list"],
                     ["workers"], ["periodic"], ["prune"], ["batch", "show", "b"],
                     ["batch", "list"], ["batch", "clean", str(batch)]):  # fmt: skip
            result = onceq(*args, "--url", url, cwd=tmp_path)
            assert result.returncode == 2
            assert result.stderr.startswith(f"error: no store at {url} "), result.stderr
    assert not typo.exists()
    with psycopg.connect(pg_server) as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        assert found.fetchone() is None


def test_a_refused_connection_says_so(tmp_path: Path) -> None:
    result = onceq("jobs", "--url", "postgresql://postgres@127.0.0.1:1/test", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot reach PostgreSQL at 127.0.0.1:1/test: "
                                    "Connection refused")  # fmt: skip


def test_workflow_run_wait_hints_when_no_job_starts(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text("name: one\nsteps:\n  size:\n    task: tests.app.flow.size\n")
    url = f"sqlite:///{tmp_path}/s.db"
    log = tmp_path / "out.log"
    waiting = start("workflow", "run", "--app", "tests.app.flow:app", str(flow), "--wait",
                    "--url", url, "--hint-after", "0.2", cwd=tmp_path, env=environment(),
                    log=log)  # fmt: skip
    try:
        hint = eventually(lambda: [x for x in log.read_text().splitlines() if "hint:" in x])
    finally:
        waiting.send_signal(signal.SIGINT)
        waiting.wait(30)
    assert "no job of run 1 has started" in hint[0]
    assert f"onceq worker --app tests.app.flow:app --url {url}" in log.read_text()
