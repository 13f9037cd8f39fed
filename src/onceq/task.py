"""Tasks: a handler, its retry and timeout policy, and its payload's validation.

A payload is validated against the handler's signature at enqueue, so a wrong payload
is refused before anything is stored, with an error naming the argument. What is stored
is the validated payload in JSON form; the worker validates it again on the way in, which
turns JSON back into the annotated types (datetime, UUID, models…). Results go the same
way through the return annotation: a handler may return a model, a datetime or a set,
and a type that cannot be stored as JSON is refused when the task is registered.

`Task[P, R]` is generic over the handler's parameters and result, so a type checker
checks `resize.enqueue(image_id=7)` and knows what `app.wait(job).result` holds.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import random
import string
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, NotRequired, ParamSpec, Required, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config
from pydantic.errors import PydanticSchemaGenerationError, PydanticUserError
from pydantic_core import PydanticSerializationError

# pydantic needs typing_extensions' TypedDict before Python 3.12 (it is pydantic's own dependency)
from typing_extensions import TypedDict

from onceq.durations import MAX_SECONDS
from onceq.errors import PayloadError
from onceq.models import Job, NewJob
from onceq.store import jsoncodec

if TYPE_CHECKING:
    from onceq.app import App

# The options enqueue() takes besides the payload. A handler parameter of the same
# name wins: pass the option through configure() instead.
ENQUEUE_OPTIONS = ("key", "delay", "run_at", "priority", "queue")
MAX_BACKOFF = 3600.0
MAX_INT32 = 2**31 - 1  # the store's integer columns (PostgreSQL's integer)
# max_attempts (retries + 1, and one more by an operator's retry) fits one.
MAX_RETRIES = MAX_INT32 - 2
MAX_DELAY = 10 * 365 * 86400.0  # ten years: beyond, a stored time may not fit a date
MAX_NAME_BYTES = 1024  # task, queue and key names live in B-tree indexes (PostgreSQL: < 2.7 KB)
P = ParamSpec("P")
R = TypeVar("R")
_ANY: TypeAdapter[Any] = TypeAdapter(Any)  # serializes by each value's own type


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
        # Past the cap the power is not computed: from 2.0 ** 1024 on, it overflows.
        doublings = math.log2(MAX_BACKOFF) - math.log2(self.backoff)
        base = MAX_BACKOFF if attempt - 1 >= doublings else math.ldexp(self.backoff, attempt - 1)
        return float(base * random.uniform(0.5, 1.5))

    def retries_on(self, exc: BaseException) -> bool:
        """Whether this error is worth another attempt."""
        return isinstance(exc, self.retry_on) and not isinstance(exc, PayloadError)


class Task(Generic[P, R]):
    """A registered handler. Call it directly to run it in-process, unqueued."""

    def __init__(
        self,
        app: App,
        fn: Callable[P, Any],
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        retries: int = 0,
        retry_backoff: float = 1.0,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        timeout: float | None = None,
        subprocess: bool = False,
        concurrency: int | None = None,
        concurrency_key: str | None = None,
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = name or f"{fn.__module__}.{fn.__name__}"
        self.queue = queue
        self.priority = priority
        if (
            not isinstance(retries, int)
            or isinstance(retries, bool)
            or not 0 <= retries <= MAX_RETRIES
        ):
            # More, and every enqueue failed on PostgreSQL (SQLite took it).
            raise ValueError(f"task {self.name}: retries must be a whole number from 0 to "
                             f"{MAX_RETRIES}, got {retries!r}")  # fmt: skip
        if (
            not isinstance(retry_backoff, int | float)
            or isinstance(retry_backoff, bool)
            or not 0 <= retry_backoff <= MAX_BACKOFF
        ):  # NaN fails too: a retry would be due at no time at all
            raise ValueError(f"task {self.name}: retry_backoff must be seconds between 0 and "
                             f"{MAX_BACKOFF:.0f}, got {retry_backoff!r}")  # fmt: skip
        if timeout is not None and not 0 < timeout <= MAX_SECONDS:
            raise ValueError(f"task {self.name}: timeout must be positive, at most 100 years")
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
        self._result = result_adapter(self.name, fn)
        self._fields: dict[str, TypeAdapter[Any]] = {}
        self.concurrency = concurrency
        self.concurrency_key = _key_template(self.name, self._signature, concurrency,
                                             concurrency_key)  # fmt: skip
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
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

    def check_arguments(self, given: Mapping[str, Any]) -> str | None:
        """The first problem with arguments known before a run (a workflow step's):
        `given` maps each argument to a literal value, or to a Shape for a reference.
        Missing or unknown names, literals of the wrong type, references of a shape the
        parameter cannot take; None if none."""
        params = {
            n: p
            for n, p in self._signature.parameters.items()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        }
        extra = len(params) < len(self._signature.parameters)
        for name, param in params.items():
            if param.default is inspect.Parameter.empty and name not in given:
                return f"task {self.name} needs argument {name!r}"
        for name, value in given.items():
            if name not in params:
                if extra:
                    continue
                guess = _guess(name, params)
                return f"task {self.name} has no parameter {name!r}{guess}"
            adapter = self._field(name)
            if isinstance(value, Shape):
                problem = value.fits(adapter)
                if problem:
                    return f"argument {name!r}: {problem}"
                continue
            try:
                adapter.validate_python(value)
            except ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                return f"argument {name!r}: {err['msg']} (got {_short(value)})"
        return None

    def _field(self, name: str) -> TypeAdapter[Any]:
        if name not in self._fields:
            hints = _hints(self.fn)
            self._fields[name] = TypeAdapter(hints.get(name, Any))
        return self._fields[name]

    # -- results -------------------------------------------------------------------

    def dump_result(self, value: Any) -> str:
        """A handler's return value as the JSON text stored: serialized by its return
        annotation as arguments are (models, datetimes, sets…), and by the value's own
        type where it does not fit the annotation. PayloadError if it cannot be stored."""
        return dump_value(self._result, value, f"result of {self.name}")

    def load_result(self, raw: Any) -> R:
        """A stored result (decoded JSON) as the handler's return type."""
        try:
            value: R = self._result.validate_python(raw)
        except ValidationError as exc:
            raise PayloadError(f"result of {self.name}: {_describe(exc)}") from exc
        return value

    @property
    def result_schema(self) -> dict[str, Any]:
        """The JSON schema of the result (its return annotation)."""
        return _schema(self._result)

    # -- enqueue -------------------------------------------------------------------

    def configure(
        self,
        *,
        key: str | None = None,
        delay: float | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
    ) -> Call[P, R]:
        """Set enqueue options for one enqueue: `task.configure(key="k").enqueue(x=1)`.

        key: idempotency (an existing job with this key is returned instead); delay:
        seconds before it may run; run_at: an aware datetime; priority: higher runs
        first; queue: instead of the task's."""
        given = {"key": key, "delay": delay, "run_at": run_at, "priority": priority,
                 "queue": queue}  # fmt: skip
        return Call(self, {k: v for k, v in given.items() if v is not None})

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Validate the payload against the handler's signature and store the job.

        The job is committed when this returns — or, inside `with app.using(conn):`,
        when the caller's transaction commits. At run time it also takes the options
        key=, delay=, run_at=, priority= and queue= (a type checker sees only the
        handler's parameters: use configure() for options in checked code).
        """
        return Call(self, self._take_options(kwargs)).enqueue(*args, **kwargs)

    async def enqueue_async(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """enqueue() for async code (an async driver on PostgreSQL, a thread on SQLite)."""
        return await Call(self, self._take_options(kwargs)).enqueue_async(*args, **kwargs)

    def _take_options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Pop the enqueue options out of enqueue()'s keywords (a handler parameter of
        the same name keeps its value)."""
        return {
            k: kwargs.pop(k)
            for k in ENQUEUE_OPTIONS
            if k in kwargs and k not in self._signature.parameters
        }

    def enqueue_many(self, payloads: Iterable[Mapping[str, Any]], **options: Any) -> list[int]:
        """Validate every payload, then store all the jobs in one transaction; their ids
        in order. Nothing is stored if any payload is refused. Takes the options of
        enqueue() but `key` (one key would make them all the same job)."""
        if "key" in options:
            raise PayloadError(
                f"{self.name}: enqueue_many takes no key; enqueue keyed jobs one by one"
            )
        first, jobs = None, []
        for payload in payloads:
            valid = self.validate((), payload)
            if first is None:  # the options are the same for every job: checked once
                first = self.new_job(valid, options)
                jobs.append(first)
            else:
                f = first  # (dataclasses.replace costs 7 µs a job)
                jobs.append(NewJob(task=f.task, args=valid, queue=f.queue, priority=f.priority,
                                   delay=f.delay, run_at=f.run_at, max_attempts=f.max_attempts,
                                   concurrency_key=self.limit_key(valid),
                                   concurrency_limit=f.concurrency_limit))  # fmt: skip
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
            concurrency_key=self.limit_key(payload),
            concurrency_limit=self.concurrency,
        )

    def limit_key(self, payload: Mapping[str, Any]) -> str | None:
        """The concurrency key of a job of this task, from its payload (None: no limit)."""
        if self.concurrency_key is None:
            return None
        defaults = {
            name: p.default
            for name, p in self._signature.parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        values = {
            k: v if isinstance(v, str) else json.dumps(v, default=str)
            for k, v in {**defaults, **payload}.items()
        }
        key = self.concurrency_key.format_map(_Missing(self.name, values))
        _check_names(key, "concurrency key")
        return key


class Call(Generic[P, R]):
    """A task with enqueue options set: `task.configure(key="k").enqueue(x=1)`."""

    def __init__(self, task: Task[P, R], options: Mapping[str, Any]) -> None:
        self.task = task
        self.options = dict(options)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Validate and store the job (see Task.enqueue)."""
        payload = self.task.validate(args, kwargs)
        job: Job[Any] = self.task.app.store.job_insert(self.task.new_job(payload, self.options))
        return job

    async def enqueue_async(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Validate and store the job from async code (see Task.enqueue_async)."""
        payload = self.task.validate(args, kwargs)
        new = self.task.new_job(payload, self.options)
        store = await self.task.app.store_async()
        job: Job[Any] = await store.job_insert_async(new)
        return job


class Shape:
    """What a workflow reference is known to hold before the run: a list (a fan-out's
    `results`), a value of a known JSON schema (a plain step's `result`), or anything."""

    def __init__(self, text: str, *, is_list: bool = False, schema: dict[str, Any] | None = None):
        self.text = text
        self.is_list = is_list
        self.schema = schema or {}

    def fits(self, adapter: TypeAdapter[Any]) -> str | None:
        """Why a parameter of this type cannot take the reference's value, or None."""
        if self.is_list:
            try:
                adapter.validate_python([])
            except ValidationError:
                return f"{self.text} is a list, the parameter is {_type_name(adapter)}"
            return None
        given, wanted = self.schema.get("type"), _schema(adapter).get("type")
        if given is None or wanted is None or given == wanted:
            return None
        if given == "integer" and wanted == "number":
            return None
        return f"{self.text} is of JSON type {given}, the parameter takes {wanted}"


def dump_value(adapter: TypeAdapter[Any], value: Any, what: str) -> str:
    """`value` as JSON text, serialized by `adapter`'s type (or, where it does not fit
    that type, by its own); PayloadError naming `what` if it cannot be stored."""
    try:
        try:
            data = adapter.dump_python(value, mode="json", warnings="error")
        except PydanticSerializationError:
            data = _ANY.dump_python(value, mode="json")
    except PydanticSerializationError as exc:
        raise PayloadError(f"{what} cannot be stored as JSON: {exc}") from exc
    return jsoncodec.dumps(data, what)


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


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: validate those as Any
        return {}


def result_adapter(name: str, fn: Callable[..., Any]) -> TypeAdapter[Any]:
    """A serializer for the handler's result, from its return annotation (an async
    handler's is the awaited value's)."""
    hint = _hints(fn).get("return", Any)
    try:
        return TypeAdapter(hint)
    except (PydanticSchemaGenerationError, PydanticUserError) as exc:
        raise TypeError(f"task {name}: its return type cannot be stored as JSON ({exc})") from exc


def _schema(adapter: TypeAdapter[Any]) -> dict[str, Any]:
    try:
        return adapter.json_schema()
    except Exception:  # a type with no JSON schema: nothing known about its shape
        return {}


def _type_name(adapter: TypeAdapter[Any]) -> str:
    kind = _schema(adapter).get("type")
    return f"of JSON type {kind}" if kind else "not a list"


def _guess(name: str, known: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for a near miss, else nothing."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _payload_adapter(
    name: str, fn: Callable[..., Any], signature: inspect.Signature
) -> TypeAdapter[Any]:
    """A validator for the handler's keyword arguments (a TypedDict of its parameters)."""
    hints = _hints(fn)
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
            parts.append(f"argument {loc!r}: {err['msg']} (got {_short(err.get('input'))})")
    return "; ".join(parts)


class _Missing(dict[str, Any]):
    """Payload values for a key template; a parameter left out (it has a default) is
    named, in one line."""

    def __init__(self, task: str, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self.task = task

    def __missing__(self, name: str) -> Any:
        raise PayloadError(f"{self.task}: the concurrency key needs argument {name!r}")


def _key_template(
    name: str, signature: inspect.Signature, limit: int | None, template: str | None
) -> str | None:
    """A task's concurrency key template, checked: `{param}` fields of its handler only.
    `concurrency` alone limits the task as a whole (its name is the key)."""
    if limit is None:
        if template is not None:
            raise ValueError(f"task {name}: concurrency_key needs concurrency=N (the limit)")
        return None
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_INT32:
        # (A 32-bit column: more, and every enqueue failed on PostgreSQL.)
        raise ValueError(f"task {name}: concurrency must be a whole number from 1 to "
                         f"{MAX_INT32}, got {limit!r}")  # fmt: skip
    if template is None:
        return name.replace("{", "{{").replace("}", "}}")
    if not isinstance(template, str) or not template:
        raise ValueError(f"task {name}: concurrency_key must be a text template")
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"task {name}: bad concurrency_key {template!r}: {exc}") from None
    for _, field, spec, conversion in fields:
        if field is None:
            continue
        if field not in signature.parameters or spec or conversion:
            raise ValueError(
                f"task {name}: concurrency_key {template!r} may only use {{parameter}} "
                f"fields of the handler; {field!r} is not one"
            )
    return template


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
