"""Schema-addressed lifecycle: write at the canonical path from the first byte.

The path is the one ordinary ``insert1`` builds for the row
(``datajoint.storage.build_object_path`` with the store's ``schema_prefix``,
``partition_pattern`` and ``token_length`` and the table's ``table_name``).
Finalization inspects what was written and builds the ``<object@>``-shaped
metadata, which a codec refines in :meth:`_enrich_staged_metadata`; cleanup
deletes the file or directory.

Example (a custom codec)::

    class TiffStackCodec(SchemaAddressedStaging, SchemaCodec):
        name = "tiffstack"
        staged_modes = ("store",)

        def _enrich_staged_metadata(self, base, session, field):
            return {"path": base["path"], "store": base["store"], "n_pages": base["item_count"]}
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import fsspec
from datajoint.errors import DataJointError
from datajoint.storage import build_object_path

from .paths import check_relative_path

_FILE_MODES = ("wb", "w", "xb", "x", "ab", "a", "w+b", "wb+", "r+b", "rb+")


def codec_label(codec: Any) -> str:
    """``<name>`` for messages."""
    return f"<{getattr(codec, 'name', type(codec).__name__)}>"


def check_mode(participant: Any, session: Any, field: str, mode: str) -> None:
    """Raise unless the participant serves ``mode`` (``"store"`` or ``"open"``)."""
    allowed = getattr(participant, "staged_modes", ("store", "open"))
    if mode not in allowed:
        codec = codec_label(session.slot(field).codec)
        hint = {
            "store": f"use staged.open('{field}', ext): a {codec} value is a single file",
            "open": f"use staged.store('{field}', ext): a {codec} value is a directory",
        }[mode]
        raise DataJointError(f"Field '{field}' ({codec}) does not support staged.{mode}(); {hint}")


class SchemaAddressedStaging:
    """Lifecycle mixin for codecs whose objects live at a path derived from the row."""

    #: Which of ``store()`` / ``open()`` the codec serves.
    staged_modes: tuple[str, ...] = ("store", "open")

    def staged_handle(self, session: Any, field: str, ext: str | None, *, mode: str, file_mode: str = "wb") -> Any:
        """A handle at the canonical path; a second call for the field reuses the same path."""
        check_mode(self, session, field, mode)
        slot = session.slot(field)
        path = slot.state.get("path") or self._claim_path(session, field)
        if mode == "store":
            return slot.backend.get_fsmap(path)
        if file_mode not in _FILE_MODES:
            raise DataJointError(f"Field '{field}': staged.open() writes; mode {file_mode!r} is not a write mode")
        return slot.backend.open(path, file_mode)

    def _claim_path(self, session: Any, field: str) -> str:
        slot = session.slot(field)
        path, token = build_object_path(
            schema=session.table.database,
            table=session.table.table_name,
            field=field,
            primary_key=slot.primary_key,
            ext=slot.ext,
            partition_pattern=slot.spec.get("partition_pattern"),
            token_length=slot.spec.get("token_length", 8),
            schema_prefix=slot.spec["schema_prefix"],
        )
        slot.state["path"] = check_relative_path(field, path)
        slot.state["token"] = token
        return path

    def finalize_staged(self, session: Any, field: str) -> dict:
        """Inspect what was written, then let the codec refine the metadata."""
        base = inspect_written(session, field)
        return self._enrich_staged_metadata(base, session, field)

    def _enrich_staged_metadata(self, base: dict, session: Any, field: str) -> dict:
        """Codec hook: turn the ``<object@>``-shaped ``base`` into this codec's column value."""
        return base

    def cleanup_staged(self, session: Any, field: str) -> None:
        """Delete the file or directory at the canonical path, if anything is there."""
        slot = session.slot(field)
        path = slot.state.get("path")
        if path is not None:
            remove_object(slot.backend, path)


def nothing_written(field: str, codec: Any) -> DataJointError:
    """The error for a staged field whose handle received nothing by the end of the block."""
    return DataJointError(
        f"Nothing was written to field '{field}' ({codec_label(codec)}) through its staged handle; "
        "write the content inside the block, or do not ask for a handle"
    )


def inspect_written(session: Any, field: str) -> dict:
    """``{path, store, size, ext, is_dir, item_count, timestamp}`` for what is at the field's path.

    The shape is ``ObjectCodec.encode``'s; nothing at the path is an error (a
    staged field that was never written would otherwise become a row pointing
    at nothing).
    """
    slot = session.slot(field)
    path = slot.state["path"]
    fs = slot.backend.fs
    full = slot.backend._full_path(path)
    try:
        info = fs.info(full)
    except FileNotFoundError:
        info = None
    is_dir = info is not None and info["type"] == "directory"
    files = find_strict(fs, full, detail=True) if is_dir else None  # listed once: it costs per file
    if info is None or (is_dir and not files):
        raise nothing_written(field, slot.codec)
    if is_dir:
        size = sum(entry.get("size") or 0 for entry in files.values())
        item_count = len(files)
    else:
        size, item_count = info["size"], None
    return {
        "path": path,
        "store": slot.store_name,
        "size": size,
        "ext": slot.ext,
        "is_dir": is_dir,
        "item_count": item_count,
        "timestamp": datetime.now(UTC).isoformat(),
    }


def find_strict(fs: Any, path: str, **kwargs: Any) -> Any:
    """``fs.find`` that raises when a directory cannot be listed.

    fsspec's generic (walk-based) ``find`` skips such a directory silently,
    which would turn a store failure into "nothing was written".
    """
    if type(fs).find is fsspec.AbstractFileSystem.find:
        kwargs["on_error"] = "raise"
    return fs.find(path, **kwargs)


def remove_object(backend: Any, path: str) -> None:
    """Remove a file or a directory tree at ``path``; absent is fine."""
    fs = backend.fs
    full = backend._full_path(path)
    if fs.isdir(full):
        fs.rm(full, recursive=True)
    elif fs.exists(full):
        fs.rm(full)
