"""Workflows: DAGs of steps with with_items fan-out and joins dispatched exactly once.

    wf = (Workflow("ingest", input=["urls"])
          .step("fetch", fetch, with_items="$input.urls", args={"url": "$item"},
                concurrency=3, next=["validate"], on_failure=["report"])
          .step("validate", validate, args={"pages": "$steps.fetch.results"})
          .step("report", report))
    run_id = app.run_workflow(wf, {"urls": [...]})

or the same from YAML with `Workflow.from_yaml(text)` / `Workflow.load(path)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onceq.errors import WorkflowError
from onceq.store import Store
from onceq.task import Task
from onceq.workflow import engine as _engine  # noqa: F401 - registers the run engine
from onceq.workflow.model import Definition, Step, load_yaml, parse_definition

__all__ = ["Definition", "Step", "Workflow", "start_run"]


def start_run(store: Store, definition: Definition, data: dict[str, Any]) -> int:
    """Start a run of a compiled definition with checked input; its id (committed)."""
    return store.run_start(definition.name, definition.model_dump_json(), data,
                           list(definition.steps))  # fmt: skip


class Workflow:
    """A workflow definition, built step by step in Python or loaded from YAML."""

    def __init__(self, name: str, *, input: Sequence[str] = ()) -> None:
        self.name = name
        self.input = list(input)
        self._steps: dict[str, dict[str, Any]] = {}
        self._definition: Definition | None = None

    def step(
        self,
        name: str,
        task: Task[..., Any] | str,
        *,
        args: dict[str, Any] | None = None,
        with_items: str | None = None,
        concurrency: int | None = None,
        next: Sequence[str] = (),
        on_failure: Sequence[str] = (),
    ) -> Workflow:
        """Add a step (see SPEC's YAML for what each field means); returns self."""
        if name in self._steps:
            raise WorkflowError(f"workflow {self.name!r}: step {name!r} is defined twice")
        self._steps[name] = {
            "task": task.name if isinstance(task, Task) else task,
            "args": args or {},
            "with_items": with_items,
            "concurrency": concurrency,
            "next": list(next),
            "on_failure": list(on_failure),
        }
        self._definition = None
        return self

    @property
    def definition(self) -> Definition:
        """The checked definition (WorkflowError for the first problem found)."""
        if self._definition is None:
            data = {"name": self.name, "input": self.input, "steps": self._steps}
            self._definition = parse_definition(data, f"workflow {self.name!r}")
        return self._definition

    @classmethod
    def from_definition(cls, definition: Definition) -> Workflow:
        """Wrap an already checked definition."""
        workflow = cls(definition.name, input=definition.input)
        workflow._definition = definition
        return workflow

    @classmethod
    def from_yaml(cls, text: str, source: str = "workflow") -> Workflow:
        """Parse a YAML definition (safely: plain data only)."""
        return cls.from_definition(load_yaml(text, source))

    @classmethod
    def load(cls, path: str | Path) -> Workflow:
        """Read a YAML definition from a file."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise WorkflowError(
                f"cannot read workflow file {str(path)!r}: {exc.strerror}"
            ) from None
        return cls.from_yaml(text, str(path))
