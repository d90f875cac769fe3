"""PostgreSQL advisory locks: the liveness of a lease, and the gate between writers and collectors.

Two kinds of lock, in two namespaces of PostgreSQL's two-key advisory locks:

- the **lease lock** ``(LEASE_NS, key)``: a session-level lock a writer takes
  on the database session that will insert its row, before it writes a byte.
  The lease is live exactly while the lock is held. PostgreSQL releases it when
  the session ends, so a killed writer's lease dies with its connection, and a
  paused writer's lease stays live however long it sleeps: no clock, no
  heartbeat. Because the row's ``INSERT`` runs on the same session, the row is
  visible before the lock can be seen released.
- the **gate** ``(GATE_NS, crc32(schema))``: writers hold it shared while they
  add paths to a lease; a collector holds it exclusively while it reads the
  leases, reads the references and deletes. So a path is either leased before a
  collector looks, or added after that collector has finished deleting.

A session never conflicts with its own locks, so the exclusive gate is taken
on a dedicated session (:func:`gate_connection`), never on a writer's.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .._datajoint import (
    FENCE_SQLSTATE,
    Connection,
    DatabaseFailure,
    backend_pid,
    connection_like,
    database_failure,
    server_version,
)
from ..errors import GateLostError, UnsupportedBackendError
from ..settings import client_check

LEASE_NS = 0x646A7331  # "djs1"
GATE_NS = 0x646A7332  # "djs2"
GATE_TIMEOUT = "60s"

_HELD = (
    "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid AND objsubid = 2 "
    "AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


@dataclass(frozen=True)
class LeaseLock:
    """A lease lock held by one database session (its backend pid)."""

    key: int
    pid: int


def require_postgres(connection: Connection) -> None:
    """Raise unless ``connection`` is PostgreSQL, the one backend with the locks leases need."""
    backend = getattr(getattr(connection, "adapter", None), "backend", None)
    if backend != "postgresql":
        raise UnsupportedBackendError(
            f"dj-staged needs a PostgreSQL database for its leases (advisory locks); this connection is {backend!r}"
        )


def acquire_lease_lock(
    connection: Connection, key: int, *, gate: str | None = None, probe: tuple[str, Sequence[Any]] | None = None
) -> tuple[LeaseLock, object]:
    """Take the lease lock ``key`` on ``connection``'s session, or a fresh random key if another session holds
    that one; the lock and the value of ``probe`` (a scalar SQL expression and its arguments), in one round trip.

    With ``gate``, the schema's gate is taken shared in the same round trip (the
    caller releases it with :func:`release_shared_gate`).
    """
    require_postgres(connection)
    extra_sql, extra_args = _client_check(connection)
    if gate:
        extra_sql, extra_args = ", pg_advisory_lock_shared(%s, %s)", (GATE_NS, gate_key(gate))
    if probe:
        extra_sql, extra_args = f"{extra_sql}, ({probe[0]})", (*extra_args, *probe[1])
    answer: object = None
    while True:
        row = connection.query(
            f"SELECT pg_try_advisory_lock(%s, %s), pg_backend_pid(){extra_sql}",
            args=(LEASE_NS, key, *extra_args),
            reconnect=False,
        ).fetchone()
        if extra_sql and probe:
            answer = row[-1]
        if row[0]:
            return LeaseLock(key=key, pid=int(row[1])), answer
        key = new_lease_key()
        extra_sql, extra_args = "", ()  # the gate is held and the probe answered: a retry takes only another key


def _client_check(connection: Connection) -> tuple[str, tuple[Any, ...]]:
    """SQL that sets the session's ``client_connection_check_interval`` (``DJ_STAGED_CLIENT_CHECK``), and its
    arguments; nothing on a server older than PostgreSQL 14 or when the setting is 0.

    A statement waiting on the server (for a row lock, say) does not notice that
    its client is gone unless this is set: the writer's lost commit could then
    wait and commit long after the writer gave up on it. Waiting for the lease
    key (:func:`wait_for_lease_end`) proves the end either way; this makes it come sooner.
    """
    interval = client_check()
    if interval <= 0 or server_version(connection) < 140000:
        return "", ()
    return ", set_config('client_connection_check_interval', %s, false)", (f"{max(1, round(interval * 1000))}ms",)


def wait_for_lease_end(connection: Connection, key: int, bound: float) -> bool:
    """Wait at most ``bound`` seconds until no session holds the lease key ``key``; whether none does.

    A commit's transaction holds its lease key (the guard hands the lock to
    it), and a session that took the lock holds it until it ends: once the key
    is free, the commit that was under way on a lost connection has ended, and
    whether its rows exist can be looked up. ``connection`` must be a session
    that never held the key (a new one). The key is an integer this module chose.
    """
    timeout = f"{max(1, round(bound * 1000))}ms"
    wait = "$dj_staged_wait$"
    try:
        connection.query(
            f"DO {wait} BEGIN PERFORM set_config('lock_timeout', '{timeout}', true); "
            f"PERFORM pg_advisory_xact_lock({LEASE_NS}, {int(key)}); END {wait}",
            reconnect=False,
        )
    except Exception as error:
        if database_failure(error) is DatabaseFailure.LOCK_TIMEOUT:
            return False
        raise
    return True


def new_lease_key() -> int:
    """A random lease lock key."""
    return secrets.randbelow(1 << 31)


def lease_held(connection: Connection, lock: LeaseLock) -> bool:
    """Fencing: whether ``connection`` is still the session that took ``lock`` and still holds it.

    A session-level lock is held from the moment it is taken until it is
    released or the session ends, and this writer never takes its key again:
    the session that took it holding it now therefore means it never lapsed.
    """
    row = connection.query(
        "SELECT pg_backend_pid(), EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid "
        "AND objid = %s::oid AND objsubid = 2 AND granted AND pid = pg_backend_pid())",
        args=(LEASE_NS, lock.key),
        reconnect=False,
    ).fetchone()
    return int(row[0]) == lock.pid and bool(row[1])


COMMIT_GUARD_TAG = "dj_staged_commit"  # the guard's dollar-quote tag: the commit statement is recognizable by it


def commit_guard(lock: LeaseLock) -> str:
    """SQL to run first in the transaction that inserts the rows: fence the lease, and hand its lock to the
    transaction.

    The transaction takes the lease's key as a transaction-level lock (granted
    at once: this session holds it), then releases the session-level one,
    which succeeds only if this session still held it: that is the fence;
    otherwise the guard raises ``FENCE_SQLSTATE`` and nothing is inserted. From
    then on the lease lock is the transaction's: PostgreSQL releases it when
    the transaction ends, once a committed row is visible, so the rows need no
    round trip of their own for ``BEGIN``, the fence, ``COMMIT`` or the release.
    The key is an integer this module chose, so it is part of the text.
    """
    tag = f"${COMMIT_GUARD_TAG}$"
    key = f"{LEASE_NS}, {int(lock.key)}"
    lost = f"RAISE EXCEPTION 'dj-staged lease lock {int(lock.key)} lost' USING ERRCODE = '{FENCE_SQLSTATE}'"
    return (  # two statements, in this order: the lock is never free between them
        f"DO {tag} BEGIN IF NOT pg_try_advisory_xact_lock({key}) THEN {lost}; END IF; "
        f"IF NOT pg_advisory_unlock({key}) THEN {lost}; END IF; END {tag}"
    )


def release_lease_lock(connection: Connection, lock: LeaseLock) -> None:
    """Release ``lock`` (a session that lost it has nothing to release: PostgreSQL only warns)."""
    connection.query("SELECT pg_advisory_unlock(%s, %s)", args=(LEASE_NS, lock.key), reconnect=False)


def release_shared_gate(connection: Connection, schema: str) -> None:
    """Release the schema's gate taken shared by :func:`acquire_lease_lock`."""
    connection.query("SELECT pg_advisory_unlock_shared(%s, %s)", args=(GATE_NS, gate_key(schema)), reconnect=False)


def held_lease_keys(connection: Connection) -> set[int]:
    """The keys of every lease lock some session of this database holds right now."""
    return {int(row[0]) for row in connection.query(_HELD, args=(LEASE_NS,)).fetchall()}


def gate_key(schema: str) -> int:
    """The gate's second key for ``schema``."""
    return zlib.crc32(schema.encode()) & 0x7FFFFFFF


@contextlib.contextmanager
def shared_gate(connection: Connection, schema: str) -> Iterator[None]:
    """Hold the schema's gate shared on ``connection`` (a writer adding paths to its lease)."""
    require_postgres(connection)
    connection.query("SELECT pg_advisory_lock_shared(%s, %s)", args=(GATE_NS, gate_key(schema)), reconnect=False)
    try:
        yield
    finally:
        release_shared_gate(connection, schema)


_gate_connections: dict[tuple[str, int, str, str | None], Connection] = {}
_gate_lock = threading.Lock()
_exclusive = threading.Lock()  # one exclusive holder per process at a time: its sessions never conflict in PostgreSQL


def gate_connection(connection: Connection, *, fresh: bool = False) -> Connection:
    """A dedicated DataJoint connection to the same server, for the exclusive gate (one per process); ``fresh``:
    a new one, the one kept being found dead."""
    info = connection.conn_info
    key = (info["host"], info["port"], info["user"], info.get("database_name"))
    with _gate_lock:
        dedicated = _gate_connections.get(key)
        if fresh or dedicated is None or backend_pid(dedicated) is None or not dedicated.is_connected:
            dedicated = connection_like(connection)
            _gate_connections[key] = dedicated
        return dedicated


@dataclass
class Gate:
    """The exclusive gate of one schema, held by a dedicated session."""

    connection: Connection  # the dedicated session (gate_connection)
    schema: str

    def confirm(self) -> None:
        """Raise :class:`~dj_staged.errors.GateLostError` unless the dedicated session still holds the gate
        (checked before each deletion)."""
        try:
            row = self.connection.query(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid AND "
                "objid = %s::oid AND objsubid = 2 AND mode = 'ExclusiveLock' AND granted AND pid = pg_backend_pid())",
                args=(GATE_NS, gate_key(self.schema)),
                reconnect=False,
            ).fetchone()
        except Exception as error:
            if database_failure(error) is not DatabaseFailure.CONNECTION_LOST:
                raise
            raise self.lost(f"its database session ended ({type(error).__name__})") from error
        if not row[0]:
            raise self.lost("its database session no longer holds it")

    def lost(self, why: str) -> GateLostError:
        """The error for a gate this collector no longer holds."""
        return GateLostError(
            f"The collector lost the gate of schema {self.schema!r}: {why}. It stopped deleting; what it did not "
            "delete is still there, and the next collection picks it up."
        )


@contextlib.contextmanager
def exclusive_gate(connection: Connection, schema: str, timeout: str = GATE_TIMEOUT) -> Iterator[Gate]:
    """Hold the schema's gate exclusively on a dedicated session.

    Waits at most ``timeout`` for writers to finish adding paths to their
    leases (each holds the gate shared for one small write), then raises
    PostgreSQL's lock-timeout error. Queries on the dedicated session never
    reconnect: a new session would silently not hold the gate.
    """
    require_postgres(connection)
    with _exclusive:
        dedicated = gate_connection(connection)
        try:
            dedicated.query(f"SET lock_timeout = '{timeout}'", reconnect=False)
        except Exception as error:  # it died after the check above (nothing is held yet): once more, on a new one
            if database_failure(error) is not DatabaseFailure.CONNECTION_LOST:
                raise
            dedicated = gate_connection(connection, fresh=True)
            dedicated.query(f"SET lock_timeout = '{timeout}'", reconnect=False)
        dedicated.query("SELECT pg_advisory_lock(%s, %s)", args=(GATE_NS, gate_key(schema)), reconnect=False)
        try:
            yield Gate(dedicated, schema)
        finally:
            try:
                dedicated.query("SELECT pg_advisory_unlock(%s, %s)", args=(GATE_NS, gate_key(schema)), reconnect=False)
            except Exception as error:  # a session that ended released the gate with it; never mask the first error
                if database_failure(error) is not DatabaseFailure.CONNECTION_LOST:
                    raise
