"""The reply-dropping PostgreSQL proxy of tests/support, against the real embedded server."""

from __future__ import annotations

import socket
import struct
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import datajoint as dj
import psycopg2
import pytest
from support.pgproxy import DroppedReply, ReplyDroppingProxy, connect_datajoint_through

LOST = (psycopg2.OperationalError, psycopg2.InterfaceError)


def direct(pg):
    """A psycopg2 connection straight to the server's unix socket, in autocommit."""
    connection = psycopg2.connect(host=pg.host, port=pg.port, user=pg.user, dbname="postgres")
    connection.autocommit = True
    return connection


def through(proxy, **options):
    """A psycopg2 connection through the proxy."""
    return psycopg2.connect(host=proxy.host, port=proxy.port, user=proxy.pg.user, dbname="postgres", **options)


def rows(connection, table):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT k FROM {table} ORDER BY k")
        return [k for (k,) in cursor.fetchall()]


@pytest.fixture
def server(djstaged_postgres):
    connection = direct(djstaged_postgres)
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def table(server):
    name = f"proxy_{uuid.uuid4().hex[:10]}"
    with server.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {name} (k int PRIMARY KEY)")
    try:
        yield name
    finally:
        with server.cursor() as cursor:
            cursor.execute(f"DROP TABLE {name}")


@pytest.fixture
def proxy(djstaged_postgres):
    with ReplyDroppingProxy(djstaged_postgres) as proxy:
        yield proxy
        assert proxy.errors == []


@pytest.mark.parametrize("sslmode", ["prefer", "disable"])
def test_forwards_psycopg2(proxy, sslmode):
    with through(proxy, sslmode=sslmode) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT %s::text, inet_server_port()", ("through",))
        assert cursor.fetchone() == ("through", None)  # None: the server saw a unix-socket client
        cursor.execute("SELECT repeat('x', 3000000)")  # one message much larger than a socket read
        assert cursor.fetchone()[0] == "x" * 3_000_000
        cursor.execute("SELECT 1; SELECT 2")
        assert cursor.fetchone() == (2,)
    assert proxy.dropped == []


def test_forwards_many_connections_at_once(proxy):
    barrier = threading.Barrier(16)

    def one(i):
        with through(proxy) as connection, connection.cursor() as cursor:
            barrier.wait(timeout=60)  # all 16 are open through the proxy at the same time
            cursor.execute("SELECT %s * 2", (i,))
            return cursor.fetchone()[0]

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(one, range(16))) == [2 * i for i in range(16)]


def test_forwards_datajoint(proxy, djstaged_connection):
    connection = connect_datajoint_through(proxy)
    try:
        assert connection.conn_info["port"] == proxy.port
        assert connection.query("SELECT 40 + 2").fetchone() == (42,)
        assert connection.query("SELECT inet_server_port()").fetchone() == (None,)
    finally:
        connection.close()
    assert dj.conn() is djstaged_connection


def test_datajoint_default_tls_falls_back_through_proxy(proxy):
    """DataJoint's default first requires TLS (the server refuses it through the proxy), then connects without."""
    connection = connect_datajoint_through(proxy, use_tls=None)
    try:
        assert connection.query("SELECT 1").fetchone() == (1,)
    finally:
        connection.close()


def test_commit_reply_lost_after_commit(proxy, server, table):
    proxy.drop_reply_after(r"^\s*COMMIT")
    connection = through(proxy)
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {table} VALUES (1)")  # psycopg2 opens the transaction with BEGIN
    assert rows(server, table) == []  # not visible before the COMMIT
    with pytest.raises(LOST, match="server closed the connection unexpectedly"):
        connection.commit()
    assert connection.closed
    assert rows(server, table) == [1]
    assert proxy.dropped == [DroppedReply(sql="COMMIT", tags=("COMMIT",), error=None, sqlstate=None, status="I")]
    assert proxy.armed == 0


def test_autocommit_insert_reply_lost_after_commit(proxy, server, table):
    proxy.drop_reply_after(rf"insert into {table}")
    connection = through(proxy)
    connection.autocommit = True
    with pytest.raises(LOST):
        connection.cursor().execute(f"INSERT INTO {table} VALUES (7)")
    assert rows(server, table) == [7]
    (reply,) = proxy.dropped
    assert (reply.sql, reply.tag, reply.status) == (f"INSERT INTO {table} VALUES (7)", "INSERT 0 1", "I")


def test_error_reply_is_recorded(proxy, server, table):
    with server.cursor() as cursor:
        cursor.execute(f"INSERT INTO {table} VALUES (1)")
    proxy.drop_reply_after(lambda sql: sql.startswith("INSERT"))
    connection = through(proxy)
    connection.autocommit = True
    with pytest.raises(LOST):
        connection.cursor().execute(f"INSERT INTO {table} VALUES (1)")
    (reply,) = proxy.dropped
    assert (reply.tags, reply.sqlstate, reply.status) == ((), "23505", "I")
    assert "duplicate key" in reply.error


def test_other_connections_unaffected(proxy, server, table):
    victim, bystander = through(proxy), through(proxy)
    with bystander.cursor() as cursor:
        cursor.execute(f"INSERT INTO {table} VALUES (2)")  # bystander's transaction stays open across the fault
    proxy.drop_reply_after(rf"INSERT INTO {table} VALUES \(1\)")
    victim.autocommit = True
    with pytest.raises(LOST):
        victim.cursor().execute(f"INSERT INTO {table} VALUES (1)")
    bystander.commit()
    assert rows(server, table) == [1, 2]
    with through(proxy) as later, later.cursor() as cursor:  # times=1: the rule is spent
        cursor.execute(f"INSERT INTO {table} VALUES (3)")
    assert rows(bystander, table) == [1, 2, 3]
    assert [reply.sql for reply in proxy.dropped] == [f"INSERT INTO {table} VALUES (1)"]
    bystander.close()


def test_drops_as_many_times_as_armed(proxy, server, table):
    proxy.drop_reply_after(r"^\s*COMMIT", times=2)
    for k in (1, 2):
        connection = through(proxy)
        connection.cursor().execute(f"INSERT INTO {table} VALUES ({k})")
        with pytest.raises(LOST):
            connection.commit()
    assert proxy.armed == 0
    with through(proxy) as connection:
        connection.cursor().execute(f"INSERT INTO {table} VALUES (3)")
    assert rows(server, table) == [1, 2, 3]
    assert [reply.tag for reply in proxy.dropped] == ["COMMIT", "COMMIT"]


def test_disarm(proxy, server, table):
    proxy.drop_reply_after(r"^\s*COMMIT")
    proxy.disarm()
    with through(proxy) as connection:
        connection.cursor().execute(f"INSERT INTO {table} VALUES (1)")
    assert rows(server, table) == [1] and proxy.dropped == []


def test_datajoint_commit_reply_lost(proxy, server, table):
    """DataJoint passes psycopg2's OperationalError through untranslated (it has no pgcode), so it neither
    reconnects nor retries. Also pinned down: DataJoint 2.3.5 does not notice the connection is gone (its
    PostgreSQL ping returns False where ``is_connected`` expects an exception), so the transaction it began
    still counts as open and the next query meets psycopg2's InterfaceError."""
    connection = connect_datajoint_through(proxy)
    proxy.drop_reply_after(r"^\s*COMMIT")
    with pytest.raises(psycopg2.OperationalError, match="server closed the connection unexpectedly"):
        with connection.transaction:
            connection.query(f"INSERT INTO {table} VALUES (5)")
    assert rows(server, table) == [5]
    assert proxy.dropped[0].tag == "COMMIT"
    assert connection._conn.closed
    assert connection.is_connected and connection.in_transaction
    with pytest.raises(psycopg2.InterfaceError, match="connection already closed"):
        connection.query("SELECT 1")


def test_datajoint_autocommit_insert_reply_lost(proxy, server, table):
    connection = connect_datajoint_through(proxy)
    proxy.drop_reply_after(rf"^INSERT INTO {table}")
    with pytest.raises(psycopg2.OperationalError):
        connection.query(f"INSERT INTO {table} VALUES (%s)", (6,))
    assert rows(server, table) == [6]  # committed once: not re-executed on a new connection
    assert proxy.dropped[0].sql == f"INSERT INTO {table} VALUES (6)"


def test_kill_connections(proxy, table):
    first, second = through(proxy), through(proxy)
    assert proxy.kill_connections() == 2
    for connection in (first, second):
        with pytest.raises(LOST):
            connection.cursor().execute("SELECT 1")
    with through(proxy) as connection, connection.cursor() as cursor:  # new connections still work
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    assert proxy.kill_connections() == 1


def test_shutdown_leaves_no_thread_and_closes_connections(djstaged_postgres):
    before = set(threading.enumerate())
    proxy = ReplyDroppingProxy(djstaged_postgres).start()
    assert [t.name for t in set(threading.enumerate()) - before] == ["pgproxy"]
    open_connection = through(proxy)
    proxy.close()
    assert set(threading.enumerate()) == before
    with pytest.raises(LOST):
        open_connection.cursor().execute("SELECT 1")
    with pytest.raises(psycopg2.OperationalError, match="Connection refused"):
        through(proxy, connect_timeout=5)
    assert proxy.errors == []


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def untyped(body: bytes) -> bytes:
    return struct.pack("!I", len(body) + 4) + body


STARTUP = untyped(struct.pack("!I", 196608) + b"user\0postgres\0database\0postgres\0\0")  # protocol 3.0


def read_until_ready(sock) -> list[tuple[bytes, bytes]]:
    """The server's messages (type, body) up to and including ReadyForQuery."""
    messages: list[tuple[bytes, bytes]] = []
    while not messages or messages[-1][0] != b"Z":
        header = sock.recv(5, socket.MSG_WAITALL)
        assert len(header) == 5
        (length,) = struct.unpack("!I", header[1:])
        body = sock.recv(length - 4, socket.MSG_WAITALL) if length > 4 else b""
        assert len(body) == length - 4
        messages.append((header[:1], body))
    return messages


def test_ssl_and_gssenc_requests_refused_then_startup(proxy):
    """Both untyped negotiation requests get the server's one-byte 'N' before the StartupMessage."""
    with socket.create_connection((proxy.host, proxy.port), timeout=30) as sock:
        sock.sendall(untyped(struct.pack("!I", 80877104)))  # GSSENCRequest
        assert sock.recv(1) == b"N"
        sock.sendall(untyped(struct.pack("!I", 80877103)))  # SSLRequest
        assert sock.recv(1) == b"N"
        sock.sendall(STARTUP)
        kinds = [kind for kind, _ in read_until_ready(sock)]
        assert kinds[0] == b"R" and b"K" in kinds
        sock.sendall(message(b"Q", b"SELECT 1\0"))
        assert [kind for kind, _ in read_until_ready(sock)] == [b"T", b"D", b"C", b"Z"]
        sock.sendall(message(b"X", b""))
        assert sock.recv(1) == b""


def test_cancel_request_goes_through(proxy, server):
    """A CancelRequest is a connection of its own, with one untyped packet.

    Raw sockets, not psycopg2's ``cancel()``: that calls libpq's PQcancel without releasing the GIL, so it
    cannot complete through a proxy running in a thread of the same process.
    """
    with socket.create_connection((proxy.host, proxy.port), timeout=30) as sleeper:
        sleeper.sendall(STARTUP)
        (key,) = [body for kind, body in read_until_ready(sleeper) if kind == b"K"]
        pid = struct.unpack("!I", key[:4])[0]
        sleeper.sendall(message(b"Q", b"SELECT pg_sleep(60)\0"))
        deadline = time.monotonic() + 30
        with server.cursor() as cursor:  # a cancel only acts on a running query: poll the server's state
            while True:
                cursor.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
                if cursor.fetchone() == ("active",):
                    break
                assert time.monotonic() < deadline, "the sleep never started"
        with socket.create_connection((proxy.host, proxy.port), timeout=30) as canceller:
            canceller.sendall(untyped(struct.pack("!I", 80877102) + key))
            assert canceller.recv(1) == b""  # the server closes the cancel connection without a word
        reply = read_until_ready(sleeper)
        (error,) = [body for kind, body in reply if kind == b"E"]
        assert b"C57014\0" in error  # query_canceled
