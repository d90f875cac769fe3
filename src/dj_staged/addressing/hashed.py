"""Hash-addressed lifecycle: stage under ``_staging/``, hash, promote to ``_hash/`` (or dedup).

The handle points at ``_staging/{schema}/{table}/{field}_{token}{ext}``: the
canonical path depends on the content and is not known yet. The stored bytes
are a codec *prefix* followed by the caller's content (``<hash@>``: no prefix;
``<attach@>``: ``filename\\0``; ``<blob@>``: the blob header). Finalization:

1. checks the staging object is the one the handle wrote, with its size;
2. makes it hold exactly the stored bytes. A prefix known when the handle is
   opened is written first; one whose length is known but value is not (a bytes
   blob's length) is written as a placeholder and patched in place on a local
   store; otherwise the content is framed into a second staging object
   (:func:`~dj_staged.addressing.promote.compose_prefixed`);
3. takes the MD5 computed while the caller wrote, when the writes were
   sequential and started with the prefix, or re-reads the object once;
4. leases the canonical path (``build_hash_path`` with the store's
   ``hash_prefix`` and ``subfolding``), then promotes the object there, or drops
   it when that content already exists (dedup; also when it appears concurrently);
5. returns ``{hash, path, schema, store, size}``, what ``<hash@>`` stores.

Cleanup removes staging objects, and a canonical object only if this field
created it and nothing else uses it (:meth:`~dj_staged.protocol.StagedField.reclaim`).

Example (a custom codec storing raw bytes with a magic prefix)::

    class FramedCodec(HashAddressedStaging, dj.Codec):
        name = "framed"

        def get_dtype(self, is_store):
            return "<hash>"

        def _stored_prefix(self, field, content_size):
            return b"FRM1"
"""

from __future__ import annotations

import base64
import contextlib
import enum
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .. import steps
from .._datajoint import build_hash_path, generate_token
from ..errors import ContentError, HandleModeError, IncompleteObjectError
from ..layout import STAGING_PREFIX
from ..protocol import HandleMode, StagedField, StagedParticipant, StagingState
from ..stores.base import StagedStore
from ..stores.resumable import Checkpoint
from .handles import StagedFile
from .hashing import CHUNK, encode_digest, rehash
from .md5state import ResumableMD5, available
from .paths import check_relative_path
from .resumption import Resumption, lost, open_resumed
from .schema import check_mode

if TYPE_CHECKING:
    from fsspec.callbacks import Callback


class Layout(enum.Enum):
    """How the stored bytes were laid out while the caller wrote (its codec prefix known or not)."""

    PREFIXED = "prefixed"  # the prefix, known at open, written first: hashed while written
    PLACEHOLDER = "placeholder"  # a placeholder of the prefix's fixed length, patched in place (local files)
    CONTENT = "content"  # the content alone, framed with the prefix into a second object at finalization


PREFIXED, PLACEHOLDER, CONTENT = Layout.PREFIXED, Layout.PLACEHOLDER, Layout.CONTENT
STAGING_TOKEN_LENGTH = 16


def staging_path(field: StagedField) -> str:
    """``_staging/{schema}/{table}/{field}_{token}{ext}`` for a new staged object."""
    token = generate_token(STAGING_TOKEN_LENGTH)
    path = f"{STAGING_PREFIX}/{field.schema}/{field.table_name}/{field.name}_{token}{field.ext or ''}"
    return check_relative_path(field.name, path)


@dataclass
class HashAddressedState(StagingState):
    """What the hash-addressed lifecycle keeps for one field."""

    staging_path: str
    handle: StagedFile | None
    layout: Layout
    written_prefix: bytes
    framed_path: str | None = None
    canonical: str | None = None
    promoted: bool | None = None

    def compact(self) -> None:
        """Forget the handle (its buffers) once the field is finished: cleanup needs only the paths."""
        self.handle = None


def _differs(earlier: dict[str, Any], now: dict[str, Any]) -> str | None:
    """Why an earlier attempt's bytes cannot be the start of this one's (another prefix), or None."""
    if earlier.get("layout") != now["layout"] or earlier.get("prefix") != now["prefix"]:
        return (
            "it stored another prefix before the content (a different size=, filename or array declared than this "
            "attempt's)"
        )
    return None


def _restored_digest(
    store: StagedStore, path: str, state: object, offset: int
) -> tuple[ResumableMD5 | None, str | None]:
    """The MD5 of the first ``offset`` stored bytes: restored from its recorded state, or, on a store of local
    files, read once; the reason it cannot be had otherwise."""
    if isinstance(state, str):
        try:
            return ResumableMD5.from_state(state), None
        except ValueError:
            pass
    if not store.durable_local_files:
        return None, "its MD5 state was not recorded in a form this machine restores, and its bytes cannot be read back"
    md5, left = ResumableMD5(), offset
    with store.open_read(path) as source:
        while left and (chunk := source.read(min(CHUNK, left))):
            md5.update(chunk)
            left -= len(chunk)
    return (md5, None) if left == 0 else (None, f"its file holds fewer than the {offset} bytes made durable")


def hash_state(field: StagedField) -> HashAddressedState:
    """The field's hash-addressed state (set by its handle)."""
    return field.state_as(HashAddressedState)


class HashAddressedStaging(StagedParticipant):
    """Lifecycle mixin for codecs whose stored bytes end in ``<hash@>`` (content-addressed, deduplicated)."""

    staged_modes: ClassVar[tuple[HandleMode, ...]] = ("open",)
    supports_resume: ClassVar[bool] = True

    def _stored_prefix(self, field: StagedField, content_size: int | None) -> bytes | None:
        """Codec hook: bytes stored before the caller's content.

        Called with ``content_size=None`` when the handle is opened (return None
        if the prefix is not known yet) and with the content's size at
        finalization (must return the prefix then).
        """
        return b""

    def _prefix_length(self, field: StagedField) -> int | None:
        """Codec hook: the prefix's length when it is fixed before its value is known."""
        return None

    def _check_content(self, field: StagedField, content_size: int) -> None:
        """Codec hook: raise ``ContentError`` if the content would not decode on fetch."""

    def staged_handle(self, field: StagedField, *, mode: str, file_mode: str = "wb") -> StagedFile:
        """A hashing write handle on a fresh, leased staging object."""
        check_mode(self, field, mode)
        if file_mode != "wb":
            raise HandleModeError(
                f"{field.label} is written as one byte sequence: open it with mode 'wb', not {file_mode!r}",
                field=field.name,
            )
        if field.state is not None:
            raise HandleModeError(
                f"{field.label} already has a staged handle; a hash-addressed value is one byte sequence written "
                "through one handle",
                field=field.name,
            )
        if field.resumable:
            return self._resumable_handle(field)
        path = staging_path(field)
        field.lease(path, fresh=True)
        store = field.store
        prefix, layout = self._layout(field)
        raw = store.open_write(path)
        try:
            handle = StagedFile(raw, store, prefix=prefix, hashing=layout == PREFIXED, writeback=field.fsyncs)
        except BaseException:
            with contextlib.suppress(Exception):  # the original error is what the caller must see
                store.discard(raw)
            with contextlib.suppress(Exception):
                store.remove(path)
            raise
        field.state = HashAddressedState(path, handle, layout, prefix)
        return handle

    def _layout(self, field: StagedField) -> tuple[bytes, Layout]:
        """The bytes stored before the content as the handle opens, and how they are laid out."""
        prefix = self._stored_prefix(field, None)
        if prefix is not None:
            return prefix, PREFIXED
        length = self._prefix_length(field)
        if length is not None and field.store.durable_local_files:  # a file can be patched in place
            return bytes(length), PLACEHOLDER
        return b"", CONTENT

    def _resumable_handle(self, field: StagedField) -> StagedFile:
        """``resume=True``: a handle on the staging object an earlier attempt left (from its last checkpoint, its
        digest state restored), or on a new one."""
        store, point = field.store, field.resume
        prefix, layout = self._layout(field)
        earlier = point.checkpoint if point is not None and point.checkpoint is not None else None
        earlier = earlier if earlier is not None and earlier.get("kind") == "hashed" else None
        path = str(earlier["path"]) if earlier is not None else staging_path(field)
        if earlier is None:
            field.lease(path, fresh=True)
        for leftover in point.leftovers() if point is not None else []:
            if leftover.startswith(STAGING_PREFIX + "/"):  # never a canonical object: another row may share it
                store.remove(leftover)
        hashing = layout == PREFIXED and available()
        base: dict[str, Any] = {
            "kind": "hashed",
            "path": path,
            "layout": layout.value,
            "prefix": base64.b64encode(prefix).decode(),
        }
        resumption = Resumption(field, base, prefix_length=len(prefix))
        checkpoint = Checkpoint.from_dict(earlier["checkpoint"]) if earlier and "checkpoint" in earlier else None
        md5 = None
        if checkpoint is not None:
            why = _differs(earlier or {}, base)
            if why is None and checkpoint.offset < len(prefix):
                why = "it made nothing durable beyond the stored prefix"
            if why is None and hashing and checkpoint.offset:
                md5, why = _restored_digest(store, path, (earlier or {}).get("digest"), checkpoint.offset)
            if why is not None:
                lost(field, path, resumption, checkpoint, why)
                checkpoint = None
        raw, resumed = open_resumed(field, path, resumption, checkpoint)
        handle = StagedFile(
            raw, store, prefix=prefix, hashing=hashing, resumption=resumption, md5=md5 if resumed else None
        )
        field.state = HashAddressedState(path, handle, layout, prefix)
        return handle

    def finalize_staged(self, field: StagedField) -> dict[str, Any]:
        """Hash the stored bytes, promote them to the canonical path, return ``<hash@>``'s column value."""
        state = hash_state(field)
        store = field.store
        staged = state.staging_path
        written = self._verify(field, state)
        content_size = written - len(state.written_prefix)
        self._check_content(field, content_size)
        prefix = self._stored_prefix(field, content_size)
        if prefix is None:
            raise ContentError(f"{field.label} cannot frame its content", field=field.name)
        candidate, md5 = staged, None
        if state.layout == PREFIXED and prefix == state.written_prefix:
            md5 = state.handle.digest() if state.handle is not None else None
        elif state.layout == PLACEHOLDER and len(prefix) == len(state.written_prefix):
            with store.open_update(staged) as patch:
                patch.write(prefix)
        else:
            candidate = staged + ".framed"
            field.lease(candidate, fresh=True)
            state.framed_path = candidate
            with field.callback("framing", content_size) as callback:
                store.compose(prefix, staged, candidate, len(state.written_prefix), callback)
            store.remove(staged)
        size = len(prefix) + content_size
        if md5 is None:
            with field.callback("hashing", size) as callback:
                md5 = rehash(store, candidate, callback=callback)
        content_hash = encode_digest(md5)
        subfolding = field.spec.get("subfolding")
        canonical = build_hash_path(
            content_hash, field.schema, tuple(subfolding) if subfolding else None, hash_prefix=field.spec["hash_prefix"]
        )
        field.lease(canonical)  # before looking: an existing, unreferenced object must survive gc until our commit
        state.canonical = canonical
        steps.reach("writer.promote", field=field.name, path=canonical)
        with field.callback("promoting", size) as callback:
            state.promoted = self._promote(field, candidate, canonical, callback)
        if field.fsyncs:  # only the canonical name reaches the commit: the staging names are gone by now
            field.sync.file(field.full_path(canonical))
            field.sync.directories(os.path.dirname(field.full_path(canonical)), field.full_path(""))
        if not state.promoted:
            steps.reach("writer.dedup", field=field.name, path=canonical)
        return {
            "hash": content_hash,
            "path": canonical,
            "schema": field.schema,
            "store": field.store_name,
            "size": size,
        }

    def _verify(self, field: StagedField, state: HashAddressedState) -> int:
        """The staging object's size, after checking it is what the handle wrote (fencing)."""
        record = state.handle.record if state.handle is not None else None
        found = field.store.identity(state.staging_path)
        if found is None:
            raise IncompleteObjectError(
                f"{field.label}: its staging object was removed after it was written; nothing was inserted",
                field=field.name,
            )
        size = found.size
        if record is not None and not record.matches(found):
            raise IncompleteObjectError(
                f"{field.label}: its staging object changed after it was written ({record.size} bytes written, "
                f"{size} found); nothing was inserted",
                field=field.name,
            )
        steps.reach("writer.verify", field=field.name, path=state.staging_path)
        return size

    def _promote(self, field: StagedField, staged: str, canonical: str, callback: Callback) -> bool:
        """Move the staged object to ``canonical``; False when that content already exists (dedup)."""
        return field.store.promote(staged, canonical, callback=callback)

    def cleanup_staged(self, field: StagedField) -> None:
        """Delete this field's staging objects; a canonical object it created is reclaimed (if unshared)."""
        if field.state is None:
            return
        state = hash_state(field)
        if state.handle is not None:
            state.handle.abort()
        for path in (state.staging_path, state.framed_path):
            if path is not None:
                field.store.remove(path)
        if state.promoted and state.canonical is not None:
            field.reclaim(state.canonical)
