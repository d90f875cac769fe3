"""The object a ``with staged_insert1(Table) as staged:`` block works with.

It keeps DataJoint 2.3.5's API (``rec``, ``store``, ``open``, ``fs``) and adds
``set_filename`` for attachments. Everything codec-specific is delegated to the
field's participant (see :mod:`dj_staged.protocol`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import IO, Any

import fsspec
from datajoint.errors import DataJointError
from datajoint.hash_registry import get_store_backend

from ..addressing.paths import check_extension, check_filename
from ..errors import missing_primary_key, storage_not_configured
from ..gc.leases import LeaseKeeper
from ..protocol import participant_for
from .rows import insert_finalized
from .slot import FieldSlot

logger = logging.getLogger(__name__)

DRAFTING, FINALIZING, UNWINDING, CLOSED = "drafting", "finalizing", "unwinding", "closed"


class StagedSession:
    """Collects one row: plain values in ``rec``, large values through ``store()``/``open()``."""

    def __init__(
        self,
        table: Any,
        *,
        leases: LeaseKeeper | None = None,
        on_key: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._table = table
        self._rec: dict[str, Any] = {}
        self._slots: dict[str, FieldSlot] = {}
        self._filenames: dict[str, str] = {}
        self._leases = leases if leases is not None else LeaseKeeper()  # in-flight marks for `dj-staged gc`
        self._on_key = on_key
        self._key_announced: dict[str, Any] | None = None
        self.phase = DRAFTING

    @property
    def table(self) -> Any:
        """The table the row goes into."""
        return self._table

    @property
    def rec(self) -> dict[str, Any]:
        """Record dict for setting attribute values (primary key first)."""
        return self._rec

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """fsspec filesystem of the default store, for advanced operations."""
        self._require_open()
        try:
            return get_store_backend(None, config=self._config).fs
        except DataJointError as error:
            raise storage_not_configured("<default store>", error) from error

    @property
    def primary_key(self) -> dict[str, Any]:
        """The primary key set so far on ``rec``; raises if any attribute is missing."""
        key = {k: self._rec[k] for k in self._table.primary_key if k in self._rec}
        if len(key) != len(self._table.primary_key):
            raise missing_primary_key(set(self._table.primary_key) - set(key))
        return key

    @property
    def staged_fields(self) -> list[str]:
        """Fields written through ``store()``/``open()`` so far, in order of first use."""
        return list(self._slots)

    def slot(self, field: str) -> FieldSlot:
        """The state of a field already claimed through ``store()``/``open()``."""
        try:
            return self._slots[field]
        except KeyError:
            raise DataJointError(f"Field '{field}' has not been staged in this block") from None

    def protect(self, field: str, path: str) -> None:
        """Mark ``path`` as in flight for ``field`` until the block ends, so ``dj-staged gc`` leaves it alone.

        Lifecycles call it for an object the row will reference before the row
        exists (a canonical hash object about to be shared).
        """
        self._leases.cover(self, field, path)

    def filename(self, field: str) -> str | None:
        """The filename given with :meth:`set_filename`, if any."""
        return self._filenames.get(field)

    def store(self, field: str, ext: str = "") -> fsspec.FSMap:
        """Return an ``fsspec.FSMap`` for writing a directory-like value (Zarr, multi-file) into ``field``.

        Calling it again for the same field returns a handle on the same
        location; a different extension for a field already staged is an error.
        """
        return self._handle(field, ext, mode="store")

    def open(self, field: str, ext: str = "", mode: str = "wb", *, size: int | None = None) -> IO:
        """Open a file handle for writing ``field``'s content (mode as for ``open``, default ``"wb"``).

        ``size``, when known, is the number of bytes that will be written; a
        ``<blob@>`` field then hashes its content while it streams, and any
        other count at exit is an error.
        """
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise DataJointError(f"size for field '{field}' must be a non-negative int, got {size!r}")
        return self._handle(field, ext, mode="open", file_mode=mode, size=size)

    def set_filename(self, field: str, filename: str) -> None:
        """Name the file an attachment (``<attach@>``) field holds; before or after ``open()``."""
        self._require_open()
        attr = self._attribute(field)
        participant = participant_for(attr.codec) if attr.codec is not None else None
        if not getattr(participant, "accepts_filename", False):
            codec = f"<{attr.codec.name}>" if attr.codec is not None else attr.type
            raise DataJointError(f"Field '{field}' ({codec}) does not take a filename; set_filename is for <attach@>")
        self._filenames[field] = check_filename(field, filename)

    def _handle(
        self,
        field: str,
        ext: str,
        *,
        mode: str,
        file_mode: str = "wb",
        size: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> Any:
        self._require_open()
        new = field not in self._slots
        slot = self._claim(field, ext)
        if size is not None:
            slot.size = size
        slot.options.update(options or {})
        try:
            handle = slot.participant.staged_handle(self, field, slot.ext, mode=mode, file_mode=file_mode)
        except Exception:
            if new:  # the field stages nothing; remove what the failed handle may have created
                try:
                    slot.participant.cleanup_staged(self, field)
                except Exception:
                    logger.warning("Cleanup after a failed handle for '%s' failed", field, exc_info=True)
                del self._slots[field]
            raise
        slot.handles.append(handle)
        self._leases.cover(self, field)
        return handle

    def _claim(self, field: str, ext: str) -> FieldSlot:
        """Resolve ``field`` on its first use; check consistency on later ones."""
        if field in self._slots:
            slot = self._slots[field]
            if check_extension(field, ext) != slot.ext:
                raise DataJointError(
                    f"Field '{field}' was already staged with extension {slot.ext!r}; "
                    f"a second handle must use the same extension, not {ext!r}"
                )
            return slot
        attr = self._attribute(field)
        participant = self._participant(field, attr)
        primary_key = self.primary_key
        self._announce_key(primary_key)
        store_name, spec, backend = self._resolve_store(field, attr)
        slot = FieldSlot(
            field=field,
            codec=attr.codec,
            participant=participant,
            store_name=store_name,
            spec=spec,
            backend=backend,
            ext=check_extension(field, ext),
            primary_key=primary_key,
        )
        self._slots[field] = slot
        return slot

    def _attribute(self, field: str) -> Any:
        if field not in self._table.heading.names:
            raise DataJointError(f"Attribute '{field}' not found in table heading")
        return self._table.heading[field]

    @staticmethod
    def _participant(field: str, attr: Any) -> Any:
        codec = attr.codec
        if codec is None:
            raise DataJointError(
                f"Attribute '{field}' ({attr.type}) is not an object-store codec field; "
                "set its value on staged.rec instead of using store()/open()"
            )
        if attr.store is None:
            raise DataJointError(
                f"Attribute '{field}' (<{codec.name}>) is stored in the table, not in an object store; "
                f"declare it <{codec.name}@> or <{codec.name}@store> to stage it, or set its value on staged.rec"
            )
        participant = participant_for(codec)
        if participant is None:
            raise DataJointError(
                f"Codec <{codec.name}> of attribute '{field}' does not support staged insert: it implements none of "
                "staged_handle/finalize_staged/cleanup_staged. Set the value on staged.rec (ordinary insert) or use "
                "a codec that participates (see the compatibility matrix in the README)."
            )
        return participant

    def _resolve_store(self, field: str, attr: Any) -> tuple[str, dict, Any]:
        # DataJoint 2.3.5's insert1 passes the empty store name of `<x@>` on and
        # fails; `<x@>` means stores.default, so resolve it to that store's name.
        requested = attr.store or None
        try:
            spec = self._config.get_store_spec(requested)
            backend = get_store_backend(requested, config=self._config)
        except (DataJointError, OSError) as error:
            raise storage_not_configured(field, error) from error
        store_name = requested if requested is not None else self._config.stores["default"]
        return store_name, spec, backend

    @property
    def _config(self) -> Any:
        return self._table.connection._config

    def _require_open(self) -> None:
        if self.phase != DRAFTING:
            raise DataJointError(
                f"This staged insert is {self.phase}: store(), open() and set_filename() work only inside its block"
            )

    def _announce_key(self, key: dict[str, Any]) -> None:
        """Tell the owner (a batch) the row's key once, before any of its bytes are written."""
        if self._on_key is not None and self._key_announced is None:
            self._on_key(key)
            self._key_announced = dict(key)

    def _finalize_and_insert(self) -> None:
        """Finalization, then the row's one insert."""
        row, fields = self._finalize()
        insert_finalized(self._table, row, fields)

    def _finalize(self) -> tuple[dict[str, Any], set[str]]:
        """Close handles and build each staged column value; return the row and its finalized fields."""
        self.phase = FINALIZING
        if self._on_key is not None:
            self._announce_key(self.primary_key)
        self._close_handles()
        for field, slot in self._slots.items():
            current = {k: self._rec.get(k) for k in slot.primary_key}
            if current != slot.primary_key:
                raise DataJointError(
                    f"The primary key changed after store()/open() for field '{field}' "
                    f"({slot.primary_key} → {current}); set the whole key before asking for a handle"
                )
        row = dict(self._rec)
        finalized: dict[str, dict] = {}
        for field, slot in self._slots.items():
            if field in row:
                warnings.warn(
                    f"staged.rec['{field}'] is ignored: the field was written through store()/open(), "
                    "and its value is computed from what was written",
                    stacklevel=3,
                )
            finalized[field] = slot.participant.finalize_staged(self, field)
            self._leases.cover(self, field, finalized[field].get("path"))
        row.update(finalized)
        for slot in self._slots.values():
            slot.handles.clear()
        return row, set(finalized)

    def _unwind(self) -> None:
        """Unwinding: remove what every staged field wrote; never raise over the caller's error."""
        self.phase = UNWINDING
        self._close_handles()
        for field, slot in self._slots.items():
            try:
                slot.participant.cleanup_staged(self, field)
            except Exception:
                logger.warning("Cleanup of staged field '%s' failed; `dj-staged gc` reclaims it", field, exc_info=True)

    def _close_handles(self) -> None:
        for slot in self._slots.values():
            for handle in slot.handles:
                close = getattr(handle, "close", None)
                if close is None or getattr(handle, "closed", False):
                    continue
                try:
                    close()
                except Exception:
                    if self.phase != UNWINDING:
                        raise
                    logger.warning("Closing a handle of field '%s' failed", slot.field, exc_info=True)

    def _close(self, *, release: bool = True) -> None:
        self.phase = CLOSED
        if release:
            self._leases.release()
