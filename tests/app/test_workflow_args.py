"""Problem 3 of issue 14: a workflow's step arguments are checked against the handlers'
signatures when the run starts — names, literal types, and the shapes references allow
— so a wrong argument is one line up front, with nothing enqueued, not a failure later
in a worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from onceq import App, Workflow, WorkflowError
from tests.app.cli import environment, onceq

HEAD = """
name: pages
input: [urls]
steps:
  fetch:
    task: tests.app.flow.fetch
    with_items: $input.urls
    args: {url: $item}
    next: [count]
  count:
    task: tests.app.flow.count
"""


@pytest.fixture
def app(sqlite_url: str) -> Iterator[App]:
    from tests.app import flow

    a = App(sqlite_url)
    for t in flow.app.tasks.values():
        a.task(name=t.name)(t.fn)
    yield a
    a.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("{pages: $steps.fetch.results, minimum: 1}", None),  # fine
        ("{pages: $steps.fetch.results}", "task tests.app.flow.count needs argument 'minimum'"),
        ("{pages: $steps.fetch.results, minimum: one}", "argument 'minimum': Input should be "
                                                        "a valid integer, unable to parse "
                                                        "string as an integer (got 'one')"),
        ("{pages: $steps.fetch.results, minimum: 1, minimun: 2}",
         "has no parameter 'minimun' (did you mean 'minimum'?)"),
        ("{pages: 3, minimum: 1}", "argument 'pages': Input should be a valid list"),
        ("{pages: $steps.fetch.results, minimum: $steps.fetch.results}",
         "argument 'minimum': $steps.fetch.results is a list, the parameter is of JSON type "
         "integer"),
        ("{pages: [$input.urls.0], minimum: $input.urls.1}", None),  # known at run time
    ],
)  # fmt: skip
def test_step_arguments_are_checked_against_the_signature(
    app: App, args: str, message: str | None
) -> None:
    text = HEAD + f"    args: {args}\n"
    if message is None:
        assert app.run_workflow(Workflow.from_yaml(text), {"urls": []}) > 0
        return
    with pytest.raises(WorkflowError) as exc:
        app.run_workflow(Workflow.from_yaml(text), {"urls": []})
    assert str(exc.value).startswith("workflow 'pages', step 'count': ")
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert app.store.run_list() == [] and app.store.job_list() == []


def test_a_plain_steps_result_is_checked_by_its_return_type(app: App) -> None:
    text = """
name: typed
steps:
  size:
    task: tests.app.flow.size
    next: [label]
  label:
    task: tests.app.flow.label
    args: {text: $steps.size.result}
"""
    with pytest.raises(WorkflowError, match=r"\$steps.size.result is of JSON type integer, "
                                            "the parameter takes string"):  # fmt: skip
        app.run_workflow(Workflow.from_yaml(text))
    assert app.store.job_list() == []


def test_workflow_run_says_it_in_one_line(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(HEAD + "    args: {pages: $steps.fetch.results, minimum: one}\n")
    url = f"sqlite:///{tmp_path}/s.db"
    result = onceq("workflow", "run", "--app", "tests.app.flow:app", str(flow), "--input",
                   '{"urls": []}', "--url", url, cwd=tmp_path, env=environment())  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "argument 'minimum'" in result.stderr
