"""Tasks: a handler, its retry and timeout policy, and its payload's validation.

A payload is validated against the handler's signature at enqueue, so a wrong payload
is refused before anything is stored, with an error naming the argument. What is stored
is the validated payload in JSON form; the worker validates it again on the way in, which
turns JSON back into the annotated types (datetime, UUID, models…).
"""

from __future__ import annotations

import inspect
import random
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, NotRequired, Required

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config
from pydantic.errors import PydanticSchemaGenerationError, PydanticUserError

# pydantic needs typing_extensions' TypedDict before Python 3.12 (it is pydantic's own dependency)
from typing_extensions import TypedDict

from onceq.errors import PayloadError
from onceq.models import Job, NewJob
from onceq.store import jsoncodec

if TYPE_CHECKING:
    from onceq.app import App

# The options enqueue() takes besides the payload. A handler parameter of the same
# name wins: pass the option through configure() instead.
ENQUEUE_OPTIONS = ("key", "delay", "run_at", "priority", "queue")
MAX_BACKOFF = 3600.0
MAX_DELAY = 10 * 365 * 86400.0  # ten years: beyond, a stored time may not fit a date
MAX_NAME_BYTES = 1024  # task, queue and key names live in B-tree indexes (PostgreSQL: < 2.7 KB)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: base * 2**(attempt-1) * U(0.5, 1.5), capped."""

    retries: int = 0
    backoff: float = 1.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before the attempt after `attempt` (1-based)."""
        if self.backoff <= 0:
            return 0.0
        base = min(self.backoff * 2.0 ** (attempt - 1), MAX_BACKOFF)
        return float(base * random.uniform(0.5, 1.5))

    def retries_on(self, exc: BaseException) -> bool:
        """Whether this error is worth another attempt."""
        return isinstance(exc, self.retry_on) and not isinstance(exc, PayloadError)


class Task:
    """A registered handler. Call it directly to run it in-process, unqueued."""

    def __init__(
        self,
        app: App,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        retries: int = 0,
        retry_backoff: float = 1.0,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        timeout: float | None = None,
        subprocess: bool = False,
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = name or f"{fn.__module__}.{fn.__name__}"
        self.queue = queue
        self.priority = priority
        if retries < 0:
            raise ValueError(f"task {self.name}: retries must be >= 0")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"task {self.name}: timeout must be positive")
        self.retry = RetryPolicy(retries, retry_backoff, retry_on)
        self.timeout = timeout
        self.is_async = inspect.iscoroutinefunction(fn)
        if subprocess and self.is_async:
            raise ValueError(f"task {self.name}: an async handler cannot run in a subprocess")
        if subprocess and "<locals>" in fn.__qualname__:
            raise ValueError(
                f"task {self.name}: a subprocess handler must be importable "
                "(defined at module level)"
            )
        self.subprocess = subprocess
        _check_names(self.name, "task name")  # before the name is used anywhere
        self._signature = inspect.signature(fn)
        self._params = _payload_adapter(self.name, fn, self._signature)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    @property
    def max_attempts(self) -> int:
        """Attempts in all: the first, then `retries` more."""
        return self.retry.retries + 1

    # -- payloads ------------------------------------------------------------------

    def validate(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The payload as stored: bound to the signature, validated, in JSON form."""
        bound: dict[str, Any] = {}
        if args:
            try:
                bound = _flatten_var_keyword(
                    self._signature, dict(self._signature.bind_partial(*args).arguments)
                )
            except TypeError as exc:
                raise PayloadError(f"{self.name}: {exc}") from exc
            for name in kwargs.keys() & bound.keys():
                raise PayloadError(f"{self.name}: argument {name!r} given twice")
        bound.update(kwargs)
        try:
            checked = self._params.validate_python(bound)
            payload: dict[str, Any] = self._params.dump_python(checked, mode="json")
        except ValidationError as exc:
            raise PayloadError(f"{self.name}: {_describe(exc)}") from exc
        return payload  # encoded once, by the store (which refuses NaN, lone surrogates)

    def load(self, text: str) -> dict[str, Any]:
        """A stored payload (JSON text) as the handler's keyword arguments."""
        return _load(self.name, self._params, text)

    # -- enqueue -------------------------------------------------------------------

    def configure(self, **options: Any) -> Call:
        """Set enqueue options (key, delay, run_at, priority, queue) for one enqueue."""
        return Call(self, options)

    def enqueue(self, *args: Any, **kwargs: Any) -> Job:
        """Validate the payload against the handler's signature and store the job.

        Also takes the options key= (idempotency: an existing job with this key is
        returned instead), delay= (seconds), run_at= (datetime), priority= and queue=.
        The job is committed when this returns.
        """
        options = {
            k: kwargs.pop(k)
            for k in ENQUEUE_OPTIONS
            if k in kwargs and k not in self._signature.parameters
        }
        return Call(self, options).enqueue(*args, **kwargs)

    def enqueue_many(self, payloads: Iterable[Mapping[str, Any]], **options: Any) -> list[int]:
        """Validate every payload, then store all the jobs in one transaction; their ids
        in order. Nothing is stored if any payload is refused. Takes the options of
        enqueue() but `key` (one key would make them all the same job)."""
        if "key" in options:
            raise PayloadError(
                f"{self.name}: enqueue_many takes no key; enqueue keyed jobs one by one"
            )
        jobs = [self.new_job(self.validate((), payload), options) for payload in payloads]
        return self.app.store.job_insert_many(jobs)

    def new_job(self, payload: dict[str, Any], options: Mapping[str, Any]) -> NewJob:
        """The NewJob for an already validated payload."""
        unknown = set(options) - set(ENQUEUE_OPTIONS)
        if unknown:
            raise PayloadError(
                f"{self.name}: unknown enqueue option(s) {', '.join(sorted(unknown))}"
            )
        run_at = options.get("run_at")
        if run_at is not None and (not isinstance(run_at, datetime) or run_at.tzinfo is None):
            raise PayloadError(f"{self.name}: run_at must be a timezone-aware datetime")
        try:
            delay = float(options.get("delay") or 0.0)
        except (TypeError, ValueError):
            raise PayloadError(f"{self.name}: delay must be a number of seconds") from None
        if not 0 <= delay <= MAX_DELAY:  # also refuses NaN and infinity
            raise PayloadError(f"{self.name}: delay must be between 0 and {MAX_DELAY:.0f} seconds")
        priority = options.get("priority", self.priority)
        if not isinstance(priority, int) or not -(2**31) <= priority < 2**31:
            raise PayloadError(f"{self.name}: priority must be a whole number within ±2**31")
        key = options.get("key")
        queue = options.get("queue") or self.queue or self.app.default_queue
        _check_names(queue, "queue name")
        if key is not None:
            _check_names(key, "key")
        return NewJob(
            task=self.name,
            args=payload,
            queue=queue,
            priority=priority,
            delay=delay,
            run_at=run_at,
            max_attempts=self.max_attempts,
            key=key,
        )


class Call:
    """A task with enqueue options set: `task.configure(key="k").enqueue(x=1)`."""

    def __init__(self, task: Task, options: Mapping[str, Any]) -> None:
        self.task = task
        self.options = dict(options)

    def enqueue(self, *args: Any, **kwargs: Any) -> Job:
        """Validate and store the job (see Task.enqueue)."""
        payload = self.task.validate(args, kwargs)
        return self.task.app.store.job_insert(self.task.new_job(payload, self.options))


def load_payload(fn: Callable[..., Any], text: str) -> dict[str, Any]:
    """Decode and validate a stored payload for a bare handler (a subprocess's side)."""
    name = f"{fn.__module__}.{fn.__qualname__}"
    return _load(name, _payload_adapter(name, fn, inspect.signature(fn)), text)


def _load(name: str, adapter: TypeAdapter[Any], text: str) -> dict[str, Any]:
    try:
        raw = jsoncodec.loads(text)
    except ValueError as exc:
        raise PayloadError(f"{name}: the stored payload is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise PayloadError(f"{name}: the stored payload is not a JSON object")
    try:
        loaded: dict[str, Any] = adapter.validate_python(raw)
    except ValidationError as exc:
        raise PayloadError(f"{name}: {_describe(exc)}") from exc
    return loaded


def _payload_adapter(
    name: str, fn: Callable[..., Any], signature: inspect.Signature
) -> TypeAdapter[Any]:
    """A validator for the handler's keyword arguments (a TypedDict of its parameters)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: validate those as Any
        hints = {}
    fields: dict[str, Any] = {}
    extra: Literal["allow", "forbid"] = "forbid"
    for param in signature.parameters.values():
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            raise TypeError(f"task {name}: *{param.name} cannot be stored; use named parameters")
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(
                f"task {name}: positional-only parameter {param.name!r} is not supported"
            )
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            extra = "allow"
            continue
        hint = hints.get(param.name, Any)
        required = param.default is inspect.Parameter.empty
        fields[param.name] = Required[hint] if required else NotRequired[hint]
    make_typeddict: Any = TypedDict  # built at run time from the signature
    shape = with_config(ConfigDict(extra=extra))(make_typeddict(f"{name}.payload", fields))
    try:
        return TypeAdapter(shape)
    except (PydanticSchemaGenerationError, PydanticUserError) as exc:
        raise TypeError(
            f"task {name}: a parameter's type cannot be validated and stored as JSON ({exc})"
        ) from exc


def _flatten_var_keyword(signature: inspect.Signature, bound: dict[str, Any]) -> dict[str, Any]:
    for param in signature.parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD and param.name in bound:
            extra = bound.pop(param.name)
            bound.update(extra)
    return bound


def _describe(exc: ValidationError) -> str:
    """A ValidationError as one line naming each argument."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "missing":
            parts.append(f"missing argument {loc!r}")
        elif err["type"] == "extra_forbidden":
            parts.append(f"unknown argument {loc!r}")
        else:
            value = repr(err.get("input"))
            value = value if len(value) <= 40 else value[:37] + "..."
            parts.append(f"argument {loc!r}: {err['msg']} (got {value})")
    return "; ".join(parts)


def _check_names(value: Any, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise PayloadError(f"{what} must be a non-empty string, got {value!r}")
    if "\x00" in value:
        raise PayloadError(f"{what} {value!r} contains a NUL character, which SQL text cannot hold")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise PayloadError(f"{what} {value!r} is not valid UTF-8 text (a lone surrogate)") from None
    if size > MAX_NAME_BYTES:
        raise PayloadError(
            f"{what} {value[:40]!r}... is {size} bytes long; names are at most "
            f"{MAX_NAME_BYTES} bytes (they are indexed)"
        )
