"""The four phases of one staged insert: setup, drafting, finalization, unwinding.

Setup creates the session; drafting is the caller's block; on a clean exit
finalization computes each staged column value and inserts the row once; on an
``Exception`` (raised in the block, by finalization or by the insert) unwinding
removes what was staged and the original exception propagates. A
``BaseException`` such as ``KeyboardInterrupt`` propagates untouched: its
leftovers are reclaimed by ``dj-staged gc``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from .session import StagedSession


def finish(
    exc_type: type[BaseException] | None,
    commit: Callable[[], None],
    unwind: Callable[[], None],
    close: Callable[[], None],
) -> bool:
    """End a staged block: commit on a clean exit, unwind on an ``Exception`` (including one from
    the commit), leave a ``BaseException`` untouched, always close; never swallow the exception."""
    try:
        if exc_type is None:
            try:
                commit()
            except Exception:
                unwind()
                raise
        elif issubclass(exc_type, Exception):
            unwind()
    finally:
        close()
    return False


def _as_table(table: Any) -> Any:
    """Accept a table class (``Recording``) or an instance (``Recording()``)."""
    return table() if isinstance(table, type) else table


class StagedInsert1:
    """Context manager returned by :func:`staged_insert1` and, after ``enable()``, ``Table.staged_insert1``."""

    def __init__(self, table: Any) -> None:
        self._session = StagedSession(_as_table(table))

    def __enter__(self) -> StagedSession:
        return self._session

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        session = self._session
        return finish(exc_type, session._finalize_and_insert, session._unwind, session._close)


def staged_insert1(table: Any) -> StagedInsert1:
    """Stage one row of ``table``: ``with staged_insert1(Table) as staged: ...``.

    Example::

        with dj_staged.staged_insert1(Recording) as staged:
            staged.rec["recording_id"] = 42
            with staged.open("waveform", ".npy") as f:
                np.save(f, big_array, allow_pickle=False)
    """
    return StagedInsert1(table)
