"""The phases of a staged insert, and how a block ends.

Setup creates the session; drafting is the caller's block; on a clean exit
finalization computes each staged column value and the row is committed
(:mod:`dj_staged.session.commit`); on an ``Exception`` (raised in the block,
by finalization or by the insert) unwinding removes what was staged and the
original exception propagates. A ``BaseException`` such as
``KeyboardInterrupt`` propagates untouched and nothing is cleaned up
in-process: the lease is marked abandoned, and the collector reclaims what it
names at once. A commit whose outcome could not be found out keeps everything.

A block opened with ``resume=True`` ends differently when it is *interrupted*:
by ``KeyboardInterrupt``/``SystemExit``, a lost database connection, a lapsed
lease, a store's failure raised through a handle, or a commit of unknown
outcome. It then *suspends*: its handles stop where their durable prefix ends,
its lease keeps what it names and its checkpoints (a later block resumes from
them; collectors keep them for the resume window), and its locks are released.
An exception of the caller's own code still unwinds at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, cast

from ..errors import AmbiguousCommitError, CommitRecoveredWarning, LeaseLostError, StagedInsertError, warn
from ..stores.resumable import is_store_failure
from .commit import (
    CommitDoubt,
    Group,
    Outcome,
    ambiguous,
    described,
    insert_rows,
    is_connection_error,
    lost_to_another,
    outcome,
)
from .draft import RowDraft
from .session import StagedSession
from .transaction import Pending, defer

if TYPE_CHECKING:
    from .._datajoint import Table
    from ..durability import SyncPlan
    from ..leases import LeaseKeeper

logger = logging.getLogger(__name__)


class Writer(Protocol):
    """What ends a staged block: a single row or a batch."""

    @property
    def committed(self) -> bool:
        """Whether its rows are visible, or handed to the enclosing transaction: nothing may be unwound then."""
        ...

    def commit(self) -> None: ...

    def unwind(self) -> None: ...

    def abandon(self) -> None: ...

    def close(self) -> None: ...


class Suspendable(Protocol):
    """A writer that may keep an interrupted write for a later attempt (``staged_insert1(..., resume=True)``)."""

    resumable: bool

    def suspend(self) -> None: ...


def interrupted(error: BaseException | None) -> bool:
    """Whether ``error`` interrupts a write rather than fails it: ``KeyboardInterrupt``/``SystemExit``, a lost
    database connection or lease, a commit of unknown outcome, a store's failure raised through a handle."""
    if error is None:
        return False
    if not isinstance(error, Exception):
        return True
    if isinstance(error, LeaseLostError | AmbiguousCommitError) or is_store_failure(error):
        return True
    return is_connection_error(error)


def finish(exc_type: type[BaseException] | None, writer: Writer, exc: BaseException | None = None) -> bool:
    """End a staged block: commit on a clean exit, unwind on an ``Exception`` (including one from
    the commit), abandon on a ``BaseException`` or a commit of unknown outcome, always close;
    never swallow the exception. A resumable block suspends instead when it was interrupted."""
    # getattr, not isinstance: a runtime-checkable protocol's check costs ~50 us, a tenth of a small batch row
    resumable = getattr(writer, "resumable", False) and hasattr(writer, "suspend")
    suspendable = cast(Suspendable, writer) if resumable else None
    try:
        if exc_type is None:
            try:
                writer.commit()
            except BaseException as error:
                if writer.committed and isinstance(error, Exception) and not isinstance(error, AmbiguousCommitError):
                    writer.abandon()  # an error after the rows became visible: they keep their objects
                elif suspendable is not None and interrupted(error):
                    suspendable.suspend()
                elif isinstance(error, AmbiguousCommitError) or not isinstance(error, Exception):
                    writer.abandon()
                else:
                    writer.unwind()
                raise
        elif suspendable is not None and (interrupted(exc) if exc is not None else not issubclass(exc_type, Exception)):
            suspendable.suspend()
        elif issubclass(exc_type, Exception):
            writer.unwind()
        else:
            writer.abandon()
    finally:
        writer.close()
    return False


def commit_rows(
    table: Table,
    groups: list[Group],
    leases: LeaseKeeper,
    *,
    allow_direct_insert: bool,
    unwind: Callable[[], bool],
    chunk_size: int | None = None,
    sync: SyncPlan | None = None,
    release: Callable[[], None] | None = None,
) -> bool:
    """Insert finalized rows; True when they are visible now (the caller then ends the lease), False when the
    enclosing transaction took them (their lease is settled when it ends: ``release``, default
    ``leases.release``, once it commits).

    A commit that lost its connection is resolved here (:func:`~dj_staged.session.commit.outcome`): found
    committed, it counts as visible; otherwise the matching error is raised and nothing is visible.
    """
    try:
        now = insert_rows(
            table, groups, leases, allow_direct_insert=allow_direct_insert, chunk_size=chunk_size, sync=sync
        )
    except CommitDoubt as doubt:
        found = outcome(table, groups, lease_key(leases))
        if found is Outcome.COMMITTED:
            warn(
                f"The connection was lost during the commit of {described(table, groups)}; the rows were looked up "
                f"and found committed ({type(doubt.cause).__name__}: {doubt.cause})",
                CommitRecoveredWarning,
            )
            return True
        if found is Outcome.ABSENT:
            raise doubt.cause from None
        if found is Outcome.TAKEN:
            raise lost_to_another(table, groups) from doubt.cause
        raise ambiguous(table, groups, doubt.cause, found) from doubt.cause
    if now:
        return True

    def rolled_back() -> None:
        if unwind():
            leases.release()
        else:
            leases.abandon()

    defer(
        table.connection,
        Pending(
            committed=release if release is not None else leases.release,
            rolled_back=rolled_back,
            outcome=lambda: outcome(table, groups, lease_key(leases)),
            abandoned=leases.abandon,
            description=described(table, groups),
        ),
    )
    return False


def lease_key(leases: LeaseKeeper) -> int | None:
    """The key of the lease lock that the commit's transaction (or the session that ran it) holds."""
    return leases.lock.key if leases.lock is not None else None


_SESSION_MEMBERS = frozenset({"rec", "store", "open", "set_filename", "fs", "field", "row", "staged_fields"})


class Block:
    """A ``with`` block that ends through :func:`finish`; subclasses say which writer it ends."""

    def _writer(self) -> Writer:
        return self  # type: ignore[return-value]  # StagedInsert1, StagedRow are Writers; BatchInsert overrides

    if not TYPE_CHECKING:  # at run time only: type checkers still see every misspelled attribute

        def __getattr__(self, name: str) -> Any:
            """A session's member asked of the block itself (used without ``with``): say how to use it."""
            if name in _SESSION_MEMBERS:
                usage = (
                    "`with dj_staged.staged_insert(Table) as batch:`, then `with batch.row() as staged:` inside it"
                    if name == "row"
                    else f"`with dj_staged.staged_insert1(Table) as staged:`, then `staged.{name}` inside the block"
                )
                raise AttributeError(
                    f"'{type(self).__name__}' has no attribute '{name}': it is a context manager, and '{name}' belongs "
                    f"to what its `with` statement gives: {usage}"
                )
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        return finish(exc_type, self._writer(), exc)


def _as_table(table: Table | type[Table]) -> Table:
    """Accept a table class (``Recording``) or an instance (``Recording()``)."""
    return table() if isinstance(table, type) else table


class StagedInsert1(Block):
    """Context manager returned by :func:`staged_insert1` and, after ``enable()``, ``Table.staged_insert1``."""

    def __init__(self, table: Table | type[Table], *, allow_direct_insert: bool = False, resume: bool = False) -> None:
        if not isinstance(resume, bool):
            raise StagedInsertError(f"resume must be True or False, not {resume!r}")
        self._table = _as_table(table)
        self._session = StagedSession(RowDraft(self._table, allow_direct_insert=allow_direct_insert, resume=resume))
        self.resumable = resume

    def __call__(self, *, allow_direct_insert: bool = False, resume: bool = False) -> StagedInsert1:
        """``Table.staged_insert1(allow_direct_insert=True)`` after ``enable()``: the same, with options."""
        return StagedInsert1(self._table, allow_direct_insert=allow_direct_insert, resume=resume)

    def __enter__(self) -> StagedSession:
        return self._session

    @property
    def committed(self) -> bool:
        return self._session.draft.committed

    def commit(self) -> None:
        draft = self._session.draft
        row, fields = draft.finalize()
        now = commit_rows(
            draft.table,
            [([row], frozenset(fields))],
            draft.leases,
            allow_direct_insert=draft.allow_direct_insert,
            unwind=draft.unwind,
            sync=draft.sync,
        )
        draft.committed = True
        if now:
            draft.leases.release()

    def unwind(self) -> None:
        draft = self._session.draft
        if draft.unwind():
            draft.leases.release()
        else:
            draft.leases.abandon()

    def abandon(self) -> None:
        self._session.draft.leases.abandon()

    def suspend(self) -> None:
        """Interrupted with ``resume=True``: keep the durable prefix and its checkpoints for a later block."""
        self._session.draft.suspend()

    def close(self) -> None:
        self._session.draft.close()


def staged_insert1(
    table: Table | type[Table], *, allow_direct_insert: bool = False, resume: bool = False
) -> StagedInsert1:
    """Stage one row of ``table``: ``with staged_insert1(Table) as staged: ...``.

    ``allow_direct_insert=True`` permits a staged insert into an auto-populated
    table outside its ``make()``, as for DataJoint's ``insert``.

    ``resume=True`` makes the write resumable: interrupted without an error of
    the block's own code (a kill, a lost connection, ``KeyboardInterrupt``, a
    crash), what it made durable is kept for the resume window, and the next
    ``resume=True`` block of the same row goes on from there: ``f.tell()`` of an
    ``open()`` handle is where to go on (0 the first time), a ``store()``
    handle's ``durable`` lists the keys already there.

    Example::

        with dj_staged.staged_insert1(Recording) as staged:
            staged.rec["recording_id"] = 42
            with staged.open("waveform", ".npy") as f:
                np.save(f, big_array, allow_pickle=False)
    """
    return StagedInsert1(table, allow_direct_insert=allow_direct_insert, resume=resume)
