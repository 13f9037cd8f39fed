"""The fault-injection proxy itself, against the real PostgreSQL server: it forwards, it
loses the answer to a COMMIT that did happen (whichever way psycopg sends the COMMIT),
it freezes and thaws, it cuts."""

from __future__ import annotations

import socket
import struct
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest

from tests.chaos.proxy import PgProxy

pytestmark = pytest.mark.postgres


@contextmanager
def scratch_table(url: str) -> Iterator[str]:
    """A table of its own, made and dropped on a direct connection."""
    name = f"onceq_proxy_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY)")
    try:
        yield name
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {name}")


def rows(url: str, table: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(f"SELECT id FROM {table} ORDER BY id")]


def test_url_points_at_the_proxy() -> None:
    px = PgProxy()
    px.port = 6543
    assert px.url("postgresql://u:p@localhost:5432/test?schema=s&options=-c%20a%3Db") == (
        "postgresql://u:p@127.0.0.1:6543/test?schema=s&options=-c%20a%3Db"
    )
    assert px.url("postgresql://h:1/x?host=/tmp&port=2&sslmode=disable") == (
        "postgresql://127.0.0.1:6543/x?sslmode=disable"
    )


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def tagged(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", 4 + len(body)) + body


def test_wire_protocol_against_a_fake_server() -> None:
    """Byte-exact, with a listening socket standing in for the server: SSL and GSSAPI
    requests answered by the proxy, a freeze in the middle of a message, the exact
    answer to a COMMIT dropped, a CancelRequest passed through."""
    startup = b"user\0u\0database\0d\0\0"
    startup = struct.pack("!II", 8 + len(startup), 196608) + startup
    query = tagged(b"Q", b"SELECT 1\0")
    ready = tagged(b"Z", b"I")
    with (
        socket.create_server(("127.0.0.1", 0)) as fake,
        PgProxy(upstream=fake.getsockname()).start() as px,
        socket.create_connection(("127.0.0.1", px.port), timeout=5) as client,
    ):
        fake.settimeout(5)
        for code in (80877103, 80877104):  # SSLRequest, GSSENCRequest
            client.sendall(struct.pack("!II", 8, code))
            assert client.recv(1) == b"N"
        client.sendall(startup + query[:3])
        server, _ = fake.accept()
        with server:
            server.settimeout(5)
            assert recv_exactly(server, len(startup)) == startup  # and nothing before it
            welcome = tagged(b"R", struct.pack("!I", 0)) + ready  # AuthenticationOk, ready
            server.sendall(welcome)
            assert recv_exactly(client, len(welcome)) == welcome
            px.freeze()
            client.sendall(query[3:])
            server.settimeout(0.3)
            with pytest.raises(TimeoutError):
                server.recv(100)
            px.thaw()
            server.settimeout(5)
            assert recv_exactly(server, len(query)) == query  # the held head with it

            px.freeze()
            server.sendall(ready)
            client.settimeout(0.3)
            with pytest.raises(TimeoutError):
                client.recv(100)
            px.thaw()
            client.settimeout(5)
            assert recv_exactly(client, len(ready)) == ready

            px.lose_commits(1.0)
            commit = tagged(b"Q", b" commit ;\0")
            client.sendall(commit)
            assert recv_exactly(server, len(commit)) == commit
            answer = tagged(b"C", b"COMMIT\0") + ready
            server.sendall(answer[:7])
            server.sendall(answer[7:])
            assert client.recv(100) == b""  # nothing of the answer, then end of stream
            assert server.recv(100) == b""
        assert px.stats == {"connections": 1, "commits_seen": 1, "commits_lost": 1}

        cancel = struct.pack("!IIII", 16, 80877102, 1234, 5678)
        with socket.create_connection(("127.0.0.1", px.port), timeout=5) as canceller:
            canceller.sendall(cancel)
            server, _ = fake.accept()
            with server:
                server.settimeout(5)
                assert recv_exactly(server, 16) == cancel


def test_pass_through(pg_server: str) -> None:
    with PgProxy().start() as px, psycopg.connect(px.url(pg_server)) as conn:
        assert conn.execute("SELECT 40 + %s, 'ok'", (2,)).fetchone() == (42, "ok")
        assert conn.execute("SELECT 'simple'").fetchone() == ("simple",)
        assert not conn.info.pgconn.ssl_in_use
        assert px.stats["connections"] >= 1
        assert px.stats["commits_lost"] == 0


def commit_by_method(conn: psycopg.Connection, table: str) -> None:
    """conn.commit(): a simple Query 'COMMIT'."""
    conn.execute(f"INSERT INTO {table} VALUES (%s)", (1,))
    conn.commit()


def commit_by_execute(conn: psycopg.Connection, table: str) -> None:
    """Autocommit, cursor.execute(b"COMMIT"): a simple Query too (no parameters)."""
    cur = conn.cursor()
    cur.execute(b"BEGIN")
    cur.execute(f"INSERT INTO {table} VALUES (%s)", (1,))
    cur.execute(b"COMMIT")


def prepare_commit(conn: psycopg.Connection) -> None:
    """The 6th cursor.execute(b"COMMIT") on a connection is prepared (Parse '_pg3_N' +
    Sync on their own, then Bind/Describe/Execute/Sync); later ones are only Bind/.../Sync
    with no Parse at all."""
    cur = conn.cursor()
    for _ in range(6):
        cur.execute(b"BEGIN")
        cur.execute(b"COMMIT")
    prepared = conn.execute("SELECT statement FROM pg_prepared_statements").fetchall()
    assert ("COMMIT",) in prepared


def commit_in_pipeline(conn: psycopg.Connection, table: str) -> None:
    """Pipeline mode: extended protocol, unnamed Parse 'COMMIT', one Sync for the batch."""
    with conn.pipeline():
        conn.execute(b"BEGIN")
        conn.execute(f"INSERT INTO {table} VALUES (%s)", (1,))
        conn.execute(b"COMMIT")


def no_warm_up(conn: psycopg.Connection) -> None:
    pass


@pytest.mark.parametrize(
    ("warm_up", "commit", "autocommit", "seen"),
    [
        (no_warm_up, commit_by_method, False, 1),
        (no_warm_up, commit_by_execute, True, 1),
        (prepare_commit, commit_by_execute, True, 7),
        (no_warm_up, commit_in_pipeline, True, 1),
    ],
    ids=["conn.commit", "execute", "prepared", "pipeline"],
)
def test_lost_commit_happened(
    pg_server: str,
    warm_up: Callable[[psycopg.Connection], None],
    commit: Callable[[psycopg.Connection, str], None],
    autocommit: bool,
    seen: int,
) -> None:
    with scratch_table(pg_server) as table, PgProxy().start() as px:
        with psycopg.connect(px.url(pg_server), autocommit=autocommit) as conn:
            warm_up(conn)
            px.lose_commits(1.0)
            with pytest.raises(psycopg.OperationalError):
                commit(conn, table)
        assert rows(pg_server, table) == [1]  # the commit happened all the same
        assert px.stats["commits_seen"] == seen
        assert px.stats["commits_lost"] == 1


@pytest.mark.parametrize("prepared", [False, True], ids=["parsed", "prepared"])
def test_a_write_on_its_own_is_a_commit_whose_answer_can_be_lost(
    pg_server: str, prepared: bool
) -> None:
    """Autocommit: a write sent outside a transaction commits by itself, so its answer is
    a COMMIT's answer (psycopg prepares it from its 6th run: then only Bind/Execute/Sync
    go on the wire). Reads on their own are not commits."""
    with scratch_table(pg_server) as table, PgProxy().start() as px:
        with psycopg.connect(px.url(pg_server), autocommit=True) as conn:
            earlier = list(range(1, 7)) if prepared else []
            for i in earlier:
                conn.execute(f"INSERT INTO {table} VALUES (%s)", (i,))
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (len(earlier),)
            px.lose_commits(1.0)
            with pytest.raises(psycopg.OperationalError):
                conn.execute(f"INSERT INTO {table} VALUES (%s)", (100,))
        assert rows(pg_server, table) == [*earlier, 100]  # it happened all the same
        assert px.stats["commits_seen"] == len(earlier) + 1
        assert px.stats["commits_lost"] == 1


def test_rate_zero_loses_nothing(pg_server: str) -> None:
    with scratch_table(pg_server) as table, PgProxy().start() as px:
        px.lose_commits(1.0)
        px.lose_commits(0.0)
        with psycopg.connect(px.url(pg_server)) as conn:
            for i in range(3):
                conn.execute(f"INSERT INTO {table} VALUES (%s)", (i,))
                conn.commit()
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert rows(pg_server, table) == [0, 1, 2]
        assert px.stats["commits_seen"] == 4  # leaving the `with` commits the SELECT's tx
        assert px.stats["commits_lost"] == 0


def test_seed_makes_losses_reproducible(pg_server: str) -> None:
    def run(seed: int) -> list[bool]:
        lost = []
        with scratch_table(pg_server) as table, PgProxy(seed=seed).start() as px:
            px.lose_commits(0.5)
            for i in range(12):
                with psycopg.connect(px.url(pg_server)) as conn:
                    conn.execute(f"INSERT INTO {table} VALUES (%s)", (i,))
                    try:
                        conn.commit()
                    except psycopg.OperationalError:
                        lost.append(True)
                    else:
                        lost.append(False)
            assert rows(pg_server, table) == list(range(12))
            assert px.stats["commits_lost"] == sum(lost)
        return lost

    first = run(7)
    assert first == run(7)
    assert True in first
    assert False in first


def test_freeze_holds_everything_until_thaw(pg_server: str) -> None:
    results: dict[str, object] = {}
    done = {"old": threading.Event(), "new": threading.Event()}

    def in_thread(key: str, work: Callable[[], object]) -> threading.Thread:
        def run() -> None:
            try:
                results[key] = work()
            except Exception as exc:
                results[key] = exc
            finally:
                done[key].set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    with PgProxy().start() as px, psycopg.connect(px.url(pg_server), autocommit=True) as old:
        assert old.execute("SELECT 1").fetchone() == (1,)

        def on_new_connection() -> object:
            with psycopg.connect(px.url(pg_server), connect_timeout=10) as conn:
                return conn.execute("SELECT 'new'").fetchone()

        px.freeze()
        threads = [
            in_thread("old", lambda: old.execute("SELECT 'old'").fetchone()),
            in_thread("new", on_new_connection),
        ]
        assert not done["old"].wait(0.5), results
        assert not done["new"].is_set(), results
        px.thaw()
        for key, event in done.items():
            assert event.wait(10), f"{key} still held after thaw"
        for thread in threads:
            thread.join(5)
        assert results == {"old": ("old",), "new": ("new",)}
        assert old.execute("SELECT 'after'").fetchone() == ("after",)


def test_cut_all(pg_server: str) -> None:
    with PgProxy().start() as px:
        with psycopg.connect(px.url(pg_server), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            px.cut_all()
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
        with psycopg.connect(px.url(pg_server)) as again:  # the proxy still listens
            assert again.execute("SELECT 2").fetchone() == (2,)
        assert px.stats["connections"] == 2
