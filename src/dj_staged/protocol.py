"""The codec-side staged-write protocol and how a field's participant is found.

A codec takes part in staged insert by implementing three methods::

    staged_handle(session, field, ext, *, mode, file_mode="wb") -> FSMap | file
    finalize_staged(session, field) -> dict      # the column value to insert
    cleanup_staged(session, field) -> None       # remove what was staged

either directly or by inheriting a lifecycle mixin
(:class:`dj_staged.SchemaAddressedStaging`, :class:`dj_staged.HashAddressedStaging`).
DataJoint's built-in codec classes cannot be edited, so this package registers
*adapters* for them: objects implementing the same three methods on the
codec's behalf, looked up by the codec's exact class (a subclass may change
``encode``, so it does not inherit its parent's adapter).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

PROTOCOL_METHODS = ("staged_handle", "finalize_staged", "cleanup_staged")

HANDLE_MODES = ("store", "open")


@runtime_checkable
class StagedCodec(Protocol):
    """What the session calls for each field written through ``store()``/``open()``."""

    def staged_handle(self, session: Any, field: str, ext: str | None, *, mode: str, file_mode: str = "wb") -> Any:
        """Return a write handle (``mode="store"``: ``fsspec.FSMap``; ``mode="open"``: file object)."""

    def finalize_staged(self, session: Any, field: str) -> dict:
        """Inspect what was written and return the column value ``insert1`` would have stored."""

    def cleanup_staged(self, session: Any, field: str) -> None:
        """Remove what this field staged; never an object another row may reference."""


_adapters: dict[type, StagedCodec] = {}


def register_adapter(codec_class: type, adapter: StagedCodec) -> None:
    """Let ``adapter`` speak the protocol for codecs of exactly ``codec_class``."""
    _adapters[codec_class] = adapter


def participant_for(codec: Any) -> StagedCodec | None:
    """The object implementing the protocol for ``codec``, or None if it does not take part."""
    if all(callable(getattr(codec, name, None)) for name in PROTOCOL_METHODS):
        return codec
    return _adapters.get(type(codec))
