"""Scenario 10, hostile names and payloads: task, queue and key names and payload keys
made of SQL, placeholders, control characters, unicode and 100 KB strings; NUL bytes in
payload values. All of it is stored and returned byte-exact, the schema is untouched;
NUL in a task, queue or key name is refused with a clear PayloadError (SQL text cannot
hold NUL). Plus: no code execution from data anywhere in src/onceq."""

from __future__ import annotations

import io
import json
import random
import re
import subprocess
import sys
import threading
import tokenize
from pathlib import Path
from typing import Any

import pytest

from onceq import App, PayloadError, Workflow
from onceq.store import open_store
from onceq.task import MAX_NAME_BYTES
from tests.chaos.apps import echo
from tests.chaos.harness import ROOT, Chaos, backend, sql

pytestmark = pytest.mark.chaos

TABLES = {"onceq_jobs", "onceq_attempts", "onceq_runs", "onceq_steps", "onceq_migrations"}


def long_text(seed: int, size: int = 100_000) -> str:
    """100 KB that does not compress (a B-tree entry cannot shrink it)."""
    rng = random.Random(seed)
    pool = "abcdefghijklmnopqrstuvwxyz0123456789'\";-%?$\\ äöüßéèñçΩ≈√∫漢字かなカナ🚀🙂"
    return "".join(rng.choice(pool) for _ in range(size))


HOSTILE = [
    "'; DROP TABLE onceq_jobs; --",
    'x"); DROP TABLE onceq_attempts; --',
    "%(now)s %s ? ?1 :now $1 {} %%",
    "タスク🚀\u202eRTL\u200dZWJ",
    "Ω≈ç√∫ ünïcödé e\u0301 \ufeffBOM",
    "line\nbreak\ttab\rcr\u2028\u2029\x1b[31m",
    "back\\slash \\x00 \\u0000 \\' \\\"",
    " ",
]
LONG_NAME = long_text(1)  # past the name limit: refused


def longest_name(seed: int) -> str:
    """The longest name onceq keeps: as many characters as fit in MAX_NAME_BYTES."""
    text = long_text(seed, MAX_NAME_BYTES)
    while len(text.encode()) > MAX_NAME_BYTES:
        text = text[:-1]
    return text


def hostile_payload(i: int) -> dict[str, Any]:
    return {
        "'; DROP TABLE onceq_jobs; --": "\x00",
        "nul\x00in a key": "a\x00b\x00\x00c",
        "%(now)s": ["\x00" * 5, "🚀", "\u2028", None, 1.5, -(2**53)],
        "nested": {"$input.x": "$$item", "`rm -rf /`": {"\x00": "\x00\x01\x1f\x7f"}},
        "index": i,
        "long": long_text(100 + i, 20_000),
        long_text(200 + i, 2_000): "a long key",
    }


def names_for() -> list[tuple[str, str, str]]:
    """(task, queue, key) triples, the last one each as long as a name may be."""
    triples = [(h, HOSTILE[-1 - i], f"key {h}") for i, h in enumerate(HOSTILE)]
    triples.append((longest_name(1), longest_name(2), longest_name(3)))
    return triples


def test_hostile_names_and_payloads_are_stored_and_returned_byte_exact(
    chaos: Chaos, app: App
) -> None:
    jobs: list[tuple[int, str, str, str, dict[str, Any]]] = []
    for i, (task, queue, key) in enumerate(names_for()):
        app.task(name=task, queue=queue)(echo)
        payload = hostile_payload(i)
        job = app.tasks[task].configure(key=key).enqueue(**payload)
        again = app.tasks[task].configure(key=key).enqueue(**payload)
        assert again.id == job.id  # the hostile key is a working idempotency key
        jobs.append((job.id, task, queue, key, payload))
    workflow = Workflow("'; DROP TABLE onceq_runs; --", input=["v"]).step(
        "'; DROP TABLE onceq_steps; --", HOSTILE[3], args={"v": "$input.v", "lit": "$$\x00"}
    )
    run_id = app.run_workflow(workflow, {"v": "\x00🚀"})

    queues = sorted({q for _, _, q, _, _ in jobs})
    worker = app.worker(concurrency=4, lease=30, queues=queues, handle_signals=False)
    thread = threading.Thread(target=worker.run, kwargs={"burst": True}, daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive()

    for job_id, task, queue, key, payload in jobs:
        job = app.get_job(job_id)
        assert (job.status, job.task, job.queue, job.key) == ("succeeded", task, queue, key)
        assert job.args == payload and job.result == payload  # the handler got it exactly
        ((t, q, k, args, result),) = sql(
            chaos.url,
            "SELECT task, queue, key, CAST(args AS text), CAST(result AS text) "
            "FROM onceq_jobs WHERE id = ?",
            (job_id,),
        )
        assert (t, q, k) == (task, queue, key)  # byte-exact in the database itself
        assert json.loads(args) == payload and json.loads(result) == payload
    run = app.get_run(run_id)
    assert (run.status, run.name, run.steps[0].name) == (
        "succeeded",
        workflow.name,
        "'; DROP TABLE onceq_steps; --",
    )
    (step_job,) = app.store.job_list(run_id=run_id)
    assert step_job.result == {"v": "\x00🚀", "lit": "$\x00"}

    # The command line shows the same bytes (one JSON document).
    shown = subprocess.run(
        [sys.executable, "-m", "onceq", "job", str(jobs[0][0]), "--json"],
        cwd=ROOT,
        env=chaos.env(),
        capture_output=True,
        timeout=120,
        check=True,
    )
    document = json.loads(shown.stdout)["job"]
    assert (document["task"], document["args"]) == (jobs[0][1], jobs[0][4])

    assert tables(chaos.url) >= TABLES  # nothing dropped
    assert sql(chaos.url, "SELECT count(*) FROM onceq_jobs") == [(len(jobs) + 1,)]
    figures = chaos.check(instrumented=lambda task: True)
    chaos.report(figures, hostile_names=len(jobs), long_name_bytes=MAX_NAME_BYTES, long_value_kb=20)
    chaos.finished_ok(figures)


def tables(url: str) -> set[str]:
    if backend(url) == "sqlite":
        return {r[0] for r in sql(url, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {
        r[0]
        for r in sql(url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    }


NUL_REFUSED = "contains a NUL character, which SQL text cannot hold"


@pytest.mark.parametrize("where", ["queue", "key"])
def test_nul_in_a_queue_or_key_is_refused_with_a_clear_payload_error(
    store_url: str, where: str
) -> None:
    open_store(store_url).close()
    app = App(store_url)
    app.task(name="fine")(echo)
    call = app.tasks["fine"].configure(**{where: f"bad\x00{where}"})
    with pytest.raises(PayloadError, match=NUL_REFUSED):
        call.enqueue(x=1)
    assert sql(store_url, "SELECT count(*) FROM onceq_jobs") == [(0,)]
    app.close()


def test_nul_in_a_task_name_is_refused_with_a_clear_payload_error() -> None:
    app = App("sqlite:///:memory:")
    with pytest.raises(PayloadError, match=NUL_REFUSED):
        app.task(name="bad\x00task")(echo)


@pytest.mark.parametrize("where", ["queue", "key"])
def test_a_name_past_the_index_limit_is_refused_up_front_and_one_at_it_is_kept(
    store_url: str, where: str
) -> None:
    """Names live in B-tree indexes (PostgreSQL refuses index rows over ~2.7 KB): a
    100 KB queue or key is refused with a PayloadError naming the limit, on both
    backends alike, and nothing is stored; one of exactly MAX_NAME_BYTES is kept
    byte-exact."""
    open_store(store_url).close()
    app = App(store_url)
    app.task(name="echo")(echo)
    try:
        with pytest.raises(PayloadError, match=f"at most {MAX_NAME_BYTES} bytes"):
            app.tasks["echo"].configure(**{where: LONG_NAME}).enqueue(x=1)
        assert sql(store_url, "SELECT count(*) FROM onceq_jobs") == [(0,)]
        longest = longest_name(4)
        job = app.tasks["echo"].configure(**{where: longest}).enqueue(x=1)
        assert getattr(app.get_job(job.id), where) == longest
    finally:
        app.close()


@pytest.mark.parametrize("where", ["payload", "key", "queue"])
def test_a_lone_surrogate_is_refused_with_a_payload_error_naming_it(
    store_url: str, where: str
) -> None:
    """'\ud800' is a valid Python str but not UTF-8: no driver can store it as text."""
    open_store(store_url).close()
    app = App(store_url)
    app.task(name="echo")(echo)
    try:
        call = app.tasks["echo"].configure(**({} if where == "payload" else {where: "q\ud800"}))
        payload = {"text": "a\ud800b"} if where == "payload" else {"x": 1}
        with pytest.raises(PayloadError, match="lone surrogate"):
            call.enqueue(**payload)
        assert sql(store_url, "SELECT count(*) FROM onceq_jobs") == [(0,)]
    finally:
        app.close()


# -- no code execution from data ---------------------------------------------------------

FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "jsonpickle"}
FORBIDDEN_MODULES |= {"shelve", "marshal"}


def code_tokens(path: Path) -> list[tokenize.TokenInfo]:
    """The file's tokens without comments and strings (docstrings may say "no pickle")."""
    skip = {tokenize.COMMENT, tokenize.STRING, tokenize.NL, tokenize.NEWLINE}
    source = path.read_text()
    toks = tokenize.generate_tokens(io.StringIO(source).readline)
    return [t for t in toks if t.type not in skip and not _fstring_part(t)]


def _fstring_part(tok: tokenize.TokenInfo) -> bool:
    return tokenize.tok_name.get(tok.type, "").startswith("FSTRING")


def unsafe_calls(path: Path) -> list[str]:
    found = []
    toks = code_tokens(path)
    for i, tok in enumerate(toks):
        nxt = toks[i + 1].string if i + 1 < len(toks) else ""
        prev = toks[i - 1].string if i else ""
        where = f"{path}:{tok.start[0]}"
        if tok.type != tokenize.NAME:
            continue
        if tok.string in FORBIDDEN_MODULES:
            found.append(f"{where}: {tok.string}")
        elif tok.string in ("eval", "exec") and nxt == "(" and prev != ".":
            found.append(f"{where}: {tok.string}(")
        elif tok.string in ("unsafe_load", "full_load", "UnsafeLoader", "FullLoader"):
            found.append(f"{where}: yaml {tok.string}")
        elif tok.string == "yaml" and prev == "from":  # from yaml import load, ...
            line = tok.start[0]  # (a parenthesized import list may span lines: enough here)
            names = [t.string for t in toks[i + 2 :] if t.start[0] == line]
            found += [f"{where}: from yaml import {n}" for n in names if n == "load"]
        elif tok.string == "load" and prev == "." and i >= 2 and toks[i - 2].string == "yaml":
            call = _call_text(toks, i + 1)
            if "SafeLoader" not in call and "CSafeLoader" not in call:
                found.append(f"{where}: yaml.load{call} without SafeLoader")
    return found


def _call_text(toks: list[tokenize.TokenInfo], start: int) -> str:
    depth, parts = 0, []
    for tok in toks[start:]:
        parts.append(tok.string)
        depth += tok.string in ("(", "[", "{")
        depth -= tok.string in (")", "]", "}")
        if depth == 0:
            break
    return "".join(parts)


def test_the_scanner_finds_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import pickle\nx = eval('1')\nexec('y = 2')\nimport yaml\nyaml.load(s)\n"
        "yaml.load(s, Loader=yaml.SafeLoader)\nyaml.unsafe_load(s)\nimport marshal\n"
        "obj.eval(1)\n# pickle in a comment\n'eval(' \nfrom yaml import safe_load, load\n"
    )
    found = [re.sub(r"^.*:\d+: ", "", f) for f in unsafe_calls(sample)]
    assert found == [
        "pickle",
        "eval(",
        "exec(",
        "yaml.load(s) without SafeLoader",
        "yaml unsafe_load",
        "marshal",
        "from yaml import load",
    ]


def test_no_code_execution_from_data_in_the_source() -> None:
    files = sorted((ROOT / "src" / "onceq").rglob("*.py"))
    assert files
    found = [hit for path in files for hit in unsafe_calls(path)]
    assert found == [], found
