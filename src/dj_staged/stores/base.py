"""What dj-staged asks of a store, declared once: :class:`StagedStore`, and the values it hands back.

One implementation per protocol (``stores/local.py``, ``s3.py``, ``gcs.py``,
``azure.py``); nothing outside ``stores/`` asks which protocol a store speaks
(a test enforces it). Capabilities are declared as class attributes, read by
whoever needs to choose (the model is zarr-python's ``abc/store.py`` with its
``supports_writes``, ``supports_deletes`` and ``supports_listing``), never
discovered with ``getattr`` or a protocol check.

Every path a caller passes is relative to the store's location (what rows and
leases hold); :meth:`StagedStore.full_path` turns it into the filesystem's own.
Every answer about what is in the store is fresh: a filesystem's cached listing
is forgotten first, because Zarr, Dask workers and other processes write through
other instances (``docs/spec.md``, *fresh listings*).

The generic methods here go through fsspec and serve any filesystem; an
implementation overrides what its service does better (a server-side copy,
batched deletes, listing incomplete uploads).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, ClassVar, cast

import fsspec
from fsspec.callbacks import DEFAULT_CALLBACK, Callback
from fsspec.spec import AbstractBufferedFile

from .._datajoint import StorageBackend
from .._datajoint import full_path as datajoint_full_path
from ..settings import part_size
from .resumable import Checkpoint, OnCheckpoint, ResumableWriter

CHUNK = 4 << 20  # what a streaming copy or read moves at a time
_MTIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "mtime_ns")

# ---- the filesystem's values, as the store layer's annotations name them. fsspec ships no type information (no
# py.typed), nor do s3fs, gcsfs and adlfs: to a type checker each is Any; the name says what it stands for.

#: a binary write handle on one object: the filesystem's own file (an fsspec ``AbstractBufferedFile``), a local
#: file, or a store's own writer (``S3PartWriter``); :meth:`StagedStore.open_write` gives one, ``discard`` ends one
WriteHandle = Any
#: what a filesystem's ``info``, ``ls(detail=True)`` or ``find(detail=True)`` says of one path (``name``, ``size``,
#: ``type`` and whatever else the service reports, under its own names)
FileInfo = dict[str, Any]


@dataclass(frozen=True)
class StoredFile:
    """A file in a store: its path relative to the store's location, size and modification time (None if unknown)."""

    path: str
    size: int
    mtime: float | None


@dataclass(frozen=True)
class ObjectIdentity:
    """What tells one written object from another at the same path: its size and, where the service gives one, a
    version that changes whenever the object is replaced (an inode, an ETag, a generation)."""

    size: int
    version: str | None = None

    def matches(self, found: ObjectIdentity | None) -> bool:
        """Whether ``found`` (what is in the store now) is the object this identity was taken of: the same size,
        and the same version where this one knows it."""
        return found is not None and found.size == self.size and self.version in (None, found.version)


@dataclass(frozen=True)
class IncompleteUpload:
    """An upload that was begun and never completed or aborted: it holds storage, but no listing shows it."""

    name: str  # unique in its section: "{path}#upload={upload_id}"
    path: str  # the object it would have created, relative to the store's location
    size: int  # bytes it holds so far
    started: float | None  # POSIX seconds
    upload_id: str


@dataclass(frozen=True)
class StoreObject:
    """One path of one store (zarr's ``StorePath`` is the model): the value that replaces ``(backend, path)`` pairs."""

    store: StagedStore
    path: str

    @property
    def full(self) -> str:
        """The path in the store's filesystem."""
        return self.store.full_path(self.path)

    def __truediv__(self, name: str) -> StoreObject:
        return StoreObject(self.store, f"{self.path.rstrip('/')}/{name}" if self.path else name)

    def exists(self) -> bool:
        return self.store.exists(self.path)

    def info(self) -> FileInfo | None:
        return self.store.info(self.path)

    def identity(self) -> ObjectIdentity | None:
        return self.store.identity(self.path)

    def remove(self) -> None:
        self.store.remove(self.path)

    def __str__(self) -> str:
        return f"{self.store.name}:{self.path}"


def mtime_of(info: FileInfo) -> float | None:
    """Modification time (POSIX seconds) from an fsspec info dict, whatever the service calls it."""
    for key in _MTIME_KEYS:
        value = info.get(key)
        if value in (None, ""):
            continue
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return value / 1e9 if key == "mtime_ns" else float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def find_strict(fs: fsspec.AbstractFileSystem, path: str, **kwargs: object) -> Any:
    """``fs.find`` that raises when a directory cannot be listed (fsspec's generic ``find`` skips it, and a
    partial listing of live objects must never become a list of things to delete)."""
    if type(fs).find is fsspec.AbstractFileSystem.find:
        kwargs["on_error"] = "raise"
    return fs.find(path, **kwargs)


class StagedStore:
    """One configured DataJoint store, as dj-staged uses it. Paths are relative to the store's location."""

    #: DataJoint's name for the protocol (``dj.config.stores[...]["protocol"]``); for messages only
    protocol: ClassVar[str] = ""
    #: an object can be copied inside the service, with no byte downloaded (promotion, framing)
    supports_server_side_copy: ClassVar[bool] = False
    #: the largest object one server-side copy request takes; larger ones are copied part by part (None: any)
    server_side_copy_limit: ClassVar[int | None] = None
    #: a large upload goes up in parts that the service keeps if the writer dies (S3 multipart uploads, GCS
    #: resumable sessions, Azure uncommitted blocks)
    supports_partial_uploads: ClassVar[bool] = False
    #: those partial uploads can be listed, so a collector can reclaim the ones no live write covers
    supports_listing_incomplete_uploads: ClassVar[bool] = False
    #: what the service reclaims by itself, for the collector's report ("" if nothing)
    reclaims_by_itself: ClassVar[str] = ""
    #: objects are files on this machine's disks: durable only once fsynced, identified by their inode, and the
    #: files written through a ``store()`` handle can be checked one by one
    durable_local_files: ClassVar[bool] = False
    #: a file can be appended to (a lease's later entries are lines of one file, not one object each)
    supports_append: ClassVar[bool] = False
    #: the write handle uploads in threads of its own, so hashing in the caller's thread costs no extra time
    uploads_in_background: ClassVar[bool] = False
    #: objects one deletion request removes
    delete_batch_size: ClassVar[int] = 1
    #: a promotion never overwrites an object that appeared since the existence check (else two writers racing
    #: on the same content may both copy: identical bytes, so the same result)
    atomic_promotion: ClassVar[bool] = False
    #: an object placed at a path the writer chose (``<filepath@>``) carries a mark that tells a collector it is
    #: that write's, so a collector can reclaim it when its writer died before the commit (else it is left)
    marks_placements: ClassVar[bool] = False
    #: a write interrupted without an error goes on later from its durable prefix, by the service's own mechanism
    #: (:meth:`open_resumable`)
    resumes_writes: ClassVar[bool] = False
    #: bytes uploaded at a time, and a resumable write's durable unit, unless ``DJ_STAGED_PART_SIZE`` says otherwise
    _default_part_size: ClassVar[int] = 8 << 20

    def __init__(self, name: str, spec: dict[str, Any], backend: StorageBackend) -> None:
        self.name = name
        self.spec = spec
        self.backend = backend  # DataJoint's StorageBackend: what codecs' own encode/decode use
        self.fs: fsspec.AbstractFileSystem = backend.fs

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    @classmethod
    def capabilities(cls) -> dict[str, object]:
        """Every declared capability and its value (the README's store table is made from these)."""
        names = [name for name, value in vars(StagedStore).items() if isinstance(value, bool | int | str | None)]
        return {name: getattr(cls, name) for name in names if not name.startswith("_") and name != "protocol"}

    # ---- paths

    def full_path(self, path: str) -> str:
        """The filesystem path of a store-relative ``path`` (``""``: the store's location)."""
        return str(datajoint_full_path(self.backend, path))

    def relative(self, full: str) -> str:
        """The store-relative path of a filesystem path under the store's location."""
        root = self.full_path("").rstrip("/")
        return full[len(root) :].lstrip("/") if full.startswith(root) else full

    def at(self, path: str) -> StoreObject:
        """``path`` of this store as a value."""
        return StoreObject(self, path)

    # ---- fresh answers

    def forget(self, path: str = "") -> None:
        """Forget what the filesystem cached of ``path`` and its parents (everything, for ``""``)."""
        if path:
            self.fs.invalidate_cache(self.full_path(path))
        else:
            self.fs.invalidate_cache()

    def info(self, path: str) -> FileInfo | None:
        """The filesystem's info of ``path`` asked of the service now, or None if nothing is there."""
        self.forget(path)
        try:
            return dict(self.fs.info(self.full_path(path)))
        except FileNotFoundError:
            return None

    def exists(self, path: str) -> bool:
        """Whether anything (an object, or a directory holding some) is at ``path`` now."""
        self.forget(path)
        return bool(self.fs.exists(self.full_path(path)))

    def identity(self, path: str) -> ObjectIdentity | None:
        """What identifies the object at ``path`` now (None if there is none)."""
        info = self.info(path)
        return None if info is None else self.identity_from(info)

    def identity_from(self, info: FileInfo) -> ObjectIdentity:
        """The identity an info dict of this store's filesystem describes."""
        return ObjectIdentity(int(info.get("size") or 0), self._version(info))

    def _version(self, info: FileInfo) -> str | None:
        """The version field of a filesystem info dict (an implementation names its own)."""
        return None

    def list_files(self, section: str) -> dict[str, StoredFile]:
        """Every file under ``section``, keyed by its store-relative path; strict (a folder that cannot be
        listed raises)."""
        self.forget()
        try:
            found = find_strict(self.fs, self.full_path(section).rstrip("/"), detail=True)
        except FileNotFoundError:
            return {}
        files: dict[str, StoredFile] = {}
        for full, info in found.items():
            if info.get("type", "file") != "file":
                continue
            relative = self.relative(full)
            files[relative] = StoredFile(relative, int(info.get("size") or 0), mtime_of(info))
        return files

    def list_folder(self, prefix: str) -> tuple[set[str], dict[str, StoredFile]]:
        """One level under ``prefix``: the names of the folders there, and the files there (by relative path)."""
        self.forget()
        try:
            entries = self.fs.ls(self.full_path(prefix).rstrip("/"), detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return set(), {}
        folders: set[str] = set()
        files: dict[str, StoredFile] = {}
        for info in entries:
            full = str(info["name"]).rstrip("/")
            if info.get("type") == "directory":
                folders.add(full.rsplit("/", 1)[-1])
            else:
                relative = self.relative(full)
                files[relative] = StoredFile(relative, int(info.get("size") or 0), mtime_of(info))
        return folders, files

    def directory_files(self, path: str) -> dict[str, FileInfo]:
        """The files under the directory ``path``: filesystem path → info (for a directory value)."""
        return dict(find_strict(self.fs, self.full_path(path), detail=True))

    # ---- reading

    def open_read(self, path: str) -> IO[bytes]:
        """A binary read handle on ``path``."""
        return cast(IO[bytes], self.fs.open(self.full_path(path), "rb"))

    def read_many(self, paths: Iterable[str]) -> dict[str, bytes | None]:
        """The bytes of each of ``paths`` (None for one that is gone), fetched together."""
        fulls = {self.full_path(path): path for path in paths}
        if not fulls:
            return {}
        fetched = self.fs.cat(list(fulls), on_error="return")
        return {path: data if isinstance(data := fetched.get(full), bytes) else None for full, path in fulls.items()}

    # ---- writing

    def open_write(self, path: str) -> WriteHandle:
        """A streaming binary write handle on the new object ``path``, in bounded memory; closing it completes the
        object, :meth:`discard` abandons it."""
        return self.fs.open(self.full_path(path), "wb")

    def discard(self, handle: WriteHandle) -> None:
        """Abandon a handle of :meth:`open_write` without completing its object (a failed write)."""
        if isinstance(handle, AbstractBufferedFile):
            handle.discard()
            handle.closed = True
            return
        handle.close()

    @property
    def part_size(self) -> int:
        """Bytes a write uploads at a time (a part, a chunk, a block) and a resumable write's durable unit."""
        return part_size(self._default_part_size)

    def open_resumable(
        self, path: str, *, on_checkpoint: OnCheckpoint, resume_from: Checkpoint | None = None
    ) -> ResumableWriter:
        """A write handle on ``path`` that calls ``on_checkpoint`` each time its durable prefix grows
        (:attr:`resumes_writes` only); with ``resume_from``, one that goes on from that checkpoint after checking
        the service still holds it (else :class:`~dj_staged.errors.DurablePrefixLostError`)."""
        raise NotImplementedError(f"{type(self).__name__} does not resume writes")

    def abandon_resumable(self, path: str, checkpoint: Checkpoint | None) -> None:
        """Free what a resumable write that will not be resumed holds at ``path``: its object, and its parts,
        session or blocks (``checkpoint``: the last one it recorded, if any)."""
        self.remove(path)

    def make_durable(self, paths: Iterable[str]) -> None:
        """Make the files ``paths`` (and the folders that hold them) survive a crash of this machine; nothing on a
        store whose completed objects are durable."""

    def replace_small(self, path: str, data: bytes) -> None:
        """Write the small object ``path``, replacing what is there in one step: a reader sees the old bytes or the
        new, never a mix (a resumable write's checkpoint); durable when this returns."""
        self.create(path, data)

    def open(self, path: str, mode: str) -> IO[bytes]:
        """The filesystem's own handle on ``path`` in ``mode`` (``"ab"``, ``"r+b"``, ...)."""
        return cast(IO[bytes], self.fs.open(self.full_path(path), mode))

    def open_update(self, path: str) -> IO[bytes]:
        """A handle that overwrites bytes of the existing file ``path`` in place (``durable_local_files`` only)."""
        raise NotImplementedError(f"{type(self).__name__} cannot change an object in place")

    def create(self, path: str, data: bytes) -> None:
        """Write the small object ``path`` at once."""
        self.fs.pipe_file(self.full_path(path), data)

    def append(self, path: str) -> IO[bytes]:
        """A handle that appends to ``path`` (``supports_append`` only)."""
        raise NotImplementedError(f"{type(self).__name__} cannot append to an object")

    # ---- removing

    def remove(self, path: str) -> None:
        """Remove the file or the directory tree at ``path``; nothing there is fine."""
        full = self.full_path(path)
        self.forget(path)
        with contextlib.suppress(FileNotFoundError):
            if self.fs.isdir(full):
                self.fs.rm(full, recursive=True)
            elif self.fs.exists(full):
                self.fs.rm(full)

    def delete_small(self, path: str) -> None:
        """Remove the small object ``path`` (a lease's file); absent is fine."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.full_path(path))

    def remove_folder(self, path: str) -> None:
        """Remove a small folder of files (a lease's); absent is fine."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.full_path(path), recursive=True)

    def remove_empty_folder(self, path: str) -> None:
        """Remove the folder ``path`` if it is empty (a store of objects has no folders of its own)."""

    def delete_file(self, path: str, stop_at: str) -> None:
        """Delete one file, then the folders it leaves empty up to (not including) ``stop_at``."""
        self.fs.rm(self.full_path(path))

    def delete_many(self, paths: list[str]) -> dict[str, str]:
        """Delete up to :attr:`delete_batch_size` files in one request; path → error for those that failed."""
        errors: dict[str, str] = {}
        for path in paths:
            try:
                self.fs.rm(self.full_path(path))
            except FileNotFoundError:
                continue
            except Exception as error:
                errors[path] = f"{type(error).__name__}: {error}"
        return errors

    # ---- moving and copying

    def promote(self, source: str, target: str, *, callback: Callback = DEFAULT_CALLBACK) -> bool:
        """Move ``source`` to ``target``; False (and ``source`` removed) if ``target`` already exists (dedup).

        Never overwrites ``target`` knowingly; see :attr:`atomic_promotion`.
        """
        if self.exists(target):
            self.fs.rm(self.full_path(source))
            return False
        size = int(self.fs.size(self.full_path(source)))
        callback.set_size(size)
        self.copy(source, target)
        callback.relative_update(size)
        self.fs.rm(self.full_path(source))
        return True

    def copy(self, source: str, target: str) -> None:
        """Copy ``source`` to ``target`` (inside the service, where it can)."""
        self.fs.cp_file(self.full_path(source), self.full_path(target))
        self.forget(target)

    def compose(
        self, prefix: bytes, source: str, target: str, offset: int = 0, callback: Callback = DEFAULT_CALLBACK
    ) -> None:
        """Write ``prefix`` followed by the bytes of ``source`` from ``offset`` on as the new object ``target``."""
        remaining = int(self.fs.size(self.full_path(source))) - offset
        callback.set_size(remaining)
        with self.open_read(source) as src:
            writer = self.open_write(target)
            try:
                writer.write(prefix)
                src.seek(offset)
                while chunk := src.read(CHUNK):
                    writer.write(chunk)
                    callback.relative_update(len(chunk))
            except BaseException:
                self.discard(writer)
                raise
            writer.close()

    # ---- placing at a path the writer chose

    def claim_location(self, path: str) -> str:
        """Where ``path`` is, for claiming it: the protocol and the filesystem path (one store's claim on a path
        is every store's that reaches the same location)."""
        return f"{self.protocol}:{self.full_path(path)}"

    def placement_mark(self, source: str, lease_id: str) -> str:
        """What will tell the objects placed from ``source`` apart as this write's, recorded in its lease before
        they are placed: the lease's id, which each placed object carries in its metadata."""
        return lease_id

    def place(
        self, source: str, target: str, *, mark: str, overwrite: bool, callback: Callback = DEFAULT_CALLBACK
    ) -> list[str]:
        """Move the file or directory ``source`` to ``target``, each placed object carrying ``mark``; the folders
        made for it (where a store has folders), deepest first.

        Raises ``FileExistsError`` if something is at ``target``, unless
        ``overwrite``: a file is then replaced, a directory removed first.
        ``source`` is removed once everything is placed.
        """
        files = self._placed_files(source, target)
        there = self.info(target)
        if there is not None:
            if not overwrite:
                raise FileExistsError(target)
            if there["type"] == "directory" or files[0][1] != target:  # a file replaces a file in one step
                self.remove(target)
        callback.set_size(sum(size for _source, _target, size in files))
        for origin, destination, size in files:
            self._place_one(origin, destination, mark, size)
            callback.relative_update(size)
        self.remove(source)
        self.forget(target)
        return []

    def _placed_files(self, source: str, target: str) -> list[tuple[str, str, int]]:
        """``(source, target, size)`` of each file a placement of ``source`` at ``target`` copies."""
        info = self.info(source)
        if info is None:
            raise FileNotFoundError(source)
        if info["type"] != "directory":
            return [(source, target, int(info.get("size") or 0))]
        found = self.directory_files(source)
        prefix = self.full_path(source).rstrip("/") + "/"
        return [
            (f"{source}/{full[len(prefix) :]}", f"{target}/{full[len(prefix) :]}", int(entry.get("size") or 0))
            for full, entry in sorted(found.items())
            if entry.get("type", "file") == "file"
        ]

    def _place_one(self, source: str, target: str, mark: str, size: int) -> None:
        """Copy one file to its place, carrying ``mark`` where the store can (here: it cannot)."""
        self.copy(source, target)

    def placed_by(self, target: str, mark: str) -> bool:
        """Whether everything at ``target`` is what the placement ``mark`` names placed (False when nothing is
        there, or when the store cannot tell: a collector then leaves it)."""
        return False

    # ---- incomplete uploads

    def incomplete_uploads(self, section: str) -> dict[str, IncompleteUpload]:
        """The incomplete uploads under ``section``, by name (none where the service cannot list them)."""
        return {}

    def abort_upload(self, upload: IncompleteUpload) -> None:
        """Abort an incomplete upload, freeing what it holds."""
        raise NotImplementedError(f"{type(self).__name__} lists no incomplete uploads")
