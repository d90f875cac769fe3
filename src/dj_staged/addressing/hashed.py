"""Hash-addressed lifecycle: stage under ``_staging/``, hash, promote to ``_hash/`` (or dedup).

The handle points at ``_staging/{schema}/{table}/{field}_{token}{ext}``: the
canonical path depends on the content and is not known yet. The stored bytes
are a codec *prefix* followed by the caller's content (``<hash@>``: no prefix;
``<attach@>``: ``filename\\0``; ``<blob@>``: the blob header). Finalization:

1. makes the staging object hold exactly the stored bytes. A prefix known when
   the handle is opened is written first; one whose length is known but value
   is not (a bytes blob's length) is written as a placeholder and patched in
   place on a local store; otherwise the content is framed into a second
   staging object (:func:`~dj_staged.addressing.promote.compose_prefixed`);
2. takes the MD5 computed during the caller's writes when they were sequential
   and started with the prefix, or re-reads the object once, streaming;
3. promotes it to DataJoint's canonical path (``build_hash_path`` with the
   store's ``hash_prefix`` and ``subfolding``), or drops it when that content
   already exists (dedup; also when it appears concurrently);
4. returns ``{hash, path, schema, store, size}``, what ``<hash@>`` stores.

Cleanup removes staging objects only, never a canonical one.

Example (a custom codec storing raw bytes with a magic prefix)::

    class FramedCodec(HashAddressedStaging, dj.Codec):
        name = "framed"

        def get_dtype(self, is_store):
            return "<hash>"

        def _stored_prefix(self, session, field, content_size):
            return b"FRM1"
"""

from __future__ import annotations

from typing import Any

from datajoint.errors import DataJointError
from datajoint.hash_registry import build_hash_path
from datajoint.storage import generate_token

from .hashing import HashingWriter, encode_digest, rehash
from .paths import check_relative_path
from .promote import compose_prefixed, promote
from .schema import check_mode, codec_label

STAGING_PREFIX = "_staging"

PREFIXED, PLACEHOLDER, CONTENT = "prefixed", "placeholder", "content"


def staging_path(session: Any, field: str, ext: str | None, token_length: int) -> str:
    """``_staging/{schema}/{table}/{field}_{token}{ext}`` for a new staged object."""
    token = generate_token(token_length)
    path = f"{STAGING_PREFIX}/{session.table.database}/{session.table.table_name}/{field}_{token}{ext or ''}"
    return check_relative_path(field, path)


class HashAddressedStaging:
    """Lifecycle mixin for codecs whose stored bytes end in ``<hash@>`` (content-addressed, deduplicated)."""

    staged_modes: tuple[str, ...] = ("open",)

    def _stored_prefix(self, session: Any, field: str, content_size: int | None) -> bytes | None:
        """Codec hook: bytes stored before the caller's content.

        Called with ``content_size=None`` when the handle is opened (return None
        if the prefix is not known yet) and with the content's size at
        finalization (must return the prefix then).
        """
        return b""

    def _prefix_length(self, session: Any, field: str) -> int | None:
        """Codec hook: the prefix's length when it is fixed before its value is known."""
        return None

    def _check_content(self, session: Any, field: str, content_size: int) -> None:
        """Codec hook: raise ``DataJointError`` if the content would not decode on fetch."""

    def staged_handle(self, session: Any, field: str, ext: str | None, *, mode: str, file_mode: str = "wb") -> Any:
        """A hashing write handle on a fresh staging object."""
        check_mode(self, session, field, mode)
        if file_mode != "wb":
            raise DataJointError(
                f"Field '{field}' ({codec_label(session.slot(field).codec)}) is written as one byte sequence: "
                f"open it with mode 'wb', not {file_mode!r}"
            )
        slot = session.slot(field)
        if "writer" in slot.state:
            raise DataJointError(
                f"Field '{field}' ({codec_label(slot.codec)}) already has an open staged handle; a hash-addressed "
                "value is one byte sequence written through one handle"
            )
        path = staging_path(session, field, slot.ext, slot.spec.get("token_length", 8))
        slot.state["staging_path"] = path
        prefix = self._stored_prefix(session, field, None)
        layout = PREFIXED
        if prefix is None:
            length = self._prefix_length(session, field)
            if length is not None and slot.backend.protocol == "file":
                prefix, layout = bytes(length), PLACEHOLDER
            else:
                prefix, layout = b"", CONTENT
        writer = HashingWriter(slot.backend.open(path, "wb"), prefix, hashing=layout == PREFIXED)
        slot.state.update(writer=writer, layout=layout, written_prefix=prefix)
        return writer

    def finalize_staged(self, session: Any, field: str) -> dict:
        """Hash the stored bytes, promote them to the canonical path, return ``<hash@>``'s column value."""
        slot = session.slot(field)
        state = slot.state
        backend = slot.backend
        staged = state["staging_path"]
        written = backend.fs.size(backend._full_path(staged))
        content_size = written - len(state["written_prefix"])
        self._check_content(session, field, content_size)
        prefix = self._stored_prefix(session, field, content_size)
        if prefix is None:
            raise DataJointError(f"Field '{field}' ({codec_label(slot.codec)}) cannot frame its content")
        candidate, md5 = staged, None
        if state["layout"] == PREFIXED and prefix == state["written_prefix"]:
            if state["writer"].sequential and state["writer"].hashing:
                md5 = state["writer"].md5
        elif state["layout"] == PLACEHOLDER and len(prefix) == len(state["written_prefix"]):
            with backend.open(staged, "r+b") as patch:
                patch.write(prefix)
        else:
            candidate = staged + ".framed"
            state["framed_path"] = candidate
            compose_prefixed(backend, prefix, staged, candidate, offset=len(state["written_prefix"]))
            backend.remove(staged)
        size = len(prefix) + content_size
        if md5 is None:
            md5 = rehash(backend, candidate, size=size)
        content_hash = encode_digest(md5)
        subfolding = slot.spec.get("subfolding")
        canonical = build_hash_path(
            content_hash,
            session.table.database,
            tuple(subfolding) if subfolding else None,
            hash_prefix=slot.spec["hash_prefix"],
        )
        session.protect(field, canonical)  # an existing, unreferenced object must survive gc until our insert
        state["promoted"] = self._promote(backend, candidate, canonical)
        return {
            "hash": content_hash,
            "path": canonical,
            "schema": session.table.database,
            "store": slot.store_name,
            "size": size,
        }

    def _promote(self, backend: Any, staged: str, canonical: str) -> bool:
        """Move the staged object to ``canonical``; False when that content already exists (dedup)."""
        return promote(backend, staged, canonical)

    def cleanup_staged(self, session: Any, field: str) -> None:
        """Delete this field's staging objects if they are still there; canonical objects stay."""
        slot = session.slot(field)
        for key in ("staging_path", "framed_path"):
            path = slot.state.get(key)
            if path is not None and slot.backend.exists(path):
                slot.backend.remove(path)
