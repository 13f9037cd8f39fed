"""`onceq dashboard`: parse, check the extra is there, hand over to onceq.web.server."""

from __future__ import annotations

from importlib.util import find_spec
from typing import Annotated

import typer

from onceq.cli.common import UrlOption, errors, fail, store_url

NEEDS = ("starlette", "jinja2", "uvicorn", "prometheus_client")


def dashboard(
    url: UrlOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8400,
    auth: Annotated[
        str | None,
        typer.Option(
            envvar="ONCEQ_DASHBOARD_AUTH",
            help="USER:PASSWORD for HTTP basic auth (needed beyond loopback).",
            show_default=False,
        ),
    ] = None,
    read_only: Annotated[bool, typer.Option(help="Show only: no retry or cancel.")] = False,
    metrics_public: Annotated[
        bool, typer.Option(help="Serve /metrics without credentials.")
    ] = False,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(help="Another Host name to answer without auth (a proxy's; repeatable)."),
    ] = None,
) -> None:
    """The web dashboard, with Prometheus metrics at /metrics."""
    missing = [m for m in NEEDS if find_spec(m) is None]
    if find_spec("python_multipart") is None and find_spec("multipart") is None:
        missing.append("python-multipart")
    if missing:
        fail(f"the dashboard needs {', '.join(missing)}: pip install 'onceq[dashboard]'")
    from onceq.web import server

    with errors():
        chosen = server.plan(
            host,
            port,
            auth,
            read_only=read_only,
            metrics_public=metrics_public,
            allow_hosts=allow_host or (),
        )
        raise typer.Exit(server.serve(store_url(url), chosen))
