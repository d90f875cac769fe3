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

The optional parts of the contract are declared, with their defaults, on
:class:`StagedParticipant`, which the lifecycle mixins and every adapter
inherit (zarr-python's ``abc/store.py`` declares ``supports_writes`` and its
kin the same way): which of ``store()``/``open()`` a codec serves, whether its
value takes a filename, whether its codec's own ``insert1`` takes ``<codec@>``
(no store name) as ``stores.default`` (else a staged insert refuses ``<codec@>``,
as DataJoint 2.3.5's ``insert1`` does for its codecs), whether finalizing
it costs little, and whether the writer chooses the value's path (``path=``).
A codec that implements the three methods without inheriting it is wrapped
once, its declarations read then.

DataJoint's built-in codec classes cannot be edited, so *adapters* speak the
protocol on their behalf: looked up by the codec's exact class (a subclass may
change ``encode``, so it does not inherit its parent's adapter), or by
``"package:ClassName"`` for a class that need not be imported to be named.
This module knows none of them: packages register theirs in the entry point
group ``dj_staged.adapters`` (a mapping of class or name to adapter; dj-staged's
own are ``dj_staged.codecs:BUILT_IN``), loaded on first use as DataJoint loads
``datajoint.codecs``, or at run time with :func:`register_adapter`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar, cast, runtime_checkable

import fsspec
from fsspec.callbacks import DEFAULT_CALLBACK, Callback

from .durability import SyncPlan
from .errors import ProtocolViolationError, codec_label
from .stores.base import StagedStore
from .stores.journal import WriteJournal
from .stores.sealed import HandleSeal, sealed_map

if TYPE_CHECKING:
    import numpy as np
    from _typeshed import ReadableBuffer

    from ._datajoint import Codec, StorageBackend, Table
    from .leases import LeaseKeeper
    from .leases.takeover import ResumePoint

HandleMode = Literal["store", "open"]

#: The version of this protocol: 2, one :class:`StagedField` per call (1: the session, the field's name, the extension).
PROTOCOL_VERSION = 2

PROTOCOL_METHODS = ("staged_handle", "finalize_staged", "cleanup_staged")
ENTRY_POINT_GROUP = "dj_staged.adapters"

State = TypeVar("State", bound="StagingState")


class StagingState:
    """What a participant keeps for one field from its first handle to its cleanup; subclass it.

    A batch keeps its finished rows' states until it commits: :meth:`compact`
    drops what only finalization needed. :meth:`close` runs when the block ends.
    """

    def compact(self) -> None:
        """Forget what finalization needed and cleanup does not (buffers, handles); nothing by default."""

    def close(self) -> None:
        """The block has ended: release what the state still holds (threads, files); nothing by default."""


@dataclass
class HandleOptions:
    """What the writer declared about a field's content before its handle opened (``open_blob_array``,
    ``create_zarr_array``), for the participant to check and record."""

    shape: tuple[int, ...] | None = None
    dtype: np.dtype[Any] | None = None
    created_dtype: str | None = None  # the dtype an array was created with, as its store records it


@runtime_checkable
class Abortable(Protocol):
    """A write handle that can be abandoned without completing its object (an upload in parts)."""

    def abort(self) -> None: ...


class ThreadOwner(Protocol):
    """A write handle with threads of its own (hashing, write-back) that must end with the block."""

    def stop_threads(self) -> None: ...


class FileHandle(Protocol):
    """What ``staged_handle`` returns for ``open()`` (dj-staged's own: ``StagedFile``): the caller writes to it, the
    block closes it at finalization, or abandons it on unwinding when it can (:class:`Abortable`)."""

    @property
    def closed(self) -> bool: ...

    def write(self, data: ReadableBuffer, /) -> int: ...

    def tell(self) -> int: ...

    def close(self) -> None: ...


@dataclass(eq=False)
class StagedField:
    """One field of one staged row, as handed to the field's participant."""

    name: str
    codec: Codec
    participant: StagedParticipant
    table: Table
    store: StagedStore
    ext: str | None
    primary_key: dict[str, Any]
    leases: LeaseKeeper
    sync: SyncPlan = field(default_factory=SyncPlan)
    progress: Callable[[str, int | None], Callback] | None = None
    size: int | None = None
    filename: str | None = None
    options: HandleOptions = field(default_factory=HandleOptions)
    state: object = None  # the participant's own, best a StagingState (compacted and closed with the block)
    handles: list[FileHandle] = field(default_factory=list)
    reclaims: list[str] = field(default_factory=list)
    seals: list[HandleSeal] = field(default_factory=list)
    ext_given: str | None = None  # the extension as the caller wrote it ("bin"), which DataJoint's value records
    target: str | None = None  # the path the writer chose (``path=``), for a participant that takes one
    overwrite: bool = False  # the writer may replace what is at ``target`` (``overwrite=True``)
    resumable: bool = False  # ``resume=True``: write so that a later attempt can go on from the durable prefix
    resume: ResumePoint | None = None  # what an earlier attempt of this field left, taken over (resumable only)

    @property
    def store_name(self) -> str:
        """The resolved store's name (``<codec@>`` means ``stores.default``: the name it pointed to)."""
        return self.store.name

    @property
    def spec(self) -> dict[str, Any]:
        """The store's settings (``schema_prefix``, ``hash_prefix``, ``subfolding``, ...)."""
        return self.store.spec

    @property
    def backend(self) -> StorageBackend:
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
        return cast(str, self.table.database)

    @property
    def table_name(self) -> str:
        """The table's name as DataJoint stores it (``insert1`` builds paths with it)."""
        return cast(str, self.table.table_name)

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

    def claim(self, path: str) -> None:
        """Make this writer the only one that writes ``path``, a path it chose, until its block ends; raises
        :class:`~dj_staged.errors.PathTakenError` if another writer (or another row of this one) has it."""
        self.leases.claim(self.store, path, field=self.name)

    def lease_placement(self, path: str, mark: str) -> None:
        """Lease ``path``, a path the writer chose, before placing there what carries ``mark``: a collector then
        keeps it while the write is live, and reclaims it after only if it still carries ``mark``."""
        self.leases.lease(self.store, [path], field=self.name, key=self.primary_key, marks={path: mark})

    def checkpoint(self, doc: dict[str, Any], *, part: bool = False) -> None:
        """Record a checkpoint of this resumable field in its lease: ``doc`` replaces the last one, or (``part``:
        a ``store()`` directory's files) is added beside the earlier ones."""
        self.leases.checkpoint(self.store, self.name, doc, part=part)

    def is_leased(self, path: str) -> bool:
        """Whether this writer leased ``path`` in the field's store."""
        return self.leases.covers(self.store_name, path)

    def state_as(self, cls: type[State]) -> State:
        """The field's state, which must be a ``cls`` (the participant's own); else :class:`ProtocolViolationError`."""
        if not isinstance(self.state, cls):
            raise ProtocolViolationError(
                f"{self.label} has no {cls.__name__} (it has {type(self.state).__name__}): its participant "
                f"{type(self.participant).__name__} finalized or cleaned up a field it did not open",
                field=self.name,
            )
        return self.state

    def store_map(self, path: str, journal: WriteJournal | None = None, listener: Any = None) -> fsspec.FSMap:
        """A write handle on the directory ``path`` (store-relative, leased first) for ``store()``: an
        ``FSMap`` whose filesystem refuses every write once the block has ended, in this process and in
        copies pickled to others (Dask workers); on a local store it records into ``journal``; a resumable
        handle's ``listener`` records checkpoints (the map's ``durable`` keys are its)."""
        mapping, seal = sealed_map(self, path, journal, listener)
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
    """The three methods the session calls for each field written through ``store()``/``open()``."""

    def staged_handle(
        self, field: StagedField, *, mode: HandleMode, file_mode: str = "wb"
    ) -> fsspec.FSMap | FileHandle:
        """Return a write handle (``mode="store"``: ``fsspec.FSMap``; ``mode="open"``: file object)."""

    def finalize_staged(self, field: StagedField) -> dict[str, Any]:
        """Check what was written and return the column value ``insert1`` would have stored."""

    def cleanup_staged(self, field: StagedField) -> None:
        """Remove what this field staged; never an object another row may reference."""


class StagedParticipant:
    """What a codec (or its adapter) speaks: the three methods, and the optional parts, declared with defaults."""

    #: which of ``store()`` (a directory value) and ``open()`` (a file) the codec serves
    staged_modes: ClassVar[tuple[HandleMode, ...]] = ("store", "open")
    #: the value carries a filename, given with ``staged.set_filename`` (``<attach@>``)
    accepts_filename: ClassVar[bool] = False
    #: the codec's own ``insert1`` takes ``<codec@>`` (no store name) as ``stores.default``
    resolves_empty_store_name: ClassVar[bool] = False
    #: finalizing costs little (no hashing, no copy): a single row is then checked by its ``INSERT`` alone
    finalizes_cheaply: ClassVar[bool] = False
    #: the value is a path the writer chooses, given with ``path=`` (``<filepath@>``); else ``path=`` is refused
    writer_chooses_path: ClassVar[bool] = False
    #: a write interrupted without an error goes on from its durable prefix in a later block (``resume=True``)
    supports_resume: ClassVar[bool] = False

    def staged_handle(
        self, field: StagedField, *, mode: HandleMode, file_mode: str = "wb"
    ) -> fsspec.FSMap | FileHandle:
        """Return a write handle (``mode="store"``: ``fsspec.FSMap``; ``mode="open"``: file object)."""
        raise NotImplementedError

    def finalize_staged(self, field: StagedField) -> dict[str, Any]:
        """Check what was written and return the column value ``insert1`` would have stored."""
        raise NotImplementedError

    def cleanup_staged(self, field: StagedField) -> None:
        """Remove what this field staged; never an object another row may reference."""
        raise NotImplementedError


DECLARATIONS = (
    "staged_modes",
    "accepts_filename",
    "resolves_empty_store_name",
    "finalizes_cheaply",
    "writer_chooses_path",
    "supports_resume",
)


class _Declaring(StagedParticipant):
    """A codec that speaks the protocol without inheriting :class:`StagedParticipant`: its three methods, and the
    optional parts it declares as class attributes, read here once."""

    def __init__(self, codec: StagedCodec) -> None:
        self.codec = codec
        for name in DECLARATIONS:
            setattr(self, name, getattr(codec, name, getattr(StagedParticipant, name)))

    def staged_handle(
        self, field: StagedField, *, mode: HandleMode, file_mode: str = "wb"
    ) -> fsspec.FSMap | FileHandle:
        return self.codec.staged_handle(field, mode=mode, file_mode=file_mode)

    def finalize_staged(self, field: StagedField) -> dict[str, Any]:
        return dict(self.codec.finalize_staged(field))

    def cleanup_staged(self, field: StagedField) -> None:
        self.codec.cleanup_staged(field)


_registered: dict[type | str, StagedParticipant] = {}  # by register_adapter: they win over the entry points'
_discovered: dict[type | str, StagedParticipant] | None = None
_declaring: dict[int, tuple[Codec, _Declaring]] = {}
_lock = threading.Lock()


def speaker_of(participant: StagedParticipant) -> object:
    """The object whose methods speak for ``participant``: the codec or adapter a wrapper declares for, or itself."""
    return participant.codec if isinstance(participant, _Declaring) else participant


def class_name(codec_class: type) -> str:
    """``"package:ClassName"``: the top-level package of the class's module and its qualified name."""
    return f"{codec_class.__module__.split('.', 1)[0]}:{codec_class.__qualname__}"


def register_adapter(codec_class: type | str, adapter: StagedParticipant | StagedCodec) -> None:
    """Let ``adapter`` speak the protocol for codecs of exactly ``codec_class`` (a class or ``"package:Name"``)."""
    _registered[codec_class] = adapter if isinstance(adapter, StagedParticipant) else _Declaring(adapter)


def _adapters() -> dict[type | str, StagedParticipant]:
    """The adapters of the entry point group ``dj_staged.adapters``, loaded once."""
    global _discovered
    with _lock:
        if _discovered is None:
            found: dict[type | str, StagedParticipant] = {}
            for point in entry_points(group=ENTRY_POINT_GROUP):
                mapping: Mapping[type | str, StagedParticipant] = point.load()
                found.update(mapping)
            _discovered = found
        return _discovered


def participant_for(codec: Codec) -> StagedParticipant | None:
    """The participant that speaks the protocol for ``codec``, or None if it does not take part."""
    if isinstance(codec, StagedParticipant):
        return codec
    if all(callable(getattr(codec, name, None)) for name in PROTOCOL_METHODS):
        with _lock:
            known = _declaring.get(id(codec))
            if known is None or known[0] is not codec:
                known = _declaring[id(codec)] = (codec, _Declaring(codec))
        return known[1]
    for table in (_registered, _adapters()):
        found = table.get(type(codec)) or table.get(class_name(type(codec)))
        if found is not None:
            return found
    return None
