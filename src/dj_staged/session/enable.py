"""Make ``Table.staged_insert1`` the generalized engine (and add ``Table.staged_insert``); put DataJoint's back.

Importing :mod:`dj_staged` changes nothing in DataJoint; :func:`enable` is the
one explicit switch. It is idempotent, reversible with :func:`disable`, and
guarded by a lock so concurrent calls cannot lose DataJoint's original.

After ``enable()``, ``with Table().staged_insert1 as staged:`` works as in
DataJoint, and ``Table().staged_insert1(allow_direct_insert=True)`` passes
options; ``Table.staged_insert`` is the batch form, on the class or an instance.

Reading either attribute gives an inert object bound to the table
(:class:`BoundStagedInsert1`, :class:`BoundStagedInsert`): it has a docstring
and a signature, and touches neither the table's connection nor the database
until it is called or entered. So ``help()``, ``hasattr``, ``inspect.getmembers``
and ``inspect.signature`` work on any table class, bound to a schema or not.
"""

from __future__ import annotations

import inspect
import threading
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

from .._datajoint import Table
from .batch import DEFAULT_CHUNK, BatchInsert, StagedBatch, staged_insert
from .lifecycle import StagedInsert1, staged_insert1
from .session import StagedSession
from .transaction import check_none_pending

_lock = threading.Lock()
_original: object | None = None

Entered = TypeVar("Entered")  # what the block's `with` statement gives: a StagedSession, or a StagedBatch


class _Bound(Generic[Entered]):
    """A staged-insert factory bound to a table class or instance; also usable directly as a ``with`` block.

    Nothing is read from the table when the object is made: opening a block
    (calling it, or entering it) is what makes the context manager.
    """

    _name = ""  # the attribute's name, for messages
    _doc = ""  # the class's docstring without its indentation

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._doc = inspect.cleandoc(cls.__doc__ or "")

    def __init__(self, table: Table | type[Table]) -> None:
        self._table = table
        self._opened = threading.local()  # per thread, the blocks entered through this object, innermost last
        # its own docstring, so help(Table) shows it beside the attribute (pydoc hides one equal to the class's)
        self.__doc__ = f"{self._doc}\n\nBound to {self._target()}."

    def _open(self) -> AbstractContextManager[Entered, bool]:
        raise NotImplementedError

    def __enter__(self) -> Entered:
        block = self._open()
        entered = block.__enter__()
        self._opened.__dict__.setdefault("blocks", []).append(block)
        return entered

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        return cast(bool, self._opened.blocks.pop().__exit__(exc_type, exc, tb))  # a block _open gave

    def _target(self) -> str:
        """``Trial`` for the class, ``Trial()`` for an instance."""
        if isinstance(self._table, type):
            return self._table.__qualname__
        return f"{type(self._table).__qualname__}()"

    def __repr__(self) -> str:
        return f"<dj-staged {self._name} of {self._target()}>"


class BoundStagedInsert1(_Bound[StagedSession]):
    """``Table().staged_insert1`` after ``dj_staged.enable()``: stage one row (dj-staged's engine).

    ``with Table().staged_insert1 as staged:`` opens a block with default
    options; ``Table().staged_insert1(allow_direct_insert=True)`` returns a
    :class:`~dj_staged.StagedInsert1` to use in the ``with`` statement. The
    block yields a :class:`~dj_staged.StagedSession`; see
    :func:`dj_staged.staged_insert1`.
    """

    _name = "staged_insert1"

    def __call__(self, *, allow_direct_insert: bool = False, resume: bool = False) -> StagedInsert1:
        """A staged insert of one row of this table; ``allow_direct_insert`` as for DataJoint's ``insert``;
        ``resume=True``: resumable (see :func:`dj_staged.staged_insert1`)."""
        return staged_insert1(self._table, allow_direct_insert=allow_direct_insert, resume=resume)

    def _open(self) -> StagedInsert1:
        return self()

    def __enter__(self) -> StagedSession:
        return super().__enter__()


class BoundStagedInsert(_Bound[StagedBatch]):
    """``Table.staged_insert`` after ``dj_staged.enable()``: stage many rows, insert them together.

    ``with Table.staged_insert as batch:`` (on the class or an instance) opens
    a batch with default options; ``Table.staged_insert(chunk_size=...,
    allow_direct_insert=True)`` returns a :class:`~dj_staged.BatchInsert` to
    use in the ``with`` statement. The block yields a
    :class:`~dj_staged.StagedBatch`; see :func:`dj_staged.staged_insert`.
    """

    _name = "staged_insert"

    def __call__(
        self, chunk_size: int = DEFAULT_CHUNK, *, allow_direct_insert: bool = False, resume: bool = False
    ) -> BatchInsert:
        """A staged batch of this table; ``chunk_size`` rows per ``INSERT`` statement at the commit (``resume=True``
        is refused: see :func:`dj_staged.staged_insert`)."""
        return staged_insert(self._table, chunk_size=chunk_size, allow_direct_insert=allow_direct_insert, resume=resume)

    def _open(self) -> BatchInsert:
        return self()

    def __enter__(self) -> StagedBatch:
        return super().__enter__()


class _Attribute:
    """The attribute on ``Table``: read on a class or an instance, it gives a factory bound to it (read-only)."""

    def __init__(self, bound: type[_Bound[Any]]) -> None:
        self._bound = bound
        self.__doc__ = bound.__doc__

    def __get__(self, instance: Table | None, owner: type[Table]) -> _Bound[Any]:
        return self._bound(instance if instance is not None else owner)

    def __set__(self, instance: Table, value: object) -> None:
        raise AttributeError(f"{self._bound._name} is read-only")


_ENGINE = _Attribute(BoundStagedInsert1)
_BATCH = _Attribute(BoundStagedInsert)


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
