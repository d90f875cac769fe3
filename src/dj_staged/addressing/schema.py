"""Schema-addressed lifecycle: write at the canonical path from the first byte.

The path is the one ordinary ``insert1`` builds for the row
(``datajoint.storage.build_object_path`` with the store's ``schema_prefix``,
``partition_pattern`` and ``token_length`` and the table's ``table_name``); it is
leased before the handle is returned. Finalization checks that what is at the
path is what the handles wrote (fencing), makes it durable on a local store,
and builds the ``<object@>``-shaped metadata, which a codec refines in
:meth:`SchemaAddressedStaging._enrich_staged_metadata`; cleanup deletes the
file or directory.

Example (a custom codec)::

    class TiffStackCodec(SchemaAddressedStaging, SchemaCodec):
        name = "tiffstack"
        staged_modes = ("store",)

        def _enrich_staged_metadata(self, base, field):
            return {"path": base["path"], "store": base["store"], "n_pages": base["item_count"]}
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from .. import steps
from .._datajoint import build_object_path
from ..errors import HandleModeError, IncompleteObjectError, nothing_written
from ..protocol import StagedField, StagedParticipant, StagingState
from ..stores.journal import WriteJournal
from .directories import DirectoryCheckpoints, resume_directory
from .handles import StagedFile
from .paths import check_relative_path
from .resumption import Resumption, open_resumed

if TYPE_CHECKING:
    import fsspec

_FILE_MODES = ("wb", "w", "xb", "x", "ab", "a", "w+b", "wb+", "r+b", "rb+")


def check_mode(participant: StagedParticipant, field: StagedField, mode: str) -> None:
    """Raise unless the participant serves ``mode`` (``"store"`` or ``"open"``)."""
    if mode not in participant.staged_modes:
        hint = {
            "store": f"use staged.open('{field.name}', ext): its value is a single file",
            "open": f"use staged.store('{field.name}', ext): its value is a directory",
        }[mode]
        raise HandleModeError(f"{field.label} does not support staged.{mode}(); {hint}", field=field.name)


@dataclass
class SchemaAddressedState(StagingState):
    """What the schema-addressed lifecycle keeps for one field."""

    path: str
    files: list[StagedFile] = field(default_factory=list)
    journal: WriteJournal | None = None
    truncating: bool = False  # the last open() started the file empty
    checkpoints: DirectoryCheckpoints | None = None  # a resumable store() handle's

    def compact(self) -> None:
        """Forget the handles (their buffers) once the field is finished: cleanup needs only the path."""
        self.files = []
        self.journal = None

    def head(self) -> bytes | None:
        """The file's first bytes as the last handle wrote them, when that handle wrote it from empty, in order."""
        if not self.files or not self.truncating or self.journal is not None:
            return None
        return self.files[-1].head


def schema_state(field: StagedField) -> SchemaAddressedState:
    """The field's schema-addressed state (set by its first handle)."""
    return field.state_as(SchemaAddressedState)


class SchemaAddressedStaging(StagedParticipant):
    """Lifecycle mixin for codecs whose objects live at a path derived from the row."""

    finalizes_cheaply: ClassVar[bool] = True  # nothing to hash or copy: a single row's INSERT checks it
    supports_resume: ClassVar[bool] = True
    #: ``store()`` with ``resume=True``: a directory resumed key by key (:mod:`~dj_staged.addressing.directories`);
    #: a codec whose directory cannot be resumed so sets it False (``store()`` with ``resume=True`` is then refused)
    resumes_directories: ClassVar[bool] = True

    def staged_handle(self, field: StagedField, *, mode: str, file_mode: str = "wb") -> fsspec.FSMap | StagedFile:
        """A handle at the canonical path; a second call for the field reuses the same path."""
        check_mode(self, field, mode)
        if field.resumable:
            return self._resumable_handle(field, mode, file_mode)
        if field.state is None:
            field.state = SchemaAddressedState(self._claim_path(field))
        state = schema_state(field)
        if mode == "store":
            if state.journal is None:
                state.journal = WriteJournal()
            return field.store_map(state.path, state.journal)
        if file_mode not in _FILE_MODES:
            raise HandleModeError(
                f"Field '{field.name}': staged.open() writes; mode {file_mode!r} is not a write mode", field=field.name
            )
        store = field.store  # its filesystem creates parents
        raw = store.open_write(state.path) if file_mode == "wb" else store.open(state.path, file_mode)
        handle = StagedFile(raw, store, writeback=field.fsyncs)
        if field.fsyncs:
            field.sync.file(field.full_path(state.path))
        state.files.append(handle)
        state.truncating = "w" in file_mode or "x" in file_mode
        return handle

    def _resumable_handle(self, field: StagedField, mode: str, file_mode: str) -> Any:
        """``resume=True``: a handle that records checkpoints, going on from what an earlier attempt left."""
        if mode == "store" and not self.resumes_directories:
            raise HandleModeError(
                f"{field.label}: resume=True resumes what is written through open(); a store() directory cannot be "
                "resumed yet, so stage it without resume=True",
                field=field.name,
            )
        point = field.resume
        kind = "directory" if mode == "store" else "file"
        if field.state is None:
            earlier = point.path if point is not None and _kind(point) == kind else None
            field.state = SchemaAddressedState(earlier or self._claim_path(field))
            if point is not None:
                for path in point.leftovers():  # an earlier attempt's other objects: markers, another kind's path
                    field.store.remove(path)
        state = schema_state(field)
        if mode == "store":
            if state.checkpoints is None:
                state.journal = WriteJournal()
                docs = point.key_checkpoints if point is not None else []
                state.checkpoints = resume_directory(field, state.path, docs)
            return field.store_map(state.path, state.journal, state.checkpoints)
        if file_mode != "wb" or state.files:
            raise HandleModeError(
                f"{field.label}: a resumable write (resume=True) opens its file once, with mode 'wb'",
                field=field.name,
            )
        checkpoint = point.store_checkpoint if point is not None and point.path == state.path else None
        resumption = Resumption(field, {"kind": "file", "path": state.path})
        raw, _resumed = open_resumed(field, state.path, resumption, checkpoint)
        handle = StagedFile(raw, field.store, resumption=resumption)
        if field.fsyncs:
            field.sync.file(field.full_path(state.path))
        state.files.append(handle)
        state.truncating = not handle.resumed
        return handle

    def _claim_path(self, field: StagedField) -> str:
        path, _token = build_object_path(
            schema=field.schema,
            table=field.table_name,
            field=field.name,
            primary_key=field.primary_key,
            ext=field.ext,
            partition_pattern=field.spec.get("partition_pattern"),
            token_length=field.spec.get("token_length", 8),
            schema_prefix=field.spec["schema_prefix"],
        )
        path = check_relative_path(field.name, path)
        field.lease(path, fresh=True)  # a random token: a new path nobody else writes
        return path

    def finalize_staged(self, field: StagedField) -> dict[str, Any]:
        """Check what was written, make it durable, then let the codec refine the metadata."""
        base = inspect_written(field)
        return self._enrich_staged_metadata(base, field)

    def _enrich_staged_metadata(self, base: dict[str, Any], field: StagedField) -> dict[str, Any]:
        """Codec hook: turn the ``<object@>``-shaped ``base`` into this codec's column value."""
        return base

    def cleanup_staged(self, field: StagedField) -> None:
        """Delete the file or directory at the canonical path, if anything is there."""
        if field.state is not None:
            state = schema_state(field)
            for handle in state.files:
                if handle.resumable:  # stopped, not discarded: its upload (parts, session, blocks) goes now
                    handle.abort()
            field.store.remove(state.path)


def _kind(point: Any) -> str | None:
    """Whether an earlier attempt's checkpoints are of a ``file`` or a ``directory``."""
    if point.checkpoint is not None:
        return str(point.checkpoint.get("kind"))
    return "directory" if point.key_checkpoints else None


def _changed(field: StagedField, what: str) -> IncompleteObjectError:
    return IncompleteObjectError(
        f"{field.label}: {what} since it was written through its handle, so the row would not reference what was "
        "written; nothing was inserted",
        field=field.name,
    )


def inspect_written(field: StagedField) -> dict[str, Any]:
    """``{path, store, size, ext, is_dir, item_count, timestamp}`` for what is at the field's path, checked.

    The shape is ``ObjectCodec.encode``'s. A file must be the one the last
    handle closed (its size, and where the store tells one, its inode or
    version; an empty file is an empty value); a directory must be non-empty,
    and every file written through its handle in this process must still be
    there with the size it was written with. Everything is asked of the store
    now, never of a cached listing.
    """
    state = schema_state(field)
    store = field.store
    full = field.full_path(state.path)
    info = store.info(state.path)
    written = [handle.record for handle in state.files if handle.record is not None]
    is_dir = info is not None and info["type"] == "directory"
    missing = state.journal.missing() if state.journal is not None else []
    if missing:
        shown = ", ".join(path[len(full) + 1 :] or path for path in missing[:5])
        raise _changed(field, f"{len(missing)} of the files written through store() are gone or changed ({shown})")
    if info is None:
        if written:
            raise _changed(field, "the file was removed")
        raise nothing_written(field.name, field.codec)
    files = store.directory_files(state.path) if is_dir else {}  # listed once: it costs per file
    if is_dir and not files:
        raise nothing_written(field.name, field.codec)
    if not is_dir and written and not written[-1].matches(store.identity_from(info)):
        raise _changed(
            field, f"the file was replaced or changed ({written[-1].size} bytes written, {info['size']} found)"
        )
    if field.fsyncs:
        root = field.full_path("")
        if is_dir:
            field.sync.tree(full, list(files), root)
        else:
            field.sync.directories(os.path.dirname(full), root)
    steps.reach("writer.verify", field=field.name, path=state.path)
    if is_dir:
        size = sum(entry.get("size") or 0 for entry in files.values())
        item_count = len(files)
    else:
        size, item_count = info["size"], None
    return {
        "path": state.path,
        "store": field.store_name,
        "size": size,
        "ext": field.ext_given,  # as given, as DataJoint's insert1 records it ("bin" or ".bin")
        "is_dir": is_dir,
        "item_count": item_count,
        "timestamp": datetime.now(UTC).isoformat(),
    }
