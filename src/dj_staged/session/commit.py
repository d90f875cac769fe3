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

When the connection dies during that statement its outcome is unknown, and
the statement may still be running on the server (waiting for a row lock,
say: PostgreSQL does not notice a dead client while a statement waits).
Nothing is deleted until, on a new connection, the writer has first waited
for that transaction to end, and then looked its rows up. The transaction
holds the lease key (the guard hands the lock to it; before the guard, the
old session holds it), so the key becoming free proves the end. Found with the
values this writer inserted, the rows are committed (a
:class:`~dj_staged.errors.CommitRecoveredWarning` says so); the key found
holding another writer's row, the commit lost to it (DataJoint's
``DuplicateError``); not found, the commit failed and the caller unwinds. The
key still held after ``DJ_STAGED_COMMIT_WAIT`` seconds, or the lookup failing,
raises :class:`~dj_staged.errors.AmbiguousCommitError` and keeps every object.

Inside an open transaction (``populate``'s ``make()``, ``with
conn.transaction:``) the rows are inserted under a savepoint and the outcome
is left to the transaction (:mod:`dj_staged.session.transaction`).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from typing import Any

from .. import steps
from .._datajoint import (
    DatabaseFailure,
    Table,
    database_failure,
    insert_statements,
    own_insert,
    reset_transaction_state,
)
from ..durability import SyncPlan
from ..errors import AmbiguousCommitError, DuplicateError
from ..leases import LeaseKeeper
from ..leases.locks import wait_for_lease_end
from ..settings import COMMIT_WAIT, commit_wait
from .rows import finalized_view, key_columns, key_token

logger = logging.getLogger(__name__)

SAVEPOINT = "dj_staged_insert"
LOOKUP_CHUNK = 500


class Outcome(enum.Enum):
    """What a commit that lost its connection turned out to have done."""

    COMMITTED = "committed"  # the rows exist with the values this writer inserted
    ABSENT = "not committed"  # no row of this writer exists, and no other row holds its keys
    TAKEN = "key taken"  # not committed: another writer's row holds one of its keys
    STILL_RUNNING = "still running"  # the commit's transaction had not ended within DJ_STAGED_COMMIT_WAIT
    UNKNOWN = "unknown"  # the lookup itself failed

    @property
    def settled(self) -> bool:
        """Whether the outcome is known: the rows exist, or they do not and never will."""
        return self in (Outcome.COMMITTED, Outcome.ABSENT, Outcome.TAKEN)


def is_connection_error(error: BaseException) -> bool:
    """Whether ``error`` means the connection died, so the server may or may not have done what was asked."""
    return database_failure(error) is DatabaseFailure.CONNECTION_LOST


def is_fence_error(error: BaseException) -> bool:
    """Whether ``error`` is a commit guard finding its lease lock lost."""
    return database_failure(error) is DatabaseFailure.FENCE


class CommitDoubt(Exception):
    """The commit failed with a connection error: whether the rows exist must be found out."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


Group = tuple[list[dict[str, Any]], frozenset[str]]  # rows setting the same columns, and their staged fields


def _insert(table: Table, groups: list[Group], options: dict[str, Any], *, one: bool) -> None:
    """DataJoint's insert of the finalized rows, through the table's own ``insert1`` (a single row, ``one``) or
    ``insert`` where it has them, called on a view that stores the staged fields as given: a ``super()`` call
    in the table's method then inserts them unchanged."""
    for rows, fields in groups:
        view = finalized_view(table, fields)
        if one:
            for row in rows:
                view.insert1(row, allow_direct_insert=options["allow_direct_insert"])
        else:
            view.insert(rows, **options)


def insert_rows(
    table: Table,
    groups: list[Group],
    leases: LeaseKeeper,
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
    one = chunk_size is None and count == 1  # a staged_insert1 block: insert1, as DataJoint's staged insert calls
    own = own_insert(table, batch=not one)
    if connection.in_transaction:
        connection.query(f"SAVEPOINT {SAVEPOINT}")
        try:
            leases.fence()
            steps.reach("writer.commit", rows=count, deferred=True)
            _insert(table, groups, options, one=one)
        except BaseException:
            connection.query(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
            raise
        connection.query(f"RELEASE SAVEPOINT {SAVEPOINT}")
        return False
    if own or (chunk_size is not None and count > chunk_size):
        return _insert_in_transaction(table, groups, leases, options, count, one=one)
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
    leases.handed_over()
    return True


def _insert_in_transaction(
    table: Table, groups: list[Group], leases: LeaseKeeper, options: dict[str, Any], count: int, *, one: bool
) -> bool:
    """``BEGIN``, the guard, DataJoint's ``INSERT`` statements as it sends them, ``COMMIT``: for more rows than one
    statement takes (never all held at once), and for a table with an ``insert1``/``insert`` of its own, which
    runs here, inside the transaction and under the guard (a refusal it raises rolls it back). Only the
    ``COMMIT`` can leave the outcome in doubt."""
    connection = table.connection
    guard = leases.commit_guard()
    connection.start_transaction()
    try:
        if guard:
            connection.query(guard, reconnect=False)
            leases.handed_over()
        steps.reach("writer.commit", rows=count, deferred=False)
        _insert(table, groups, options, one=one)
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


def outcome(table: Table, groups: list[Group], lease_key: int | None) -> Outcome:
    """After a doubtful commit: wait for its transaction to end, then look up whether its rows exist with the
    staged values this writer inserted.

    Reconnects first, then waits (``DJ_STAGED_COMMIT_WAIT``) until no session
    holds ``lease_key``, the key the commit's transaction (or the session that
    was to run it) held. A row is ours when its staged columns hold exactly the
    values we inserted (a schema-addressed path carries a random token, so no
    other writer's row can match); a row without staged columns matches by key.
    All rows were in one transaction, so one row of ours found means all
    committed, and a key holding another row means none did.
    """
    connection = table.connection
    try:
        steps.reach("writer.resolve", rows=sum(len(rows) for rows, _fields in groups))
        connection.connect()
        reset_transaction_state(connection)
        if lease_key is not None and not wait_for_lease_end(connection, lease_key, commit_wait()):
            logger.warning(
                "The staged commit's transaction was still running on the server after %s s (%s)",
                commit_wait(),
                COMMIT_WAIT,
            )
            return Outcome.STILL_RUNNING
        taken, columns = False, key_columns(table)
        for rows, fields in groups:
            names = sorted(fields)
            for start in range(0, len(rows), LOOKUP_CHUNK):
                chunk = rows[start : start + LOOKUP_CHUNK]
                keys = [{name: row[name] for name in table.primary_key} for row in chunk]
                found = (table & keys).proj(*names).cursor(as_dict=True).fetchall()
                stored = {key_token(columns, item): item for item in found}
                for row, key in zip(chunk, keys, strict=True):
                    item = stored.get(key_token(columns, key))
                    if item is not None and all(item[name] == row[name] for name in names):
                        return Outcome.COMMITTED
                    taken = taken or item is not None
    except Exception:
        logger.warning("Could not look up whether the staged rows were committed", exc_info=True)
        return Outcome.UNKNOWN
    return Outcome.TAKEN if taken else Outcome.ABSENT


def row_keys(table: Table, groups: list[Group]) -> list[dict[str, Any]]:
    """The primary keys of the rows in ``groups``."""
    return [{name: row[name] for name in table.primary_key} for rows, _fields in groups for row in rows]


def shown_keys(keys: list[dict[str, Any]]) -> Sequence[dict[str, Any] | str]:
    """At most three keys, and how many more, for a message."""
    return keys if len(keys) <= 3 else [*keys[:3], f"... {len(keys) - 3} more"]


def ambiguous(table: Table, groups: list[Group], cause: BaseException, found: Outcome) -> AmbiguousCommitError:
    """The error for a commit whose outcome could not be found out."""
    keys = row_keys(table, groups)
    why = (
        f"its transaction was still running on the server after {commit_wait():g} s ({COMMIT_WAIT})"
        if found is Outcome.STILL_RUNNING
        else "reconnecting to look them up failed"
    )
    return AmbiguousCommitError(
        f"The connection to the database was lost during the commit of {len(keys)} staged row(s) of "
        f"{table.full_table_name} ({type(cause).__name__}: {cause}), and {why}. Every "
        f"object was kept: if the rows exist they reference them, and if not `dj-staged gc` reclaims them. "
        f"Check for the keys {shown_keys(keys)}.",
        keys=keys,
    )


def lost_to_another(table: Table, groups: list[Group]) -> DuplicateError:
    """DataJoint's ``DuplicateError`` for a doubtful commit whose key another writer's row took meanwhile."""
    return DuplicateError(
        f"Duplicate entry: while the commit of {described(table, groups)} waited, another row with the same primary "
        f"key was committed ({shown_keys(row_keys(table, groups))}); nothing of this staged insert was inserted"
    )


def described(table: Table, groups: list[Group]) -> str:
    """``"3 rows of `schema`.`table`"``, for messages (built only when one is needed)."""
    count = sum(len(rows) for rows, _fields in groups)
    return f"{count} row{'' if count == 1 else 's'} of {table.full_table_name}"
