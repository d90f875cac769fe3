"""Staged rows inside an enclosing transaction: their objects' fate is decided when the transaction ends.

``populate`` runs ``make()`` inside a transaction, and so does ``with
conn.transaction:``. A staged insert there inserts its rows into that
transaction and leaves the rest to its end:

- **commit**: the rows are visible; only now are the leases released;
- **rollback** (``cancel_transaction``, including DataJoint's own after a lost
  connection): every object the rows staged or promoted is removed at once
  (a canonical hash object only if nothing else uses it), then the leases go;
- **a commit whose connection died**: the rows are looked up, as for a staged
  insert's own commit (:mod:`dj_staged.session.commit`).

The mechanism: while (and only while) a connection has such pending rows, its
``commit_transaction`` and ``cancel_transaction`` are shadowed by instance
attributes that call DataJoint's own methods and then settle the rows; the
attributes are removed when the transaction ends. A connection without
pending staged rows is never touched, and :func:`dj_staged.disable` refuses
to run while any are pending.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from .._datajoint import Connection
from ..errors import CommitRecoveredWarning, StagedInsertError, warn
from .commit import Outcome, is_connection_error

logger = logging.getLogger(__name__)

_METHODS = ("commit_transaction", "cancel_transaction")
_MISSING = object()


@dataclass
class Pending:
    """What one staged insert leaves to the end of the enclosing transaction."""

    committed: Callable[[], None]  # the rows are visible: release the leases
    rolled_back: Callable[[], None]  # the rows are gone: remove their objects, release the leases
    outcome: Callable[[], Outcome]  # after a lost COMMIT: waits for the transaction's end, then looks the rows up
    abandoned: Callable[[], None]  # outcome unknown: keep every object, let the leases die
    description: str = ""


class _Hooks:
    """The shadowing methods of one connection and the rows pending on it."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.pending: list[Pending] = []
        self.saved = {name: connection.__dict__.get(name, _MISSING) for name in _METHODS}
        connection.commit_transaction = self.commit_transaction
        connection.cancel_transaction = self.cancel_transaction

    def _original(self, name: str) -> Callable[[], None]:
        saved = self.saved[name]
        return cast(  # the connection's commit_transaction or cancel_transaction (DataJoint's: untyped)
            Callable[[], None],
            saved if saved is not _MISSING else getattr(type(self.connection), name).__get__(self.connection),
        )

    def uninstall(self) -> list[Pending]:
        for name, saved in self.saved.items():
            if saved is _MISSING:
                self.connection.__dict__.pop(name, None)
            else:
                self.connection.__dict__[name] = saved
        with _lock:
            _hooks.pop(id(self.connection), None)
        return self.pending

    def commit_transaction(self) -> None:
        commit = self._original("commit_transaction")
        pending = self.uninstall()
        try:
            commit()
        except BaseException as error:
            if is_connection_error(error):
                _settle_doubt(pending)
            else:
                _settle(pending, "rolled_back")  # the server refused the commit: the transaction is gone
            raise
        _settle(pending, "committed")

    def cancel_transaction(self) -> None:
        cancel = self._original("cancel_transaction")
        pending = self.uninstall()
        try:
            cancel()
        finally:
            _settle(pending, "rolled_back")  # a lost connection rolls the transaction back too


_hooks: dict[int, _Hooks] = {}
_lock = threading.Lock()


def defer(connection: Connection, pending: Pending) -> None:
    """Settle ``pending`` when ``connection``'s open transaction ends."""
    with _lock:
        hooks = _hooks.get(id(connection))
        if hooks is None or hooks.connection is not connection:
            hooks = _hooks[id(connection)] = _Hooks(connection)
        hooks.pending.append(pending)


def pending_count() -> int:
    """Staged inserts waiting for an enclosing transaction to end, in this process."""
    with _lock:
        return sum(len(hooks.pending) for hooks in _hooks.values())


def check_none_pending() -> None:
    """Raise if a staged insert still waits for its enclosing transaction (``disable()`` must not strand it)."""
    count = pending_count()
    if count:
        raise StagedInsertError(
            f"{count} staged insert(s) wait for an open transaction to commit or roll back; "
            "end the transaction before calling dj_staged.disable()"
        )


def _settle(pending: list[Pending], how: str) -> None:
    for item in pending:
        try:
            getattr(item, how)()
        except Exception:
            logger.warning("Settling staged rows (%s, %s) failed", item.description, how, exc_info=True)


def _settle_doubt(pending: list[Pending]) -> None:
    for item in pending:
        try:
            found = item.outcome()
        except Exception:
            logger.warning("Looking up staged rows (%s) failed", item.description, exc_info=True)
            found = Outcome.UNKNOWN
        if found is Outcome.COMMITTED:
            warn(
                f"The connection was lost during the commit; the staged rows ({item.description}) were found "
                "committed and keep their objects",
                CommitRecoveredWarning,
            )
            _settle([item], "committed")
        elif found.settled:
            _settle([item], "rolled_back")
        else:
            logger.warning(
                "The commit of staged rows (%s) may or may not have happened; their objects are kept for "
                "`dj-staged gc`, which keeps them if the rows exist",
                item.description,
            )
            _settle([item], "abandoned")
