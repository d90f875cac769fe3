"""The codec-side staged-write protocol and how a field's participant is found.

A codec takes part in staged insert by implementing three methods, each given
the :class:`StagedField` being written::

    staged_handle(field, *, mode, file_mode="wb") -> FSMap | file   # mode "store" or "open"
    finalize_staged(field) -> dict      # the column value to insert
    cleanup_staged(field) -> None       # remove what was staged

either directly or by inheriting a lifecycle mixin
(:class:`dj_staged.SchemaAddressedStaging`, :class:`dj_staged.HashAddressedStaging`).
Whatever the codec writes, it leases first with ``field.lease(path)``: the
collector never deletes a leased path, and it knows of no other.

This is version :data:`PROTOCOL_VERSION` (2) of the protocol. Version 1, before
dj-staged 0.1.0, passed the session and the field's name instead of a
``StagedField``: ``staged_handle(session, field, ext, *, mode, file_mode)``,
``finalize_staged(session, field)``, ``cleanup_staged(session, field)``. An
adapter can check ``dj_staged.PROTOCOL_VERSION`` at import; the conformance
kit fails an adapter of the old shape with a message that says what to change.

A participant may set ``resolves_empty_store_name = True`` when its codec's
own ``insert1`` takes ``<codec@>`` (no store name) as ``stores.default``;
otherwise a staged insert refuses ``<codec@>``, as DataJoint 2.3.5's
``insert1`` does for its codecs (``Storage '' is requested but not configured``).

DataJoint's built-in codec classes cannot be edited, so this package registers
*adapters* for them: objects implementing the same three methods on the
codec's behalf, looked up by the codec's exact class (a subclass may change
``encode``, so it does not inherit its parent's adapter), or by
``"package:ClassName"`` for a class that need not be imported to be named.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import fsspec
from fsspec.callbacks import DEFAULT_CALLBACK, Callback

from .durability import SyncPlan
from .errors import codec_label
from .stores.base import StagedStore
from .stores.journal import WriteJournal
from .stores.sealed import HandleSeal, sealed_map

if TYPE_CHECKING:
    from .leases import LeaseKeeper

HandleMode = Literal["store", "open"]

#: The version of this protocol: 2, one :class:`StagedField` per call (1: the session, the field's name, the extension).
PROTOCOL_VERSION = 2

PROTOCOL_METHODS = ("staged_handle", "finalize_staged", "cleanup_staged")


@dataclass(eq=False)
class StagedField:
    """One field of one staged row, as handed to the field's participant."""

    name: str
    codec: Any
    participant: Any
    table: Any
    store: StagedStore
    ext: str | None
    primary_key: dict[str, Any]
    leases: LeaseKeeper
    sync: SyncPlan = field(default_factory=SyncPlan)
    progress: Callable[[str, int | None], Callback] | None = None
    size: int | None = None
    filename: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    state: Any = None
    handles: list[Any] = field(default_factory=list)
    reclaims: list[str] = field(default_factory=list)
    seals: list[HandleSeal] = field(default_factory=list)
    ext_given: str | None = None  # the extension as the caller wrote it ("bin"), which DataJoint's value records

    @property
    def store_name(self) -> str:
        """The resolved store's name (``<codec@>`` means ``stores.default``: the name it pointed to)."""
        return self.store.name

    @property
    def spec(self) -> dict[str, Any]:
        """The store's settings (``schema_prefix``, ``hash_prefix``, ``subfolding``, ...)."""
        return self.store.spec

    @property
    def backend(self) -> Any:
        """DataJoint's ``StorageBackend`` of the store, as a codec's own ``encode``/``decode`` use it."""
        return self.store.backend

    @property
    def durable(self) -> bool:
        """Whether what this field writes must be on disk before the commit (``DJ_STAGED_DURABLE``)."""
        return self.sync.enabled

    @property
    def fsyncs(self) -> bool:
        """Whether this field's files are fsynced before the commit: durable, on a store of local files."""
        return self.sync.enabled and self.store.durable_local_files

    @property
    def schema(self) -> str:
        """The table's schema (its database name)."""
        return self.table.database

    @property
    def table_name(self) -> str:
        """The table's name as DataJoint stores it (``insert1`` builds paths with it)."""
        return self.table.table_name

    @property
    def label(self) -> str:
        """``Field 'name' (<codec>)``, for messages."""
        return f"Field '{self.name}' ({codec_label(self.codec)})"

    def full_path(self, path: str) -> str:
        """The filesystem path of a store-relative ``path`` (for ``backend.fs`` calls)."""
        return self.store.full_path(path)

    def lease(self, *paths: str, fresh: bool = False) -> None:
        """Protect ``paths`` from the collector until the row is committed (or the write is abandoned).

        Call it before writing a path, and before referencing an object that
        already exists. ``fresh=True`` (optional, faster) says the paths do not
        exist yet and no other writer creates them (they carry a random token);
        leave it False for anything that may exist, such as a content-addressed
        path. Raises if the lease cannot be recorded, so nothing is written
        unprotected.
        """
        self.leases.lease(self.store, paths, field=self.name, key=self.primary_key, fresh=fresh)

    def is_leased(self, path: str) -> bool:
        """Whether this writer leased ``path`` in the field's store."""
        return self.leases.covers(self.store_name, path)

    def store_map(self, path: str, journal: WriteJournal | None = None) -> fsspec.FSMap:
        """A write handle on the directory ``path`` (store-relative, leased first) for ``store()``: an
        ``FSMap`` whose filesystem refuses every write once the block has ended, in this process and in
        copies pickled to others (Dask workers); on a local store it records into ``journal``."""
        mapping, seal = sealed_map(self, path, journal)
        self.seals.append(seal)
        return mapping

    def seal(self) -> None:
        """The block has ended: every ``store_map`` handle of this field refuses writes from now on."""
        for seal in self.seals:
            seal.seal()

    def reclaim(self, path: str) -> None:
        """Remove ``path``, a canonical object this field created, unless another row or writer uses it."""
        self.reclaims.append(path)

    def callback(self, description: str, total: int | None) -> Callback:
        """A progress callback for a long wait that runs none of the caller's code (re-read, copy)."""
        if self.progress is None:
            return DEFAULT_CALLBACK
        return self.progress(description, total)


@runtime_checkable
class StagedCodec(Protocol):
    """What the session calls for each field written through ``store()``/``open()``."""

    def staged_handle(self, field: StagedField, *, mode: HandleMode, file_mode: str = "wb") -> Any:
        """Return a write handle (``mode="store"``: ``fsspec.FSMap``; ``mode="open"``: file object)."""

    def finalize_staged(self, field: StagedField) -> dict[str, Any]:
        """Check what was written and return the column value ``insert1`` would have stored."""

    def cleanup_staged(self, field: StagedField) -> None:
        """Remove what this field staged; never an object another row may reference."""


_adapters: dict[type | str, StagedCodec] = {}


def class_name(codec_class: type) -> str:
    """``"package:ClassName"``: the top-level package of the class's module and its qualified name."""
    return f"{codec_class.__module__.split('.', 1)[0]}:{codec_class.__qualname__}"


def register_adapter(codec_class: type | str, adapter: StagedCodec) -> None:
    """Let ``adapter`` speak the protocol for codecs of exactly ``codec_class`` (a class or ``"package:Name"``)."""
    _adapters[codec_class] = adapter


def participant_for(codec: Any) -> StagedCodec | None:
    """The object implementing the protocol for ``codec``, or None if it does not take part."""
    if all(callable(getattr(codec, name, None)) for name in PROTOCOL_METHODS):
        return codec
    import dj_staged.codecs  # noqa: F401  (registers the adapters of DataJoint's built-in codecs on first use)

    found = _adapters.get(type(codec))
    return found if found is not None else _adapters.get(class_name(type(codec)))
