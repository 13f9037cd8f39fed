"""Bad definitions: one line naming the problem, and nothing enqueued."""

from __future__ import annotations

from pathlib import Path

import pytest

from onceq import App, Workflow, WorkflowError


@pytest.fixture
def app(sqlite_url: str) -> App:
    a = App(sqlite_url)
    for name in ("fetch", "validate", "report"):
        a.task(name=name)(lambda **kwargs: None)
    return a


GOOD = """
name: ingest
input: [urls]
steps:
  fetch:
    task: fetch
    with_items: $input.urls
    args: {url: $item}
    concurrency: 3
    next: [validate]
    on_failure: [report]
  validate:
    task: validate
    args: {pages: $steps.fetch.results, source: "crawler"}
  report:
    task: report
"""


def test_the_spec_example_is_valid(app: App) -> None:
    run_id = app.run_workflow(Workflow.from_yaml(GOOD), {"urls": ["a", "b"]})
    assert [s.name for s in app.get_run(run_id).steps] == ["fetch", "validate", "report"]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("next: [validate]", "next: [validat]", "step 'fetch': next names unknown step 'validat'"),
        ("on_failure: [report]", "on_failure: [nobody]", "on_failure names unknown step 'nobody'"),
        (
            "    task: report\n",
            "    task: report\n    next: [fetch]\n",
            "has a cycle: fetch -> report -> fetch",
        ),
        (
            "    task: validate\n",
            "    task: validate\n    next: [validate]\n",
            "has a cycle: validate -> validate",
        ),
        (
            "task: validate",
            "task: no.such.task",
            "step 'validate': the app has no task 'no.such.task'",
        ),
        (
            "args: {pages: $steps.fetch.results",
            "args: {pages: $steps.report.result",
            "'$steps.report.result' refers to step 'report', which has not necessarily succeeded "
            "when 'validate' starts",
        ),
        (
            "args: {pages: $steps.fetch.results",
            "args: {pages: $steps.fetch.result",
            "step 'fetch' fans out: use $steps.fetch.results",
        ),
        (
            "args: {pages: $steps.fetch.results",
            "args: {pages: $steps.nope.results",
            "refers to unknown step 'nope'",
        ),
        (
            "args: {pages: $steps.fetch.results",
            "args: {pages: $item",
            "'$item' is only meaningful in a with_items step",
        ),
        (
            "args: {pages: $steps.fetch.results",
            "args: {pages: $output.x",
            "it must start with $input, $item or $steps",
        ),
        (
            "with_items: $input.urls",
            "with_items: $input.links",
            "'$input.links' is not among the declared input [urls]",
        ),
        (
            "with_items: $input.urls",
            "with_items: urls",
            "with_items must be a reference such as $input.urls",
        ),
        ("concurrency: 3", "concurrency: 0", "steps.fetch.concurrency: Input should be greater"),
        (
            "    task: report\n",
            "    task: report\n    retries: 3\n",
            "steps.report.retries: Extra inputs are not permitted",
        ),
        (
            "    task: report\n",
            "    task: report\n    concurrency: 2\n",
            "step 'report': concurrency needs with_items",
        ),
    ],
)
def test_bad_definitions_are_named_and_nothing_is_enqueued(
    app: App, old: str, new: str, message: str
) -> None:
    assert old in GOOD
    with pytest.raises(WorkflowError) as exc:
        app.run_workflow(Workflow.from_yaml(GOOD.replace(old, new, 1)), {"urls": ["a"]})
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert app.store.job_list() == [] and app.store.run_list() == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nsteps: [\n", "invalid YAML at line"),
        ("- just\n- a list\n", "expected a mapping with name and steps"),
        ("name: x\n", "steps: Field required"),
        ("name: x\nsteps: {}\n", "has no steps"),
        (
            "name: x\nsteps:\n  a: {task: t, next: b}\n  b: {task: t, next: a}\n",
            "has a cycle: a -> b -> a",
        ),
        ("!!python/object/apply:os.system ['echo pwned']\n", "invalid YAML"),
    ],
)
def test_bad_yaml_is_named(text: str, message: str) -> None:
    with pytest.raises(WorkflowError) as exc:
        Workflow.from_yaml(text, "flow.yaml")
    assert str(exc.value).startswith("flow.yaml") or "workflow" in str(exc.value)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_missing_input_is_refused_before_anything_runs(app: App) -> None:
    with pytest.raises(WorkflowError, match="missing input 'urls'"):
        app.run_workflow(Workflow.from_yaml(GOOD), {})
    with pytest.raises(WorkflowError, match="input must be a JSON object"):
        app.run_workflow(Workflow.from_yaml(GOOD), ["a"])  # type: ignore[arg-type]
    assert app.store.run_list() == []


def test_a_failure_handler_may_use_what_succeeded_before_the_failure(app: App) -> None:
    text = """
name: chain
steps:
  a: {task: fetch, next: [b]}
  b: {task: validate, on_failure: [c]}
  c: {task: report, args: {from_a: $steps.a.result}}
"""
    app.run_workflow(Workflow.from_yaml(text), {})  # a succeeded whenever b failed


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="cannot read workflow file"):
        Workflow.load(tmp_path / "nope.yaml")
