"""The object a ``with staged_insert1(Table) as staged:`` block works with: the caller's façade of one row.

It keeps DataJoint 2.3.5's API (``rec``, ``store``, ``open``, ``fs``) and adds
``set_filename`` for attachments. The row itself, its fields, lease and phase,
is a :class:`~dj_staged.session.draft.RowDraft`, which the block's lifecycle
finalizes, commits or unwinds.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any, cast

import fsspec

from ..errors import StagedInsertError
from ..leases import LeaseKeeper
from ..protocol import StagedField
from ..stores import resolve_store
from .draft import RowDraft

if TYPE_CHECKING:
    from .._datajoint import Table


class StagedSession:
    """Collects one row: plain values in ``rec``, large values through ``store()``/``open()``."""

    def __init__(self, draft: RowDraft) -> None:
        self._draft = draft

    @property
    def draft(self) -> RowDraft:
        """The row behind this block (for codec helpers such as ``open_blob_array``, and the block's lifecycle)."""
        return self._draft

    @property
    def table(self) -> Table:
        """The table the row goes into."""
        return self._draft.table

    @property
    def rec(self) -> dict[str, Any]:
        """Record dict for setting attribute values (primary key first)."""
        return self._draft.rec

    @property
    def leases(self) -> LeaseKeeper:
        """The lease protecting what this block writes."""
        return self._draft.leases

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """fsspec filesystem of the default store, for advanced operations."""
        self._draft.require_open()
        return resolve_store(None, self._draft.config).fs

    @property
    def primary_key(self) -> dict[str, Any]:
        """The primary key set so far on ``rec``; raises if any attribute is missing."""
        return self._draft.primary_key

    @property
    def staged_fields(self) -> list[str]:
        """Fields written through ``store()``/``open()`` so far, in order of first use."""
        return self._draft.staged_fields

    def field(self, name: str) -> StagedField:
        """The staged field ``name`` (what its codec was given), once claimed through ``store()``/``open()``."""
        return self._draft.field(name)

    def filename(self, field: str) -> str | None:
        """The filename given with :meth:`set_filename`, if any."""
        return self._draft.filename(field)

    def store(self, field: str, ext: str = "", *, path: str | None = None, overwrite: bool = False) -> fsspec.FSMap:
        """Return an ``fsspec.FSMap`` for writing a directory-like value (Zarr, multi-file) into ``field``.

        Calling it again for the same field returns a handle on the same
        location; a different extension for a field already staged is an error.
        The handle refuses every write once the block has ended. A
        ``<filepath@>`` field takes the folder's ``path`` in the store instead
        of ``ext`` (``overwrite=True`` replaces what no row references there).
        """
        mapping: fsspec.FSMap = self._draft.handle(field, ext, mode="store", path=path, overwrite=overwrite)
        return mapping

    def open(
        self,
        field: str,
        ext: str = "",
        mode: str = "wb",
        *,
        size: int | None = None,
        path: str | None = None,
        overwrite: bool = False,
    ) -> IO[bytes]:
        """Open a file handle for writing ``field``'s content (mode as for ``open``, default ``"wb"``).

        ``size``, when known, is the number of bytes that will be written; a
        ``<blob@>`` field then hashes its content while it streams, and any
        other count at exit is an error. A handle closed after zero bytes holds
        an empty value. A ``<filepath@>`` field takes the file's ``path`` in the
        store instead of ``ext`` (``overwrite=True`` replaces a file no row
        references there).
        """
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise StagedInsertError(f"size for field '{field}' must be a non-negative int, got {size!r}", field=field)
        handle = self._draft.handle(field, ext, mode="open", file_mode=mode, size=size, path=path, overwrite=overwrite)
        return cast(IO[bytes], handle)  # the participant's file handle for open() (dj-staged's: a StagedFile)

    def set_filename(self, field: str, filename: str) -> None:
        """Name the file an attachment (``<attach@>``) field holds; before or after ``open()``."""
        self._draft.set_filename(field, filename)

    def key_token(self) -> tuple[Any, ...]:
        """The row's primary key as the table types it."""
        return self._draft.key_token()
