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

Each row is finalized when its inner block exits (metadata computed,
hash-addressed content promoted); only its metadata is kept. An exception in an
inner block unwinds that row; if the caller catches it inside the outer block
the batch goes on without the row, otherwise the whole batch unwinds: no rows,
and every schema-addressed object and staging object of the batch removed
(canonical hash objects stay: other rows may reference them). A primary key
already used in the batch is rejected as soon as the row asks for a handle
(before its bytes are written), or at the row's exit if it stages nothing.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from datajoint.errors import DataJointError

from ..gc.leases import LeaseKeeper
from .lifecycle import _as_table, finish
from .rows import finalized_view
from .session import StagedSession

DEFAULT_CHUNK = 1000


class StagedRow:
    """Context manager for one row of a batch; yields a :class:`StagedSession`."""

    def __init__(self, batch: StagedBatch) -> None:
        self._batch = batch
        self._session = StagedSession(batch.table, leases=batch._leases, on_key=batch._reserve)

    def __enter__(self) -> StagedSession:
        return self._session

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        session = self._session
        batch = self._batch
        batch._open_row = None

        def commit() -> None:
            batch._accept(session, *session._finalize())

        def unwind() -> None:
            session._unwind()
            batch._release(session)

        # the row's leases stay with the batch until it commits or unwinds
        return finish(exc_type, commit, unwind, lambda: session._close(release=False))


class StagedBatch:
    """The object a ``with staged_insert(Table) as batch:`` block works with."""

    def __init__(self, table: Any, chunk_size: int = DEFAULT_CHUNK) -> None:
        self.table = table
        self.chunk_size = chunk_size
        self._leases = LeaseKeeper()
        self._keys: set[tuple] = set()
        self._rows: list[tuple[StagedSession, dict[str, Any], frozenset[str]]] = []
        self._open_row: StagedRow | None = None
        self.closed = False

    def __len__(self) -> int:
        """Rows finalized so far."""
        return len(self._rows)

    def row(self) -> StagedRow:
        """Start the next row: ``with batch.row() as staged: ...``."""
        if self.closed:
            raise DataJointError("This staged batch has ended: rows can be added only inside its block")
        if self._open_row is not None:
            raise DataJointError("The previous row of this batch is still open: finish its block first")
        self._open_row = StagedRow(self)
        return self._open_row

    def _key_of(self, key: dict[str, Any]) -> tuple:
        return tuple(key[name] for name in self.table.primary_key)

    def _reserve(self, key: dict[str, Any]) -> None:
        token = self._key_of(key)
        if token in self._keys:
            raise DataJointError(f"Duplicate primary key {key} within this staged batch: each row needs its own key")
        self._keys.add(token)

    def _release(self, session: StagedSession) -> None:
        self._leases.release_session(session)
        if session._key_announced is not None:
            self._keys.discard(self._key_of(session._key_announced))

    def _accept(self, session: StagedSession, row: dict[str, Any], fields: set[str]) -> None:
        self._rows.append((session, row, frozenset(fields)))

    def _insert_all(self) -> None:
        """Insert every row in one transaction, grouped by columns, ``chunk_size`` rows per statement."""
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for _session, row, fields in self._rows:
            groups.setdefault((tuple(sorted(row)), fields), []).append(row)
        connection = self.table.connection
        with connection.transaction:
            for (_columns, fields), rows in groups.items():
                view = finalized_view(self.table, fields)
                for start in range(0, len(rows), self.chunk_size):
                    view.insert(rows[start : start + self.chunk_size])

    def _unwind(self) -> None:
        for session, _row, _fields in self._rows:
            session._unwind()

    def _close(self) -> None:
        self.closed = True
        self._leases.release()


class StagedInsert:
    """Context manager returned by :func:`staged_insert` and, after ``enable()``, ``Table.staged_insert``."""

    def __init__(self, table: Any, chunk_size: int = DEFAULT_CHUNK) -> None:
        self._batch = StagedBatch(_as_table(table), chunk_size=chunk_size)

    def __enter__(self) -> StagedBatch:
        return self._batch

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        batch = self._batch
        return finish(exc_type, batch._insert_all, batch._unwind, batch._close)


def staged_insert(table: Any, chunk_size: int = DEFAULT_CHUNK) -> StagedInsert:
    """Stage many rows of ``table`` and insert them together: ``with staged_insert(Table) as batch: ...``."""
    return StagedInsert(table, chunk_size=chunk_size)
