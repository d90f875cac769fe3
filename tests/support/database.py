"""What the PostgreSQL server shows of the parties: their sessions, the locks they hold and wait for.

Each wait polls the server's own views (``pg_stat_activity``, ``pg_locks``), bounded by a timeout.
"""

from __future__ import annotations

import time
from typing import Any


def wait_for_session_end(connection: Any, pid: int, timeout: float = 30.0) -> None:
    """Wait until the database session ``pid`` is gone (PostgreSQL releases its locks as it exits).

    A killed client's backend notices the closed socket and exits shortly
    after; this polls that state, bounded by ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while connection.query("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", args=(pid,)).fetchone()[0]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"database session {pid} did not end within {timeout} s")
        time.sleep(0.01)


def wait_for_lock_waiter(connection: Any, timeout: float = 30.0, *, locktype: str = "advisory") -> None:
    """Wait until some session waits for a lock of ``locktype``: ``advisory`` (a writer blocked on a collector's
    gate, or on a lease key), ``transactionid`` (an ``INSERT`` blocked on another transaction's row)."""
    deadline = time.monotonic() + timeout
    query = "SELECT count(*) FROM pg_locks WHERE locktype = %s AND NOT granted"
    while not connection.query(query, args=(locktype,)).fetchone()[0]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no session started waiting for a lock of type {locktype}")
        time.sleep(0.01)


def advisory_locks(connection: Any, pid: int | None = None) -> list[tuple[int, int, int]]:
    """dj-staged's advisory locks held right now (namespace, key, backend pid), by session ``pid`` or by any."""
    from dj_staged.leases.claims import CLAIM_NS
    from dj_staged.leases.locks import GATE_NS, LEASE_NS

    rows = connection.query(
        "SELECT classid::bigint, objid::bigint, pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND classid::bigint IN (%s, %s, %s) AND (%s::int IS NULL OR pid = %s::int)",
        args=(LEASE_NS, GATE_NS, CLAIM_NS, pid, pid),
    ).fetchall()
    return sorted((int(a), int(b), int(c)) for a, b, c in rows)
