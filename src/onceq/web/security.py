"""Who may see the dashboard and act through it.

- Bound to loopback by default; anything else needs credentials (server.py refuses it
  otherwise). On loopback without credentials, only a loopback `Host` is answered: a web
  page elsewhere cannot rebind a name of its own to 127.0.0.1 and read the dashboard.
- With credentials, every route needs them (HTTP basic, compared in constant time),
  `/metrics` too unless it is made public.
- Every action is a POST carrying the CSRF token of its form (a random cookie, SameSite
  strict, echoed in a hidden field) from the dashboard's own origin (Origin, else
  Referer, must match), and none is possible in read-only mode.
- Every response forbids inline script and framing (Content-Security-Policy): user data
  that reached a page unescaped still could not run.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSRF_COOKIE = "onceq_csrf"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; "
     b"img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user and password for HTTP basic auth."""

    user: str
    password: str

    @classmethod
    def parse(cls, text: str) -> Credentials:
        """USER:PASSWORD (the password may hold colons); ValueError naming the problem."""
        user, colon, password = text.partition(":")
        if not colon or not user or not password:
            raise ValueError("credentials must be USER:PASSWORD, both non-empty")
        return cls(user, password)

    def matches(self, header: str | None) -> bool:
        """Whether an Authorization header carries these credentials. The whole
        `user:password` is compared at once, in constant time."""
        if not header or header[:6].lower() != "basic ":
            return False
        try:
            given = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        expected = f"{self.user}:{self.password}".encode()
        return hmac.compare_digest(given, expected)


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the dashboard on this machine."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


def _host_name(header: str) -> str:
    """The name of a Host header, without its port."""
    if header.startswith("["):
        return header[1 : header.find("]")].lower() if "]" in header else header.lower()
    return header.rsplit(":", 1)[0].lower() if header.count(":") == 1 else header.lower()


class Guard:
    """ASGI middleware: the Host check, authentication, the CSRF cookie and the security
    headers, for every request the app answers."""

    def __init__(
        self,
        app: ASGIApp,
        credentials: Credentials | None,
        *,
        metrics_public: bool = False,
        hosts: Iterable[str] | None = None,
    ) -> None:
        self.app = app
        self.credentials = credentials
        self.metrics_public = metrics_public
        self.hosts = None if hosts is None else frozenset(h.lower() for h in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if self.hosts is not None and _host_name(headers.get("host", "")) not in self.hosts:
            await _plain(send, 400, "unexpected Host header: the dashboard answers to "
                                    "its own address only")  # fmt: skip
            return
        public = self.metrics_public and scope["path"] == "/metrics"
        if (
            self.credentials
            and not public
            and not self.credentials.matches(headers.get("authorization"))
        ):
            challenge = (b"www-authenticate", b'Basic realm="onceq", charset="UTF-8"')
            await _plain(send, 401, "authentication required", [challenge])
            return
        cookie = Request(scope).cookies.get(CSRF_COOKIE)
        fresh = None if cookie and len(cookie) == 43 else secrets.token_urlsafe(32)
        scope.setdefault("state", {})["csrf"] = fresh or cookie
        secure = "; Secure" if scope.get("scheme") == "https" else ""

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = list(HEADERS)
                if fresh:
                    value = f"{CSRF_COOKIE}={fresh}; Path=/; HttpOnly; SameSite=Strict{secure}"
                    extra.append((b"set-cookie", value.encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _plain(
    send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = f"{text}\n".encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()), *HEADERS, *(headers or [])],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def check_action(request: Request, form: Mapping[str, Any], read_only: bool) -> None:
    """Refuse (403) an action that is not allowed, not from the dashboard's own origin,
    or whose form does not carry this browser's CSRF token."""
    if read_only:
        raise HTTPException(403, "the dashboard is read-only")
    expected = f"{request.url.scheme}://{request.headers.get('host', '')}"
    origin = request.headers.get("origin")
    if origin is not None:
        same = origin == expected
    else:
        referer = urlsplit(request.headers.get("referer", ""))
        same = f"{referer.scheme}://{referer.netloc}" == expected
    if not same:
        raise HTTPException(403, "refused: the request did not come from this dashboard")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    token = form.get("csrf")
    if not cookie or not isinstance(token, str) or not hmac.compare_digest(token, cookie):
        raise HTTPException(403, "refused: missing or wrong CSRF token (reload the page)")
