"""The dashboard's routes: server-rendered pages, a few JSON reads, /metrics, live events.

Handlers read through the store's verbs and hand what they return to a template; actions
(retry, cancel, in bulk) are store verbs too. Nothing here writes SQL or decides policy.
Blocking store calls run on Starlette's thread pool.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from onceq.errors import InvalidTransition, JobNotFound, OnceqError, RunNotFound
from onceq.models import JOB_STATUSES, Stats
from onceq.store import Store
from onceq.store.views import ACTIONS, Action
from onceq.web import charts, forms
from onceq.web.live import ChangeFeed
from onceq.web.metrics import exposition
from onceq.web.render import environment, static
from onceq.web.security import Credentials, Guard, check_action

PAGE = 50


@dataclass(frozen=True, slots=True)
class Options:
    """How the dashboard runs. `hosts`: the Host names it answers to (None: any);
    `stats_ttl`: how long one read of the totals serves every page and scrape."""

    credentials: Credentials | None = None
    read_only: bool = False
    metrics_public: bool = False
    hosts: frozenset[str] | None = None
    stats_ttl: float = 2.0
    live: bool = True


class StatsCache:
    """One read of the totals at a time, shared for `ttl` seconds."""

    def __init__(self, store: Store, ttl: float) -> None:
        self.store, self.ttl = store, ttl
        self._lock = threading.Lock()
        self._value: tuple[float, Stats] | None = None

    def get(self) -> Stats:
        with self._lock:
            if self._value is None or time.monotonic() - self._value[0] >= self.ttl:
                self._value = (time.monotonic(), self.store.stats_read())
            return self._value[1]


class Dashboard:
    """The handlers, over one store."""

    def __init__(self, store: Store, options: Options) -> None:
        self.store = store
        self.options = options
        self.env = environment()
        self.stats = StatsCache(store, options.stats_ttl)
        self.feed = ChangeFeed(store)

    # -- rendering -----------------------------------------------------------------

    def page(self, request: Request, template: str, status: int = 200, **data: Any) -> Response:
        html = self.env.get_template(template).render(
            request=request,
            csrf=request.state.csrf,
            read_only=self.options.read_only,
            live=self.options.live,
            **data,
        )
        return HTMLResponse(html, status_code=status)

    # -- pages ---------------------------------------------------------------------

    def overview(self, request: Request) -> Response:
        stats = self.stats.get()
        queues = sorted(set(stats.jobs) | set(stats.oldest_runnable))
        guarantees = {
            "lease_losses": sum(t.lease_losses for t in stats.tasks),
            "rescues": sum(t.rescues for t in stats.tasks),
            "stale_writes": sum(sum(t.stale_writes.values()) for t in stats.tasks),
            "duplicate_dispatches": sum(t.duplicate_dispatches for t in stats.tasks),
            "reruns_explained": sum(sum(t.reruns.values()) for t in stats.tasks),
            "reruns_unexplained": sum(t.reruns_unexplained for t in stats.tasks),
        }
        return self.page(request, "overview.html", title="Overview", nav="overview",
                         stats=stats, queues=queues, statuses=JOB_STATUSES,
                         chart=charts.throughput(stats.minutes), guarantees=guarantees,
                         workers=self.store.worker_list())  # fmt: skip

    def jobs(self, request: Request) -> Response:
        f = forms.job_filter(request.query_params)
        before = forms.integer(request.query_params, "before", 1)
        after = forms.integer(request.query_params, "after", 0)
        page = self.store.job_page(f, before=before, after=after, limit=PAGE)
        # What a bulk action reports on its way back (only in the form it writes it).
        done = re.fullmatch(r"(retry|cancel):(\d{1,19})", request.query_params.get("done", ""))
        return self.page(request, "jobs.html", title="Jobs", nav="jobs", f=f, page=page,
                         statuses=JOB_STATUSES, fields=forms.filter_fields(f),
                         done=done.groups() if done else None)  # fmt: skip

    def bulk_confirm(self, request: Request) -> Response:
        action = _action(request.query_params.get("action"))
        f = forms.job_filter(request.query_params)
        count, upto = self.store.job_match_count(f, action)
        return self.page(request, "bulk.html", title=f"{action.title()} jobs", nav="jobs",
                         f=f, action=action, count=count, upto=upto,
                         fields=forms.filter_fields(f), described=forms.describe(f),
                         applies=ACTIONS[action][0])  # fmt: skip

    def job(self, request: Request) -> Response:
        job_id = _path_id(request, "job_id")
        job = self.store.job_get(job_id)
        attempts = self.store.attempt_list(job_id)
        now = datetime.now(UTC)
        return self.page(request, "job.html", title=f"Job {job_id}", nav="jobs", job=job,
                         attempts=attempts, timeline=charts.timeline(attempts, now),
                         now=now)  # fmt: skip

    def runs(self, request: Request) -> Response:
        offset = forms.integer(request.query_params, "offset", 0) or 0
        runs = self.store.run_list(limit=PAGE + 1, offset=offset)
        return self.page(request, "runs.html", title="Workflow runs", nav="runs",
                         runs=runs[:PAGE], offset=offset, more=len(runs) > PAGE)  # fmt: skip

    def run(self, request: Request) -> Response:
        run_id = _path_id(request, "run_id")
        run = self.store.run_get(run_id)
        definition = self.store.run_definition(run_id)
        names = [s.name for s in run.steps]
        step = request.query_params.get("step") or (names[0] if names else None)
        if step is not None and step not in names:
            raise forms.BadInput(f"run {run_id} has no step {step!r}")
        first = forms.integer(request.query_params, "first", 0) or 0
        items = self.store.step_items(run_id, step, first, PAGE + 1) if step else []
        return self.page(request, "run.html", title=f"Run {run_id}", nav="runs", run=run,
                         dag=charts.dag(definition, run.steps), step=step,
                         items=items[:PAGE], first=first, more=len(items) > PAGE)  # fmt: skip

    def batches(self, request: Request) -> Response:
        return self.page(request, "batches.html", title="Batches", nav="batches",
                         batches=self.store.batch_list())  # fmt: skip

    def batch(self, request: Request) -> Response:
        name = request.path_params["name"]
        batch = self.store.batch_get(name)
        if batch is None:
            raise HTTPException(404, f"no batch named {name!r}")
        return self.page(request, "batch.html", title=f"Batch {name}", nav="batches",
                         batch=batch)  # fmt: skip

    def workers(self, request: Request) -> Response:
        return self.page(request, "workers.html", title="Workers", nav="workers",
                         workers=self.store.worker_list())  # fmt: skip

    def metrics(self, request: Request) -> Response:
        return Response(exposition(self.stats.get()), media_type=CONTENT_TYPE_LATEST)

    def api_stats(self, request: Request) -> Response:
        return JSONResponse(_jsonable(dataclasses.asdict(self.stats.get())))

    def api_job(self, request: Request) -> Response:
        job_id = _path_id(request, "job_id")
        job = self.store.job_get(job_id)
        attempts = self.store.attempt_list(job_id)
        return JSONResponse({"job": job.to_json(), "attempts": [a.to_json() for a in attempts]})

    # -- actions (POST, CSRF token and same origin) --------------------------------

    async def act(self, request: Request) -> Response:
        form = await request.form()
        check_action(request, form, self.options.read_only)
        path = request.url.path
        if path == "/jobs/bulk":
            action = _action(form.get("action"))
            f = forms.job_filter(form)
            upto = forms.integer(form, "upto", 0) or 0
            verb = self.store.job_bulk_retry if action == "retry" else self.store.job_bulk_cancel
            done = await run_in_threadpool(verb, f, upto)
            return RedirectResponse(f"/jobs?{forms.query(f, done=f'{action}:{done}')}", 303)
        job_id = _path_id(request, "job_id")
        if path.endswith("/retry"):
            await run_in_threadpool(self.store.job_retry, job_id)
        else:
            before = await run_in_threadpool(self.store.job_cancel, job_id)
            if before not in ("pending", "running"):
                raise InvalidTransition(f"job {job_id} already finished: it is {before}")
        return RedirectResponse(f"/jobs/{job_id}", 303)

    async def events(self, request: Request) -> Response:
        return StreamingResponse(
            self.feed.events(request.is_disconnected),
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no"},
        )

    def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = static(name)
        if body is None:
            raise HTTPException(404, "no such file")
        kind = "text/javascript" if name.endswith(".js") else "text/css"
        return Response(body, media_type=kind, headers={"Cache-Control": "max-age=300"})

    # -- errors --------------------------------------------------------------------

    def error(self, request: Request, exc: Exception) -> Response:
        status, message = _status(exc)
        if request.url.path.startswith(("/api/", "/metrics", "/events")):
            return JSONResponse({"error": message}, status_code=status)
        csrf = getattr(request.state, "csrf", "")
        html = self.env.get_template("error.html").render(
            request=request, csrf=csrf, read_only=self.options.read_only, live=False,
            title=f"Error {status}", nav="", status=status, message=message,
        )  # fmt: skip
        return HTMLResponse(html, status_code=status)


def _status(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail)
    if isinstance(exc, JobNotFound | RunNotFound):
        return 404, str(exc)
    if isinstance(exc, forms.BadInput):
        return 400, str(exc)
    if isinstance(exc, InvalidTransition):
        return 409, str(exc)
    if isinstance(exc, OnceqError):
        return 503, str(exc)
    return 500, f"{type(exc).__name__}: the dashboard failed (see its log)"


def _action(value: Any) -> Action:
    if value not in ACTIONS:
        raise forms.BadInput(f"unknown action {value!r}: expected retry or cancel")
    action: Action = value
    return action


def _path_id(request: Request, name: str) -> int:
    number = forms.integer({name: request.path_params[name]}, name, 1)
    assert number is not None
    return number


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def create_app(store: Store, options: Options | None = None) -> Any:
    """The dashboard as an ASGI app (Starlette behind the security guard)."""
    opts = options or Options()
    board = Dashboard(store, opts)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if opts.live:
            board.feed.start()
        try:
            yield
        finally:
            board.feed.stop()

    routes = [
        Route("/", board.overview),
        Route("/jobs", board.jobs),
        Route("/jobs/bulk", board.bulk_confirm, methods=["GET"]),
        Route("/jobs/bulk", board.act, methods=["POST"]),
        Route("/jobs/{job_id}", board.job),
        Route("/jobs/{job_id}/retry", board.act, methods=["POST"]),
        Route("/jobs/{job_id}/cancel", board.act, methods=["POST"]),
        Route("/runs", board.runs),
        Route("/runs/{run_id}", board.run),
        Route("/batches", board.batches),
        Route("/batches/{name}", board.batch),
        Route("/workers", board.workers),
        Route("/metrics", board.metrics),
        Route("/events", board.events),
        Route("/api/stats", board.api_stats),
        Route("/api/jobs/{job_id}", board.api_job),
        Route("/static/{name}", board.asset),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        # Expected errors answer with their status; anything else is a 500 (and logged).
        exception_handlers={
            HTTPException: board.error,
            OnceqError: board.error,
            forms.BadInput: board.error,
            Exception: board.error,
        },
    )
    app.state.dashboard = board
    return Guard(app, opts.credentials, metrics_public=opts.metrics_public, hosts=opts.hosts)
