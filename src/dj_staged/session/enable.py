"""Make ``Table.staged_insert1`` the generalized engine (and add ``Table.staged_insert``); put DataJoint's back.

Importing :mod:`dj_staged` changes nothing in DataJoint; :func:`enable` is the
one explicit switch. It is idempotent, reversible with :func:`disable`, and
guarded by a lock so concurrent calls cannot lose DataJoint's original.

After ``enable()``, ``with Table().staged_insert1 as staged:`` works as in
DataJoint, and ``Table().staged_insert1(allow_direct_insert=True)`` passes
options; ``Table.staged_insert`` is the batch form, on the class or an instance.
"""

from __future__ import annotations

import threading
from typing import Any

from datajoint.table import Table

from .batch import BatchInsert, staged_insert
from .lifecycle import StagedInsert1, staged_insert1
from .transaction import check_none_pending

_lock = threading.Lock()
_original: object | None = None


def _generalized(self: Table) -> StagedInsert1:
    """Context manager for staged insert of any participating object-store codec (dj-staged)."""
    return staged_insert1(self)


class _BatchAttribute:
    """``Table.staged_insert``: works on a table instance and on a table class alike."""

    def __get__(self, instance: Any, owner: type) -> BatchInsert:
        return staged_insert(instance if instance is not None else owner)


_ENGINE = property(_generalized)
_BATCH = _BatchAttribute()


def enable() -> None:
    """From now on ``Table.staged_insert1`` is dj-staged's engine and ``Table.staged_insert`` its batch form."""
    global _original
    with _lock:
        current = Table.__dict__["staged_insert1"]
        if current is _ENGINE:
            return
        _original = current
        Table.staged_insert1 = _ENGINE
        Table.staged_insert = _BATCH


def disable() -> None:
    """Restore DataJoint's own ``Table.staged_insert1`` and remove ``Table.staged_insert``.

    Refuses while a staged insert waits for an open transaction to end: its
    leases and objects are settled by that transaction's commit or rollback.
    """
    global _original
    check_none_pending()
    with _lock:
        if _original is not None and Table.__dict__["staged_insert1"] is _ENGINE:
            Table.staged_insert1 = _original
        if Table.__dict__.get("staged_insert") is _BATCH:
            del Table.staged_insert
        _original = None


def is_enabled() -> bool:
    """Whether ``Table.staged_insert1`` is currently dj-staged's engine."""
    return Table.__dict__.get("staged_insert1") is _ENGINE
