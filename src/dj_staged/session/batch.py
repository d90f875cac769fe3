"""Multi-row staged insert: many rows, each with its own objects, committed together.

Example::

    with dj_staged.staged_insert(Trial) as batch:
        for i, segment in enumerate(acquisition):
            with batch.row() as staged:              # same API as staged_insert1's session
                staged.rec["session_id"] = 1
                staged.rec["trial"] = i
                with staged.open("signal", ".npy") as f:
                    np.save(f, segment, allow_pickle=False)
    # clean exit of the outer block: every row inserted in one transaction

Each row is finalized when its inner block exits (checked as far as no server
is needed, metadata computed, hash-addressed content promoted); only its
metadata is kept. An exception in an inner block unwinds that row; if the
caller catches it inside the outer block the batch goes on without the row,
otherwise the whole batch unwinds. A primary key already used in the batch
(compared as the table types it) is rejected as soon as the row asks for a
handle, before its bytes are written, or at the row's exit if it stages
nothing. A key already in the table is refused before the first row's first
byte, and a later row's by its exit (looked up while it writes:
:mod:`dj_staged.session.keys`); what only the server refuses (a value its type
refuses, a missing parent, a key committed elsewhere meanwhile) fails the
final insert, and the whole batch unwinds, as with DataJoint's
``insert(list)``. The whole batch holds one lease, released once its rows are
visible.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..durability import SyncPlan, durable
from ..errors import DuplicateError, HandleModeError, StagedInsertError
from ..leases import LeaseKeeper
from ..stores import StagedStore
from .commit import Group
from .draft import RowDraft
from .keys import KeyLookout
from .lifecycle import Block, _as_table, commit_rows
from .rows import Trials, key_token
from .session import StagedSession

if TYPE_CHECKING:
    from .._datajoint import Table

DEFAULT_CHUNK = 1000


class StagedRow(Block):
    """Context manager for one row of a batch; yields a :class:`StagedSession`."""

    def __init__(self, batch: StagedBatch) -> None:
        self._batch = batch
        self._session = StagedSession(
            RowDraft(
                batch.table,
                leases=batch.leases,
                on_key=batch._reserve,
                allow_direct_insert=batch.allow_direct_insert,
                stores=batch.stores,
                trials=batch.trials,
                lookout=batch.lookout,
            )
        )

    def __enter__(self) -> StagedSession:
        return self._session

    def commit(self) -> None:
        draft = self._session.draft
        row, fields = draft.finalize()
        self._batch.sync.merge(draft.sync)
        self._batch._accept(draft, row, fields)

    def unwind(self) -> None:
        draft = self._session.draft
        if not draft.unwind():
            self._batch._rows_clean = False  # the batch's lease must outlive it, abandoned, to name the leftovers
        self._batch._forget(draft)

    @property
    def committed(self) -> bool:
        """A row is finalized at its exit, never committed alone: the batch commits it."""
        return False

    def abandon(self) -> None:
        """Nothing for one row: the interruption ends the whole batch, which abandons its lease."""

    def close(self) -> None:
        self._batch._open_row = None
        self._session.draft.close()


class StagedBatch:
    """The object a ``with staged_insert(Table) as batch:`` block works with."""

    def __init__(self, table: Table, chunk_size: int = DEFAULT_CHUNK, *, allow_direct_insert: bool = False) -> None:
        self.table = table
        self.chunk_size = chunk_size
        self.allow_direct_insert = allow_direct_insert
        self.leases = LeaseKeeper(table.connection, table.database, table.table_name)
        self.sync = SyncPlan(durable())  # every accepted row's files and directories, synced once at the commit
        self.stores: dict[str | None, StagedStore] = {}  # resolved once for all rows
        self.trials = Trials()  # the checks' table copies and the row shapes DataJoint built, kept for all rows
        self.lookout = KeyLookout(table)  # later rows' keys, looked up while they write
        self._keys: set[tuple[Any, ...]] = set()
        self._rows: list[tuple[RowDraft, dict[str, Any], frozenset[str]]] = []
        self._field_sets: dict[frozenset[str], frozenset[str]] = {}
        self._open_row: StagedRow | None = None
        self._rows_clean = True
        self.closed = False
        self.committed = False  # the rows are visible, or the enclosing transaction took them

    def __len__(self) -> int:
        """Rows finalized so far."""
        return len(self._rows)

    def row(self) -> StagedRow:
        """Start the next row: ``with batch.row() as staged: ...``."""
        if self.closed:
            raise HandleModeError("This staged batch has ended: rows can be added only inside its block")
        if self._open_row is not None:
            raise HandleModeError("The previous row of this batch is still open: finish its block first")
        self._open_row = StagedRow(self)
        return self._open_row

    def _reserve(self, key: dict[str, Any]) -> None:
        token = key_token(self.trials.key_columns(self.table), key)
        if token in self._keys:
            raise DuplicateError(
                f"Duplicate primary key {key} within this staged batch: each row needs its own key "
                f"(keys are compared as {self.table.full_table_name} types them)"
            )
        self._keys.add(token)

    def _forget(self, draft: RowDraft) -> None:
        if draft.announced_key is not None:
            self._keys.discard(key_token(self.trials.key_columns(self.table), draft.announced_key))

    def _accept(self, draft: RowDraft, row: dict[str, Any], fields: set[str]) -> None:
        staged = frozenset(fields)
        self._rows.append((draft, row, self._field_sets.setdefault(staged, staged)))  # one set per shape

    def groups(self) -> list[Group]:
        """The rows grouped by the columns they set (one ``INSERT`` statement shape per group)."""
        grouped: dict[tuple[tuple[str, ...], frozenset[str]], list[dict[str, Any]]] = {}
        for _draft, row, fields in self._rows:
            grouped.setdefault((tuple(sorted(row)), fields), []).append(row)
        return [(rows, fields) for (_columns, fields), rows in grouped.items()]

    def commit(self) -> None:
        if not self._rows:
            if self._rows_clean:
                self.leases.release()
            else:
                self.leases.abandon()
            return
        release = self.leases.release if self._rows_clean else self.leases.abandon
        now = commit_rows(
            self.table,
            self.groups(),
            self.leases,
            allow_direct_insert=self.allow_direct_insert,
            unwind=self._unwind_rows,
            chunk_size=self.chunk_size,
            sync=self.sync,
            release=release,
        )
        self.committed = True
        if now:
            release()

    def _unwind_rows(self) -> bool:
        clean = True
        for draft, _row, _fields in self._rows:
            clean = draft.unwind() and clean
        return clean

    def unwind(self) -> None:
        if self._unwind_rows() and self._rows_clean:
            self.leases.release()
        else:
            self.leases.abandon()

    def abandon(self) -> None:
        self.leases.abandon()

    def close(self) -> None:
        self.closed = True
        self.lookout.close()


BATCH_RESUME = (
    "staged_insert refuses resume=True: a batch's rows commit together, in one transaction, so one row cannot be "
    "resumed while the others are redone or kept; resume one large row per staged_insert1(Table, resume=True) block"
)


class BatchInsert(Block):
    """Context manager returned by :func:`staged_insert` and, after ``enable()``, by ``Table.staged_insert(...)``."""

    def __init__(
        self,
        table: Table | type[Table],
        chunk_size: int = DEFAULT_CHUNK,
        *,
        allow_direct_insert: bool = False,
        resume: bool = False,
    ) -> None:
        if resume:
            raise StagedInsertError(BATCH_RESUME)
        self._table = _as_table(table)
        self._batch = StagedBatch(self._table, chunk_size=chunk_size, allow_direct_insert=allow_direct_insert)

    def __enter__(self) -> StagedBatch:
        return self._batch

    def _writer(self) -> StagedBatch:
        return self._batch


def staged_insert(
    table: Table | type[Table],
    chunk_size: int = DEFAULT_CHUNK,
    *,
    allow_direct_insert: bool = False,
    resume: bool = False,
) -> BatchInsert:
    """Stage many rows of ``table`` and insert them together: ``with staged_insert(Table) as batch: ...``.

    ``resume=True`` is refused with a :class:`~dj_staged.errors.StagedInsertError`: the rows of a batch commit
    together; resume one large row per ``staged_insert1(Table, resume=True)`` block instead.
    """
    return BatchInsert(table, chunk_size=chunk_size, allow_direct_insert=allow_direct_insert, resume=resume)
