"""A PostgreSQL wire proxy on 127.0.0.1 that can lose the server's reply after the server executed a statement.

Why: when the reply to a COMMIT (or to an autocommit INSERT) is lost after the server committed, the client
sees a dead connection although the data is committed. The proxy sits where such a fault really happens, on
the network path between a real client (psycopg2, DataJoint) and the real server, and makes it happen on
command: :meth:`ReplyDroppingProxy.drop_reply_after` arms it, :attr:`ReplyDroppingProxy.dropped` tells what
the server had answered to the statement whose reply never arrived.

Each client connection on ``127.0.0.1:<port>`` is forwarded to the server's unix socket. Only the framing of
the protocol is parsed; bytes go through unchanged. One thread runs an asyncio loop for all connections.

Limits: a connection on which the server accepts TLS or GSS encryption is forwarded blind (the embedded
server has ``ssl = off``, so it never does), and faults apply to simple-protocol Queries only (psycopg2 sends
nothing else). The proxy shares the test process's GIL: a client call that blocks on the network while
holding it cannot complete through the proxy. psycopg2's connect and execute release it; its
``connection.cancel()`` does not (libpq's PQcancel is called with the GIL held) and hangs. A client in
another process (a spawned worker) has no such limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
import threading
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dj_staged.testing.services import PostgresInfo

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
MAX_STARTUP_PACKET = 10_000  # the server's own limit on untyped startup packets
READY_FOR_QUERY = b"Z"
YIELDS_READY_FOR_QUERY = (b"Q", b"S", b"F")  # Query, Sync, FunctionCall: each is answered by one ReadyForQuery

Matcher = str | re.Pattern[str] | Callable[[str], bool]


@dataclass(frozen=True)
class DroppedReply:
    """What the server answered to a statement whose reply the proxy did not forward.

    ``tags`` are the CommandComplete tags in order (``"COMMIT"``, ``"INSERT 0 1"``), ``error`` and
    ``sqlstate`` come from an ErrorResponse if there was one, ``status`` is the transaction status the
    server reported in ReadyForQuery: ``"I"`` idle, ``"T"`` in a transaction, ``"E"`` in a failed one.
    """

    sql: str
    tags: tuple[str, ...]
    error: str | None
    sqlstate: str | None
    status: str

    @property
    def tag(self) -> str | None:
        """The last CommandComplete tag, or None if the server completed no command."""
        return self.tags[-1] if self.tags else None


@dataclass
class _Rule:
    matches: Callable[[str], bool]
    remaining: int


@dataclass
class _Link:
    """One proxied client connection: both ends, and one entry per expected ReadyForQuery.

    An entry is the SQL text of a Query whose reply is to be dropped, or None for a reply to forward.
    """

    client_reader: asyncio.StreamReader
    client: asyncio.StreamWriter
    server_reader: asyncio.StreamReader | None = None
    server: asyncio.StreamWriter | None = None
    pending: deque[str | None] = field(default_factory=deque)

    def abort(self) -> None:
        """Close both sockets now, discarding anything not yet sent, as a network cut would."""
        for writer in (self.client, self.server):
            if writer is not None:
                writer.transport.abort()

    def close(self) -> None:
        """Close both sockets once what was written is sent."""
        for writer in (self.client, self.server):
            if writer is not None:
                writer.close()


@dataclass(frozen=True)
class _Message:
    kind: bytes
    body: bytes
    raw: bytes


async def _read_message(reader: asyncio.StreamReader) -> _Message | None:
    """One typed message (type byte, Int32 length including itself, body), or None at a clean end of stream."""
    try:
        header = await reader.readexactly(5)
    except asyncio.IncompleteReadError as error:
        if error.partial:
            raise
        return None
    (length,) = struct.unpack("!I", header[1:])
    if length < 4:
        raise ConnectionError(f"malformed message {header[:1]!r} of length {length}")
    body = await reader.readexactly(length - 4)
    return _Message(header[:1], body, header + body)


def _fields(body: bytes) -> dict[str, str]:
    """The fields of an ErrorResponse body: one type byte and a NUL-terminated string each."""
    out: dict[str, str] = {}
    for part in body.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return out


def _matcher(pattern: Matcher) -> Callable[[str], bool]:
    if callable(pattern):
        return pattern
    regex = re.compile(pattern, re.IGNORECASE) if isinstance(pattern, str) else pattern
    return lambda sql: regex.search(sql) is not None


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


class ReplyDroppingProxy:
    """Forward TCP connections on ``127.0.0.1`` to the PostgreSQL server ``pg`` and lose chosen replies.

    Use as a context manager (or :meth:`start` / :meth:`close`); connect to :attr:`host`, :attr:`port`.
    """

    host = "127.0.0.1"

    def __init__(self, pg: PostgresInfo) -> None:
        self.pg = pg
        self.port = 0
        self._socket_path = f"{pg.host}/.s.PGSQL.{pg.port}"
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._dropped: list[DroppedReply] = []
        self._errors: list[str] = []
        self._links: dict[asyncio.Task[Any], _Link] = {}
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle

    def start(self) -> ReplyDroppingProxy:
        """Listen on a free port of 127.0.0.1; return once connections are accepted."""
        if self._thread is not None or self._ready.is_set():
            raise RuntimeError("a proxy is started once")
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="pgproxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise TimeoutError("proxy did not start listening within 30 s")
        if self._startup_error is not None:
            self._thread.join(timeout=30)
            raise RuntimeError("proxy failed to start") from self._startup_error
        return self

    def close(self) -> None:
        """Stop listening, close every proxied connection and wait for the proxy's thread to end."""
        if self._thread is None:
            return
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout=30)
        if self._thread.is_alive():
            raise RuntimeError("proxy thread did not end within 30 s")
        self._thread = None

    def __enter__(self) -> ReplyDroppingProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- what tests use

    def drop_reply_after(self, pattern: Matcher, times: int = 1) -> None:
        """Arm a fault: the next ``times`` simple Queries whose SQL matches ``pattern`` reach the server, but
        their reply does not reach the client: the proxy reads it up to ReadyForQuery, records it in
        :attr:`dropped` and closes that connection on both sides.

        ``pattern`` is a regex searched case-insensitively (``r"^\\s*COMMIT"``), a compiled pattern, or a
        predicate on the SQL text.
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._rules.append(_Rule(_matcher(pattern), times))

    @property
    def armed(self) -> int:
        """How many replies the armed faults will still drop."""
        with self._lock:
            return sum(rule.remaining for rule in self._rules)

    def disarm(self) -> None:
        """Forget the faults not yet triggered."""
        with self._lock:
            self._rules.clear()

    @property
    def dropped(self) -> list[DroppedReply]:
        """The replies dropped so far, oldest first. Recorded before the connection is closed, so a client
        that saw its connection die can read its entry at once."""
        with self._lock:
            return list(self._dropped)

    @property
    def errors(self) -> list[str]:
        """Tracebacks of unexpected failures inside the proxy itself (not of connections closing)."""
        with self._lock:
            return list(self._errors)

    def kill_connections(self) -> int:
        """Close every proxied connection now, as a network cut would; return how many there were.

        Returns once those connections' sockets are closed. New connections are still accepted.
        """
        if self._loop is None or self._thread is None:
            return 0
        return asyncio.run_coroutine_threadsafe(self._kill_all(), self._loop).result(timeout=30)

    # ---- the loop

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            server = await asyncio.start_server(self._handle, self.host, 0)
        except BaseException as error:
            self._startup_error = error
            self._ready.set()
            return
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            await self._kill_all()
            await server.wait_closed()

    async def _kill_all(self) -> int:
        tasks = list(self._links)
        for task in tasks:
            self._links[task].abort()
        if tasks:
            _, still_running = await asyncio.wait(tasks, timeout=10)
            for task in still_running:
                task.cancel()
            if still_running:
                await asyncio.wait(still_running)
        return len(tasks)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        link = _Link(client_reader, client_writer)
        self._links[task] = link
        try:
            link.server_reader, link.server = await asyncio.open_unix_connection(self._socket_path)
            if await self._startup(link):
                await self._pump(self._client_to_server(link), self._server_to_client(link))
            else:
                await self._pump(_copy(client_reader, link.server), _copy(link.server_reader, client_writer))
        except (OSError, asyncio.IncompleteReadError):
            pass  # a side closed or reset its connection: the other side is closed below
        except Exception:
            with self._lock:
                self._errors.append(traceback.format_exc())
        finally:
            link.close()
            del self._links[task]

    async def _pump(self, *directions: Any) -> None:
        """Run both directions of a connection until either ends; then stop the other."""
        tasks = [asyncio.ensure_future(direction) for direction in directions]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()

    async def _startup(self, link: _Link) -> bool:
        """Forward the untyped first packets; True if typed messages follow, False if only raw bytes can
        (the server accepted encryption, or this is a CancelRequest)."""
        assert link.server is not None and link.server_reader is not None
        while True:
            header = await link.client_reader.readexactly(4)
            (length,) = struct.unpack("!I", header)
            if not 8 <= length <= MAX_STARTUP_PACKET:
                raise ConnectionError(f"malformed startup packet of length {length}")
            body = await link.client_reader.readexactly(length - 4)
            (code,) = struct.unpack("!I", body[:4])
            link.server.write(header + body)
            await link.server.drain()
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                answer = await link.server_reader.readexactly(1)
                link.client.write(answer)
                await link.client.drain()
                if answer == b"N":
                    continue  # refused: the client goes on in plain text, with another startup packet
                return False
            return code != CANCEL_REQUEST

    def _rule_for(self, sql: str) -> bool:
        with self._lock:
            for rule in self._rules:
                if rule.matches(sql):
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                    return True
        return False

    async def _client_to_server(self, link: _Link) -> None:
        assert link.server is not None
        while (message := await _read_message(link.client_reader)) is not None:
            if message.kind == b"Q":
                sql = message.body.rstrip(b"\0").decode("utf-8", "replace")
                link.pending.append(sql if self._rule_for(sql) else None)
            elif message.kind in YIELDS_READY_FOR_QUERY:
                link.pending.append(None)
            link.server.write(message.raw)
            await link.server.drain()

    async def _server_to_client(self, link: _Link) -> None:
        assert link.server_reader is not None
        tags: list[str] = []
        error: dict[str, str] = {}
        while (message := await _read_message(link.server_reader)) is not None:
            dropping = link.pending[0] if link.pending else None
            if dropping is None:
                link.client.write(message.raw)
                await link.client.drain()
                if message.kind == READY_FOR_QUERY and link.pending:
                    link.pending.popleft()
                continue
            if message.kind == b"C":
                tags.append(message.body.rstrip(b"\0").decode("utf-8", "replace"))
            elif message.kind == b"E" and not error:
                error = _fields(message.body)
            elif message.kind == READY_FOR_QUERY:
                reply = DroppedReply(
                    sql=dropping,
                    tags=tuple(tags),
                    error=error.get("M"),
                    sqlstate=error.get("C"),
                    status=message.body.decode("ascii", "replace"),
                )
                with self._lock:
                    self._dropped.append(reply)
                link.abort()
                return


def connect_datajoint_through(proxy: ReplyDroppingProxy, *, use_tls: bool | None = False) -> Any:
    """A new ``dj.Connection`` to the proxy's server through the proxy; DataJoint's global connection is untouched.

    ``use_tls=None`` is DataJoint's default: it first requires TLS, which the proxied server refuses, logs a
    warning and connects again without; ``False`` (here the default) connects without TLS at once.
    """
    import datajoint as dj

    pg = proxy.pg
    return dj.Connection(proxy.host, pg.user, pg.password, port=proxy.port, use_tls=use_tls, backend="postgresql")
