"""The commit of staged rows: fenced, in one transaction, and never unwound on a doubt.

Outside a transaction the rows are inserted by one statement sent once, on
the session that holds the lease lock: the lease's commit guard, then
DataJoint's own ``INSERT`` statements, which PostgreSQL runs as one implicit
transaction. The guard fences (the lock was held without a break) and hands
the lease lock to that transaction, so the lease ends exactly when the rows
become visible, or when the transaction fails; a session lost before it cannot
commit. One round trip replaces ``BEGIN``, the fence, the ``INSERT``,
``COMMIT`` and the release of the lock. A batch of more rows than one
statement takes sends ``BEGIN`` and the guard, then DataJoint's chunks as it
builds them, then ``COMMIT``.

When the connection dies during that statement its outcome is unknown. Then
nothing is deleted until the rows are looked up on a new connection:
found with the values this writer inserted, they are committed (a
:class:`~dj_staged.errors.CommitRecoveredWarning` says so); not found, the
commit failed and the caller unwinds; the lookup failing too raises
:class:`~dj_staged.errors.AmbiguousCommitError` and keeps every object.

Inside an open transaction (``populate``'s ``make()``, ``with
conn.transaction:``) the rows are inserted under a savepoint and the outcome
is left to the transaction (:mod:`dj_staged.session.transaction`).
"""

from __future__ import annotations

import logging
from typing import Any

from .. import steps
from .._datajoint import insert_statements, reset_transaction_state
from ..durability import SyncPlan
from ..errors import AmbiguousCommitError
from ..leases.locks import is_fence_error
from .rows import finalized_view, key_token

logger = logging.getLogger(__name__)

SAVEPOINT = "dj_staged_insert"
LOOKUP_CHUNK = 500

COMMITTED, NOT_COMMITTED, UNKNOWN = "committed", "not committed", "unknown"


def is_connection_error(error: BaseException) -> bool:
    """Whether ``error`` means the connection died, so the server may or may not have done what was asked."""
    from datajoint.errors import LostConnectionError

    if isinstance(error, LostConnectionError):
        return True
    try:
        import psycopg2
    except ImportError:  # pragma: no cover - psycopg2 comes with DataJoint's PostgreSQL support
        return False
    return isinstance(error, psycopg2.OperationalError | psycopg2.InterfaceError) and not getattr(error, "pgcode", None)


class CommitDoubt(Exception):
    """The commit failed with a connection error: whether the rows exist must be found out."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


Group = tuple[list[dict[str, Any]], frozenset[str]]  # rows setting the same columns, and their staged fields


def _insert(table: Any, groups: list[Group], options: dict[str, Any]) -> None:
    for rows, fields in groups:
        finalized_view(table, fields).insert(rows, **options)


def insert_rows(
    table: Any,
    groups: list[Group],
    leases: Any,
    *,
    allow_direct_insert: bool,
    chunk_size: int | None = None,
    sync: SyncPlan | None = None,
) -> bool:
    """Insert the rows of ``groups`` after syncing and fencing; True if committed now, False if left to the
    open transaction.

    Raises the insert's own error (nothing committed), :class:`~dj_staged.errors.LeaseLostError`, or
    :class:`CommitDoubt` when the connection died while the commit was under way.
    """
    if sync is not None:
        sync.flush()  # the bytes the rows reference are on disk before any of them can commit
    connection = table.connection
    options = {"allow_direct_insert": allow_direct_insert, "chunk_size": chunk_size}
    count = sum(len(rows) for rows, _fields in groups)
    if connection.in_transaction:
        connection.query(f"SAVEPOINT {SAVEPOINT}")
        try:
            leases.fence()
            steps.reach("writer.commit", rows=count, deferred=True)
            _insert(table, groups, options)
        except BaseException:
            connection.query(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
            raise
        connection.query(f"RELEASE SAVEPOINT {SAVEPOINT}")
        return False
    if chunk_size is not None and count > chunk_size:
        return _insert_in_chunks(table, groups, leases, options, count)
    statements = [
        statement
        for rows, fields in groups
        for statement in insert_statements(finalized_view(table, fields), rows, **options)
    ]
    guard = leases.commit_guard()
    sql = "; ".join([*([guard] if guard else []), *(query for query, _args in statements)])
    steps.reach("writer.commit", rows=count, deferred=False)
    try:
        connection.query(sql, args=[argument for _query, args in statements for argument in args], reconnect=False)
    except Exception as error:
        if is_fence_error(error):
            raise leases.lost() from None
        if is_connection_error(error):
            raise CommitDoubt(error) from error
        raise
    return True


def _insert_in_chunks(table: Any, groups: list[Group], leases: Any, options: dict[str, Any], count: int) -> bool:
    """More rows than one statement takes: ``BEGIN``, the guard, DataJoint's chunked ``INSERT`` statements as it
    sends them (never all held at once), ``COMMIT``; only the ``COMMIT`` can leave the outcome in doubt."""
    connection = table.connection
    guard = leases.commit_guard()
    connection.start_transaction()
    try:
        if guard:
            connection.query(guard, reconnect=False)
        steps.reach("writer.commit", rows=count, deferred=False)
        _insert(table, groups, options)
    except BaseException as error:
        try:
            connection.cancel_transaction()
        except Exception:
            reset_transaction_state(connection)  # the server ends a transaction whose connection died
        if is_fence_error(error):
            raise leases.lost() from None
        raise
    try:
        connection.commit_transaction()
    except Exception as error:
        if is_connection_error(error):
            raise CommitDoubt(error) from error
        reset_transaction_state(connection)
        raise
    return True


def outcome(table: Any, groups: list[Group]) -> str:
    """After a doubtful commit: whether the rows exist with the staged values this writer inserted.

    Reconnects first. A row is ours when its staged columns hold exactly the
    values we inserted (a schema-addressed path carries a random token, so no
    other writer's row can match); a row without staged columns matches by key.
    All rows were in one transaction, so one row of ours found means all committed.
    """
    connection = table.connection
    steps.reach("writer.resolve", rows=sum(len(rows) for rows, _fields in groups))
    try:
        connection.connect()
        reset_transaction_state(connection)
        for rows, fields in groups:
            names = sorted(fields)
            for start in range(0, len(rows), LOOKUP_CHUNK):
                chunk = rows[start : start + LOOKUP_CHUNK]
                keys = [{name: row[name] for name in table.primary_key} for row in chunk]
                found = (table & keys).proj(*names).cursor(as_dict=True).fetchall()
                stored = {key_token(table, item): item for item in found}
                for row, key in zip(chunk, keys, strict=True):
                    item = stored.get(key_token(table, key))
                    if item is not None and all(item[name] == row[name] for name in names):
                        return COMMITTED
    except Exception:
        logger.warning("Could not look up whether the staged rows were committed", exc_info=True)
        return UNKNOWN
    return NOT_COMMITTED


def ambiguous(table: Any, groups: list[Group], cause: BaseException) -> AmbiguousCommitError:
    """The error for a commit whose outcome could not be found out."""
    keys = [{name: row[name] for name in table.primary_key} for rows, _fields in groups for row in rows]
    shown = keys if len(keys) <= 3 else [*keys[:3], f"... {len(keys) - 3} more"]
    return AmbiguousCommitError(
        f"The connection to the database was lost during the commit of {len(keys)} staged row(s) of "
        f"{table.full_table_name} ({type(cause).__name__}: {cause}), and reconnecting to look them up failed. Every "
        f"object was kept: if the rows exist they reference them, and if not `dj-staged gc` reclaims them. "
        f"Check for the keys {shown}.",
        keys=keys,
    )
