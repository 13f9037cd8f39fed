"""Workflow definitions, from YAML or Python: one pydantic model, validated up front.

Everything that can be checked before a run starts is checked here, so that a bad
definition enqueues nothing: unknown steps in `next`/`on_failure`, cycles, a task the
app does not have, references that are malformed or point at a step that has not
necessarily succeeded when the referring step starts, `$item` outside a fan-out.
Only what depends on the data (a `with_items` that is not a list) waits for the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from onceq.errors import PayloadError, WorkflowError
from onceq.store import jsoncodec
from onceq.task import Shape
from onceq.workflow import refs
from onceq.yamltext import safe_load

if TYPE_CHECKING:
    from onceq.app import App
    from onceq.task import Task


class Step(BaseModel):
    """One step: a task, its arguments, an optional fan-out, and what comes after."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str
    args: dict[str, Any] = Field(default_factory=dict)
    with_items: str | None = None
    concurrency: int | None = Field(default=None, ge=1)
    next: list[str] = Field(default_factory=list)
    on_failure: list[str] = Field(default_factory=list)
    # Filled in from the app's task when a run starts (the engine runs inside the
    # store's transaction and cannot see the app).
    queue: str | None = None
    priority: int = 0
    max_attempts: int = 1

    @field_validator("next", "on_failure", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class Definition(BaseModel):
    """A workflow: a name, the input keys it expects, and its steps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    input: list[str] = Field(default_factory=list)
    steps: dict[str, Step]

    @cached_property
    def preds(self) -> dict[str, list[str]]:
        """Steps whose success leads to each step (it starts when all have succeeded)."""
        out: dict[str, list[str]] = {name: [] for name in self.steps}
        for name, step in self.steps.items():
            for target in step.next:
                out[target].append(name)
        return out

    @cached_property
    def failure_sources(self) -> dict[str, list[str]]:
        """Steps whose failure starts each step (via `on_failure`)."""
        out: dict[str, list[str]] = {name: [] for name in self.steps}
        for name, step in self.steps.items():
            for target in step.on_failure:
                out[target].append(name)
        return out

    def roots(self) -> list[str]:
        """Steps that nothing leads to: they start with the run."""
        return [n for n in self.steps if not self.preds[n] and not self.failure_sources[n]]

    @cached_property
    def succeeded_before(self) -> dict[str, frozenset[str]]:
        """For each step, the steps certain to have succeeded whenever it starts."""
        out: dict[str, frozenset[str]] = {}
        for name in self.order():
            paths: list[frozenset[str]] = []
            if self.preds[name]:
                joined: set[str] = set()
                for p in self.preds[name]:
                    joined |= {p} | out[p]
                paths.append(frozenset(joined))
            paths += [out[f] for f in self.failure_sources[name]]
            out[name] = frozenset.intersection(*paths) if paths else frozenset()
        return out

    def order(self) -> list[str]:
        """Steps in topological order (WorkflowError on a cycle)."""
        order: list[str] = []
        state: dict[str, int] = {}  # 1: on the path, 2: done

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                cycle = path[path.index(name) :]  # it ends with name again
                raise WorkflowError(f"workflow {self.name!r} has a cycle: {' -> '.join(cycle)}")
            state[name] = 1
            step = self.steps[name]
            for target in [*step.next, *step.on_failure]:
                visit(target, [*path, target])
            state[name] = 2
            order.append(name)

        for name in self.steps:
            visit(name, [name])
        return order[::-1]

    def check(self) -> None:
        """Every static check; raises WorkflowError naming the first problem."""
        where = f"workflow {self.name!r}"
        if not self.steps:
            raise WorkflowError(f"{where} has no steps")
        for name, step in self.steps.items():
            for field, targets in (("next", step.next), ("on_failure", step.on_failure)):
                for target in targets:
                    if target not in self.steps:
                        raise WorkflowError(
                            f"{where}, step {name!r}: {field} names unknown step {target!r}"
                        )
        self.order()  # cycles
        for name, step in self.steps.items():
            self._check_step(name, step)

    def _check_step(self, name: str, step: Step) -> None:
        where = f"workflow {self.name!r}, step {name!r}"
        if step.concurrency is not None and step.with_items is None:
            raise WorkflowError(f"{where}: concurrency needs with_items")
        if step.with_items is not None and not refs.is_ref(step.with_items):
            raise WorkflowError(
                f"{where}: with_items must be a reference such as $input.urls, "
                f"got {step.with_items!r}"
            )
        try:
            jsoncodec.dumps(step.args, f"args of step {name!r}")
        except PayloadError as exc:
            raise WorkflowError(f"workflow {self.name!r}: {exc} (quote it to pass text)") from None
        try:
            found = refs.refs_in(step.args)
            item_refs = [r for r in found if r.root == "item"]
            if step.with_items is not None:
                fan_out = refs.parse(step.with_items)
                if fan_out.root == "item":
                    raise WorkflowError(f"with_items cannot refer to $item ({fan_out.text!r})")
                found.append(fan_out)
        except WorkflowError as exc:
            raise WorkflowError(f"{where}: {exc}") from None
        if item_refs and step.with_items is None:
            raise WorkflowError(f"{where}: {item_refs[0].text!r} is only meaningful in a "
                                "with_items step")  # fmt: skip
        for ref in found:
            self._check_ref(where, name, ref)

    def _check_ref(self, where: str, name: str, ref: refs.Ref) -> None:
        if ref.root == "input" and self.input and ref.path and ref.path[0] not in self.input:
            raise WorkflowError(
                f"{where}: {ref.text!r} is not among the declared input [{', '.join(self.input)}]"
            )
        if ref.root != "steps":
            return
        assert ref.step is not None
        if ref.step not in self.steps:
            raise WorkflowError(f"{where}: {ref.text!r} refers to unknown step {ref.step!r}")
        if ref.step not in self.succeeded_before[name]:
            raise WorkflowError(
                f"{where}: {ref.text!r} refers to step {ref.step!r}, which has not "
                f"necessarily succeeded when {name!r} starts (it must lead to {name!r} "
                "through next)"
            )
        fan_out = self.steps[ref.step].with_items is not None
        if ref.field == "result" and fan_out:
            raise WorkflowError(f"{where}: step {ref.step!r} fans out: use "
                                f"$steps.{ref.step}.results (a list, in item order)")  # fmt: skip
        if ref.field == "results" and not fan_out:
            raise WorkflowError(f"{where}: step {ref.step!r} does not fan out: use "
                                f"$steps.{ref.step}.result")  # fmt: skip

    def compile(self, app: App) -> Definition:
        """Checked, with each step's queue, priority and attempts taken from the app's
        task; WorkflowError for a task the app does not have, or arguments its handler
        cannot take (see _check_args)."""
        self.check()
        steps = {}
        for name, step in self.steps.items():
            task = app.tasks.get(step.task)
            if task is None:
                raise WorkflowError(f"workflow {self.name!r}, step {name!r}: the app has no "
                                    f"task {step.task!r}{app.guess(step.task)}")  # fmt: skip
            self._check_args(app, name, step, task)
            steps[name] = step.model_copy(update={
                "queue": task.queue or app.default_queue,
                "priority": task.priority,
                "max_attempts": task.max_attempts,
            })  # fmt: skip
        return self.model_copy(update={"steps": steps})

    def _check_args(self, app: App, name: str, step: Step, task: Task[..., Any]) -> None:
        """A step's arguments against its handler's signature, before anything runs:
        every required parameter given, no unknown one, each literal of the right type,
        and each reference of a shape the parameter can take — `$steps.x.results` is a
        list; `$steps.x.result` has x's return type. What `$input` and `$item` hold is
        only known at run time."""
        given: dict[str, Any] = {}
        for arg, value in step.args.items():
            found = refs.refs_in(value)
            if not found:
                given[arg] = refs.resolve(value, lambda ref: None)  # `$$x` becomes `$x`
            elif refs.is_ref(value):
                given[arg] = self._shape(app, found[0])
            else:
                given[arg] = Shape(str(value))  # references inside a literal: run time
        problem = task.check_arguments(given)
        if problem:
            raise WorkflowError(f"workflow {self.name!r}, step {name!r}: {problem}")

    def _shape(self, app: App, ref: refs.Ref) -> Shape:
        if ref.root != "steps" or ref.path:
            return Shape(ref.text)
        assert ref.step is not None
        if ref.field == "results":
            return Shape(ref.text, is_list=True)
        source = app.tasks.get(self.steps[ref.step].task)
        return Shape(ref.text, schema=source.result_schema if source else None)

    def check_input(self, data: Any) -> dict[str, Any]:
        """The run's input: a JSON object with every declared key."""
        if not isinstance(data, dict):
            raise WorkflowError(f"workflow {self.name!r}: input must be a JSON object")
        missing = [k for k in self.input if k not in data]
        if missing:
            raise WorkflowError(
                f"workflow {self.name!r}: missing input {', '.join(map(repr, missing))}"
            )
        return data


def parse_definition(data: Any, source: str = "workflow") -> Definition:
    """A Definition from parsed YAML/JSON data, or WorkflowError in one line."""
    if not isinstance(data, Mapping):
        raise WorkflowError(f"{source}: expected a mapping with name and steps")
    try:
        definition = Definition.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise WorkflowError(f"{source}: {loc}: {err['msg']}") from None
    definition.check()
    return definition


def load_yaml(text: str, source: str = "workflow") -> Definition:
    """Parse and check a YAML definition (safe loading: plain data only)."""
    data = safe_load(text, source, WorkflowError)
    return parse_definition(data, source)
