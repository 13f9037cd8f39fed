"""The batch file (SPEC.md, "Code-task batches"): one pydantic model, checked up front.

Everything that can be wrong with a file is found before anything is created: YAML
syntax, an unknown or misspelt field, a duplicate task number, a number or name that
cannot be part of a branch name. What depends on the machine (the repository, the base
branch, the agent's command) is checked by `preflight` in onceq.batch.repo.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from onceq.errors import BatchError
from onceq.yamltext import safe_load

_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")  # a piece of a branch name


def _safe(value: str, what: str) -> str:
    if not _SAFE.match(value) or ".." in value or value.endswith((".", ".lock")):
        raise ValueError(f"{what} {value!r} cannot be part of a branch name "
                         "(letters, digits, '.', '_' and '-')")  # fmt: skip
    return value


class TaskSpec(BaseModel):
    """One code-change task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    number: str
    title: str
    implementation: str = ""
    files: list[str] | None = None
    verification_steps: list[str] = Field(default_factory=list)
    batch: int = Field(default=1, ge=1)

    @field_validator("number", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, float):
            raise ValueError(f'quote it ("{value}"): YAML reads an unquoted {value} as a number')
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError(f'quote it ("{value}"): YAML reads an unquoted number as a '
                             "number, not as written (010 is 8)")  # fmt: skip
        return value

    @field_validator("number")
    @classmethod
    def _number_safe(cls, value: str) -> str:
        return _safe(value, "task number")


class BatchSpec(BaseModel):
    """A batch: where its tasks merge, how they run and are verified, and the tasks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    repo: str = "."
    base: str = "main"
    workers: int = Field(default=1, ge=1, le=64)
    agent: str = Field(min_length=1)
    verify: list[str] = Field(default_factory=list)
    fix_rounds: int = Field(default=2, ge=0)
    timeout: float = Field(default=900.0, gt=0)
    tasks: list[TaskSpec] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name_safe(cls, value: str) -> str:
        return _safe(value, "batch name")

    @field_validator("verify", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def task(self, number: str) -> TaskSpec:
        return next(t for t in self.tasks if t.number == number)

    def branch(self, number: str) -> str:
        return f"onceq/{self.name}/{number}"

    def tag(self, number: str) -> str:
        """The value of the `Onceq-Task` trailer of a task's commits."""
        return f"{self.name}/{number}"


def parse(data: Any, source: str) -> BatchSpec:
    """A BatchSpec from parsed YAML, or BatchError in one line naming the field."""
    if not isinstance(data, dict):
        raise BatchError(f"{source}: expected a mapping with name, agent and tasks")
    try:
        spec = BatchSpec.model_validate(data)
    except ValidationError as exc:
        found = exc.errors(include_url=False)  # a typo first: it explains the rest
        err = min(found, key=lambda e: e["type"] != "extra_forbidden")
        loc = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in err["loc"]).lstrip(".")
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            model = TaskSpec if "tasks" in err["loc"] else BatchSpec
            close = difflib.get_close_matches(str(err["loc"][-1]), list(model.model_fields), 1)
            message = "unknown field" + (f" (did you mean {close[0]!r}?)" if close else "")
        raise BatchError(f"{source}: {loc or '(top level)'}: {message}") from None
    if "\\u0000" in json.dumps(spec.model_dump()).replace("\\\\", ""):  # a NUL, escaped
        raise BatchError(f"{source}: a NUL character (\\0) is not allowed in a batch file")
    seen: set[str] = set()
    for index, task in enumerate(spec.tasks):
        if task.number in seen:
            raise BatchError(f"{source}: tasks[{index}].number: {task.number!r} is used twice")
        seen.add(task.number)
    return spec


def load(path: str | Path) -> BatchSpec:
    """Read and check a batch file (safe YAML loading: plain data only)."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BatchError(f"cannot read batch file {source!r}: {exc.strerror}") from None
    data = safe_load(text, source, BatchError)
    return parse(data, source)
