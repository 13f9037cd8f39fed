"""A PostgreSQL wire-protocol proxy for fault injection: lost commits, a frozen network, cuts.

Standard library only. The proxy listens on 127.0.0.1 and forwards to one upstream server.
It parses message boundaries in both directions (not their contents, except the few it
needs) so that it can spot a COMMIT and drop exactly the server's answer to it: the
commit then happens on the server while the client only sees its connection drop, which
is the ambiguity a durable queue has to survive. A write sent outside a transaction
(autocommit: it commits on its own) counts as a COMMIT too.

Every read, every write and every thread is bounded: daemon threads, short select
timeouts, close() joins with a timeout, so a misbehaving proxy cannot hang a test run.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType
from urllib.parse import unquote, urlsplit, urlunsplit

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
TICK = 0.1  # how often blocked loops look at their stop flags
JOIN_TIMEOUT = 2.0
HOST_PARAMS = frozenset({"host", "hostaddr", "port"})


class _ProtocolError(Exception):
    """The bytes are not the PostgreSQL protocol: the connection is cut."""


def _is_commit(query: bytes) -> bool:
    """Only a statement that is exactly COMMIT (no batch such as 'BEGIN; ...; COMMIT')."""
    return query.split(b"\0", 1)[0].strip().rstrip(b"; \t\r\n").upper() == b"COMMIT"


def _keyword(query: bytes) -> bytes:
    """The statement's first word, upper-cased (BEGIN, COMMIT, ROLLBACK, WITH…)."""
    words = query.split(b"\0", 1)[0].strip().split(None, 1)
    return words[0].rstrip(b";").upper() if words else b""


def _is_write(query: bytes) -> bool:
    """A statement that changes rows: sent outside a transaction (autocommit), it commits
    on its own, so its answer is a COMMIT's answer."""
    text = b"\n".join(
        line.split(b"--", 1)[0] for line in query.split(b"\0", 1)[0].upper().splitlines()
    )
    return any(w in text for w in (b"UPDATE ONCEQ", b"INSERT INTO", b"DELETE FROM"))


def _cstr(body: bytes, pos: int) -> tuple[bytes, int]:
    """The NUL-terminated string at `pos` and the position after its NUL."""
    end = body.find(b"\0", pos)
    if end < 0:
        raise _ProtocolError("string without its NUL")
    return body[pos:end], end + 1


def _split(buf: bytearray) -> list[bytes]:
    """Pops every complete tagged message (type byte + int32 length) off `buf`."""
    msgs, pos = [], 0
    while len(buf) - pos >= 5:
        (length,) = struct.unpack_from("!I", buf, pos + 1)
        if length < 4:
            raise _ProtocolError(f"message length {length}")
        if len(buf) - pos < 1 + length:
            break
        msgs.append(bytes(buf[pos : pos + 1 + length]))
        pos += 1 + length
    del buf[:pos]
    return msgs


_Handler = Callable[[bytearray], tuple[bytes, bool]]


class _Gate:
    """Freeze/thaw shared by every connection of a proxy: pumps wait here before each
    read and each write, so a frozen proxy neither reads nor forwards a byte."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.frozen = False

    def set(self, frozen: bool) -> None:
        with self._cond:
            self.frozen = frozen
            self._cond.notify_all()

    def wait_open(self) -> bool:
        """True when open; False after one TICK still frozen (so callers can re-check)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self.frozen, TICK)


class _Connection:
    """One client connection and its upstream twin, with a pump thread per direction.

    Commit loss is exact, pipelining included: the client->server pump counts the
    messages the server answers with one ReadyForQuery (the startup, each Query, Sync and
    FunctionCall); the server->client pump counts the 'Z's. The answer to sync point k is
    everything after 'Z' number k-1 up to and including 'Z' number k.
    """

    def __init__(self, proxy: PgProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server: socket.socket | None = None
        self.closed = False
        self._lock = threading.Lock()
        self._alive = 1  # pump threads still running; the last one closes the sockets
        self._phase = "startup"  # then "tagged", or "raw" for a CancelRequest
        self._syncs = 0  # sync points forwarded to the server
        self._zs = 0  # ReadyForQuery messages seen from the server
        self._lose_at: int | None = None  # the sync point whose answer is dropped
        self._commit_stmts: set[bytes] = set()  # prepared statements that are COMMIT
        self._stmts: dict[bytes, bytes] = {}  # prepared statement name: its text
        self._texts: list[bytes] = []  # what the transaction ran since its BEGIN
        self._batch_commit = False  # a COMMIT was bound since the last Sync
        self._in_tx = False  # between a BEGIN and its COMMIT or ROLLBACK
        self.threads = [threading.Thread(target=self._run_client, daemon=True)]
        self.threads[0].start()

    def shutdown(self) -> None:
        """Both sides at once (FIN to each); blocked pumps wake up and exit."""
        self.closed = True
        for sock in (self.client, self.server):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close_sockets(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.close()

    def _run_client(self) -> None:
        try:
            server = socket.create_connection(self.proxy.upstream, timeout=5)
            server.settimeout(None)
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            self._finish()
            return
        self.server = server
        with self._lock:
            self._alive += 1
        args = (server, self.client, self._from_server)
        self.threads.append(threading.Thread(target=self._pump, args=args, daemon=True))
        self.threads[-1].start()
        self._pump(self.client, server, self._from_client)

    def _finish(self) -> None:
        self.shutdown()
        with self._lock:
            self._alive -= 1
            last = self._alive == 0
        if last:
            self.close_sockets()

    def _pump(self, src: socket.socket, dst: socket.socket, handle: _Handler) -> None:
        """Reads `src`, lets `handle` turn the bytes into what to forward, writes `dst`.
        Partial messages stay in `buf`; while frozen, nothing is read or written. Either
        side ending (or garbage) ends the whole connection."""
        gate, buf = self.proxy.gate, bytearray()
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(src, selectors.EVENT_READ)
                while not self.closed:
                    if not gate.wait_open() or not sel.select(TICK) or gate.frozen:
                        continue
                    data = src.recv(65536)
                    if not data:
                        return
                    buf += data
                    out, go_on = handle(buf)
                    view = memoryview(out)  # written in pieces, so a freeze stops it midway
                    while view and not self.closed:
                        if gate.wait_open():
                            view = view[dst.send(view[:16384]) :]
                    if not go_on:
                        return
        except (OSError, _ProtocolError):
            pass
        finally:
            self._finish()

    def _from_client(self, buf: bytearray) -> tuple[bytes, bool]:
        out = bytearray()
        while self._phase == "startup" and len(buf) >= 8:
            length, code = struct.unpack_from("!II", buf)
            if length == 8 and code in (SSL_REQUEST, GSSENC_REQUEST):
                del buf[:8]
                self.client.sendall(b"N")  # no encryption: the session goes on in plain text
                continue
            if length < 8:
                raise _ProtocolError(f"startup length {length}")
            if len(buf) < length:
                break
            out += buf[:length]
            del buf[:length]
            if length == 16 and code == CANCEL_REQUEST:
                self._phase = "raw"
            else:
                self._phase, self._syncs = "tagged", 1  # the startup ends with a 'Z'
        if self._phase == "raw":
            out += buf
            buf.clear()
        elif self._phase == "tagged":
            for msg in _split(buf):
                self._look_at(msg)
                out += msg
        return bytes(out), True

    def _look_at(self, msg: bytes) -> None:
        """Tracks COMMITs (simple Query, or Parse/Bind ... Sync) and decides their fate
        before the message that makes the server answer is forwarded."""
        kind, body = msg[:1], msg[5:]
        if kind == b"Q":
            self._syncs += 1
            query = body.split(b"\0", 1)[0]
            if _is_commit(body):
                self._decide()
            else:
                self._remember(query)
                if not self._in_tx and _is_write(query):
                    self._decide()  # a write on its own: it commits by itself
        elif kind == b"P":
            name, pos = _cstr(body, 0)
            query, _ = _cstr(body, pos)
            self._stmts[name] = query
            if _is_commit(query):
                self._commit_stmts.add(name)
            else:
                self._commit_stmts.discard(name)
        elif kind == b"B":
            _, pos = _cstr(body, 0)
            stmt, _ = _cstr(body, pos)
            self._batch_commit |= stmt in self._commit_stmts
            if stmt not in self._commit_stmts:
                query = self._stmts.get(stmt, b"")
                self._remember(query)
                self._batch_commit |= not self._in_tx and _is_write(query)
        elif kind == b"C" and body[:1] == b"S":
            self._commit_stmts.discard(_cstr(body, 1)[0])
        elif kind == b"S":
            self._syncs += 1
            if self._batch_commit:
                self._batch_commit = False
                self._decide()
        elif kind == b"F":
            self._syncs += 1

    def _remember(self, query: bytes) -> None:
        word = _keyword(query)
        if word == b"BEGIN":
            self._texts, self._in_tx = [], True
        elif word == b"ROLLBACK":
            self._in_tx = False
        self._texts.append(query)

    def _decide(self) -> None:
        texts, self._texts, self._in_tx = self._texts, [], False
        if self.proxy._decide_commit(texts) and self._lose_at is None:
            self._lose_at = self._syncs

    def _from_server(self, buf: bytearray) -> tuple[bytes, bool]:
        if self._phase == "raw":
            out = bytes(buf)
            buf.clear()
            return out, True
        out = bytearray()
        for msg in _split(buf):
            lost = self._lose_at is not None and self._zs + 1 >= self._lose_at
            if msg[:1] == b"Z":
                self._zs += 1
            if not lost:
                out += msg
            elif msg[:1] == b"Z":  # the end of the COMMIT's answer: hang up both sides
                return bytes(out), False
        return bytes(out), True


class PgProxy:
    """Listens on 127.0.0.1 (an ephemeral port) and forwards to a PostgreSQL server."""

    def __init__(
        self, upstream: tuple[str, int] = ("127.0.0.1", 5432), *, seed: int | None = None
    ) -> None:
        self.upstream = upstream
        self.port = 0
        self.gate = _Gate()
        self._rng = random.Random(seed)
        self._rate = 0.0
        self._when: Callable[[str], bool] | None = None
        self._limit: int | None = None
        self._lock = threading.Lock()
        self._stats = {"connections": 0, "commits_seen": 0, "commits_lost": 0}
        self._conns: list[_Connection] = []
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot: connections accepted, COMMITs seen, COMMITs whose answer was lost."""
        with self._lock:
            return dict(self._stats)

    def start(self) -> PgProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self._listener, self.port = listener, listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> PgProxy:
        return self.start() if self._listener is None else self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stops listening, cuts every connection, joins every thread (bounded)."""
        self._stopping = True
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.shutdown()
        for conn in conns:
            for thread in conn.threads:
                thread.join(JOIN_TIMEOUT)
            conn.close_sockets()  # idempotent; only matters if a pump did not exit

    def url(self, pg_url: str) -> str:
        """`pg_url` pointing at the proxy. host/hostaddr/port in the query string would
        override the URL's host in libpq (and bypass the proxy), so they are dropped."""
        parts = urlsplit(pg_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        kept = [
            p for p in parts.query.split("&") if p and unquote(p.split("=")[0]) not in HOST_PARAMS
        ]
        return urlunsplit(parts._replace(netloc=netloc, query="&".join(kept)))

    def lose_commits(
        self, rate: float, *, when: Callable[[str], bool] | None = None, limit: int | None = None
    ) -> None:
        """From now on each COMMIT happens on the server, but with probability `rate` its
        answer is dropped and the connection cut. 0 turns it off. `when` picks the
        transactions it may happen to (it is given their statements since BEGIN, as one
        text); `limit` stops it after that many."""
        with self._lock:
            self._rate, self._when, self._limit = rate, when, limit

    def freeze(self) -> None:
        """A silent network: nothing read, nothing forwarded, no FIN, no RST."""
        self.gate.set(True)

    def thaw(self) -> None:
        self.gate.set(False)

    def cut_all(self) -> None:
        """Closes every current connection, both sides, at once."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.shutdown()

    def _decide_commit(self, texts: list[bytes]) -> bool:
        """Called by a connection on each COMMIT: True when its answer is to be lost."""
        with self._lock:
            self._stats["commits_seen"] += 1
            if self._rate <= 0 or self._limit == 0:
                return False
            text = "\n".join(t.decode(errors="replace") for t in texts)
            if self._when is not None and not self._when(text):
                return False
            lost = self._rng.random() < self._rate
            self._stats["commits_lost"] += lost
            if lost and self._limit is not None:
                self._limit -= 1
            return lost

    def _accept_loop(self) -> None:
        assert self._listener is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            while not self._stopping:
                if not sel.select(TICK) or self._stopping:
                    continue
                try:
                    client, _ = self._listener.accept()
                except OSError:
                    continue
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with self._lock:
                    if self._stopping:
                        client.close()
                        return
                    self._stats["connections"] += 1
                    self._conns = [c for c in self._conns if any(t.is_alive() for t in c.threads)]
                    self._conns.append(_Connection(self, client))
