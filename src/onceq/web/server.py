"""Serving the dashboard with uvicorn, and the rules for where it may listen."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from onceq.errors import ConfigError
from onceq.store import open_store
from onceq.web.app import Options, create_app
from onceq.web.security import LOOPBACK_NAMES, Credentials, is_loopback

log = logging.getLogger("onceq.web")


@dataclass(frozen=True, slots=True)
class Plan:
    """Where and how the dashboard listens, checked."""

    host: str
    port: int
    options: Options

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def plan(
    host: str,
    port: int,
    auth: str | None,
    *,
    read_only: bool = False,
    metrics_public: bool = False,
    allow_hosts: Iterable[str] = (),
) -> Plan:
    """Check a listening address and its credentials; ConfigError (one line) if the
    dashboard would be reachable from elsewhere without them."""
    if not 0 < port < 65536:
        raise ConfigError(f"port must be between 1 and 65535, got {port}")
    try:
        credentials = Credentials.parse(auth) if auth else None
    except ValueError as exc:
        raise ConfigError(f"--auth / ONCEQ_DASHBOARD_AUTH: {exc}") from None
    if credentials is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without credentials: anyone who can reach it "
            "could act on your jobs; pass --auth USER:PASSWORD (or set ONCEQ_DASHBOARD_AUTH), "
            "or listen on 127.0.0.1"
        )
    # Without credentials, only this machine's names are answered (no DNS rebinding).
    hosts = None if credentials else frozenset({*LOOPBACK_NAMES, host.strip("[]").lower(),
                                                *(h.lower() for h in allow_hosts)})  # fmt: skip
    options = Options(credentials=credentials, read_only=read_only,
                      metrics_public=metrics_public, hosts=hosts)  # fmt: skip
    return Plan(host, port, options)


def serve(url: str, chosen: Plan, *, log_level: str = "info") -> int:
    """Run the dashboard until interrupted (SIGINT/SIGTERM); 0."""
    import uvicorn

    store = open_store(url, create=False)  # nothing to show where no store exists yet
    try:
        app = create_app(store, chosen.options)
        config = uvicorn.Config(
            app,
            host=chosen.host,
            port=chosen.port,
            log_level=log_level,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=2,
        )
        auth = "basic auth" if chosen.options.credentials else "loopback only, no auth"
        print(f"onceq dashboard on {chosen.address} ({auth}); metrics at /metrics", flush=True)
        uvicorn.Server(config).run()
    finally:
        store.close()
    return 0
