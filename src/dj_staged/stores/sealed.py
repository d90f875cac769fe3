"""The filesystem behind a ``store()`` handle: the store's own until its block ends, then it refuses writes.

A ``store()`` handle is an ``fsspec.FSMap`` on a :class:`HandleFileSystem`: a
thin, synchronous filesystem that passes every call on to the store's own
filesystem (``LocalFileSystem``, ``S3FileSystem``, ...). Zarr wraps it, as any
synchronous filesystem, in fsspec's ``AsyncFileSystemWrapper``; a Dask worker
unpickles it, with the store's filesystem inside (from that process's
instance cache, so its connections are shared). No filesystem is made per
handle: only this wrapper, which holds no connection. Every call that changes
the store first asks whether the handle is still open:

- in the process of the block, its :class:`HandleSeal` says so, at the cost of
  a dictionary lookup; once the block ends (finalization starts, it unwinds,
  or it is abandoned) the seal is set and every write is refused with
  :class:`~dj_staged.errors.HandleModeError`;
- in another process (a copy that was pickled) there is no seal to ask: the
  copy looks for the handle's *open marker* in the store before each write.
  The marker is created, leased, the first time the handle is pickled, and
  removed when the block ends, so a copy writing after that is refused. A write
  that passed its check just before the block ended can still land while the
  block finalizes: finalization looks at what is there only after sealing.

On a local store the handle also journals what is written through it in this
process (:class:`~dj_staged.stores.journal.WriteJournal`), so finalization can
check that every file is still there.

The model is fsspec's ``AbstractBufferedFile`` with ``commit()``/``discard()``
and ``fsspec/transaction.py``: a writer that is told when its work is over.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import fsspec
from fsspec.spec import AbstractFileSystem

from ..errors import HandleModeError
from ..layout import STAGING_PREFIX
from .journal import WriteJournal
from .resumable import mark_store_failure

if TYPE_CHECKING:
    from .base import StagedStore

_WRITE_FLAGS = ("w", "a", "x", "+")


@dataclass(eq=False)
class HandleSeal:
    """Whether one field's ``store()`` handles may still write, in the process of their block."""

    token: str
    field_name: str
    marker: str  # the open marker's filesystem path, in the field's store
    store_fs: fsspec.AbstractFileSystem  # the store's own filesystem, where the marker lives
    lease_marker: Callable[[], None]  # leases the marker's path, before it is created
    sealed: bool = False
    published: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def publish(self) -> None:
        """A copy of the handle is leaving this process: create the open marker it will look for."""
        with self._lock:
            if self.sealed or self.published:
                return
            self.lease_marker()
            self.store_fs.pipe_file(self.marker, b"")
            self.published = True

    def seal(self) -> None:
        """The block has ended: refuse every later write through the handles, here and in copies elsewhere."""
        with self._lock:
            if self.sealed:
                return
            self.sealed = True
            _unsealed.pop(self.token, None)
            if self.published:
                with contextlib.suppress(FileNotFoundError):
                    self.store_fs.rm_file(self.marker)


_unsealed: dict[str, HandleSeal] = {}  # token -> seal of the handles whose block is still open in this process


def _delegated(name: str) -> Callable[..., Any]:
    def call(self: HandleFileSystem, *args: object, **kwargs: object) -> Any:
        return getattr(self.target, name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"The store filesystem's ``{name}``."
    return call


class HandleFileSystem(AbstractFileSystem):  # type: ignore[misc]  # fsspec's AbstractFileSystem is untyped (Any)
    """The filesystem of one field's ``store()`` handles: ``target``'s reads, and its writes while open."""

    cachable = False  # one per handle, holding no connection: never kept in fsspec's instance cache

    def __init__(self, target: fsspec.AbstractFileSystem, *, token: str, field_name: str, marker: str) -> None:
        super().__init__()
        self.target = target
        self.protocol = target.protocol
        self.root_marker = target.root_marker
        self._strip_protocol = target._strip_protocol  # paths are the store's, normalized its way
        self._parent = target._parent
        self._handle_token = token
        self._handle_field = field_name
        self._handle_marker = marker
        self.journal: WriteJournal | None = None
        self.listener: Any = None  # a resumable handle's checkpoints: wrote(path, size), removed(path)

    @property
    def fsid(self) -> str:
        return f"dj-staged-handle-{self.target.fsid}"

    # ---- whether the handle may write

    def _check(self) -> None:
        seal = _unsealed.get(self._handle_token)
        if seal is not None:
            still_open = not seal.sealed
        else:  # a copy in another process, or one made after its block ended here: the store tells
            self.target.invalidate_cache(self._handle_marker)
            still_open = bool(self.target.exists(self._handle_marker))
        if not still_open:
            raise HandleModeError(
                f"This store() handle of field '{self._handle_field}' is sealed: its staged insert has ended, so "
                "nothing more can be written through it (a committed row's objects do not change). Write inside "
                "the block, or stage a new row.",
                field=self._handle_field,
            )

    def __reduce__(self) -> Any:
        """Pickled (for a Dask worker): the copy cannot see the seal, so publish the marker it will look for."""
        seal = _unsealed.get(self._handle_token)
        if seal is not None:
            seal.publish()
        if self.journal is not None:
            self.journal.escaped = True
        return super().__reduce__()

    # ---- the journal (local stores)

    def _wrote(self, path: str, size: int | None = None) -> None:
        stripped = self._strip_protocol(path)
        if self.journal is not None:
            self.journal.wrote(stripped)
        if self.listener is not None:
            self.listener.wrote(stripped, size if size is not None else int(self.target.size(path)))

    def _removed(self, path: str | list[str] | tuple[str, ...]) -> None:
        for each in path if isinstance(path, list | tuple) else [path]:
            stripped = self._strip_protocol(str(each))
            if self.journal is not None:
                self.journal.removed(stripped)
            if self.listener is not None:
                self.listener.removed(stripped)

    # ---- writes: checked, passed on, journaled

    def open(self, path: str, mode: str = "rb", *args: object, **kwargs: object) -> Any:
        """The store filesystem's ``open``; a write mode only while the handle is open."""
        writing = any(flag in mode for flag in _WRITE_FLAGS)
        if writing:
            self._check()
        handle = self.target.open(path, mode, *args, **kwargs)
        if writing and (self.journal is not None or self.listener is not None):
            close = handle.close

            def close_and_record() -> None:
                size = handle.tell()
                try:
                    close()
                except Exception as error:
                    mark_store_failure(error)
                    raise
                self._wrote(path, size)

            handle.close = close_and_record
        return handle

    def _open(self, path: str, mode: str = "rb", *args: object, **kwargs: object) -> Any:
        return self.open(path, mode, *args, **kwargs)

    def pipe_file(self, path: str, value: bytes, *args: object, **kwargs: object) -> Any:
        self._check()
        try:
            result = self.target.pipe_file(path, value, *args, **kwargs)
        except Exception as error:
            mark_store_failure(error)
            raise
        self._wrote(path, len(value))
        return result

    def put_file(self, lpath: str, rpath: str, *args: object, **kwargs: object) -> Any:
        self._check()
        result = self.target.put_file(lpath, rpath, *args, **kwargs)
        self._wrote(rpath)
        return result

    def cp_file(self, path1: str, path2: str, *args: object, **kwargs: object) -> Any:
        self._check()
        result = self.target.cp_file(path1, path2, *args, **kwargs)
        self._wrote(path2)
        return result

    def mv(self, path1: str, path2: str, *args: object, **kwargs: object) -> Any:
        self._check()
        result = self.target.mv(path1, path2, *args, **kwargs)
        self._removed(path1)
        if self.journal is not None and self.target.isfile(path2):
            self._wrote(path2)
        return result

    def rm_file(self, path: str) -> Any:
        self._check()
        result = self.target.rm_file(path)
        self._removed(path)
        return result

    def rm(self, path: str | list[str] | tuple[str, ...], *args: object, **kwargs: object) -> Any:
        self._check()
        result = self.target.rm(path, *args, **kwargs)
        self._removed(path)
        return result

    def rmdir(self, path: str) -> Any:
        self._check()
        return self.target.rmdir(path)

    def mkdir(self, path: str, *args: object, **kwargs: object) -> Any:
        self._check()
        return self.target.mkdir(path, *args, **kwargs)

    def makedirs(self, path: str, *args: object, **kwargs: object) -> Any:
        self._check()
        return self.target.makedirs(path, *args, **kwargs)

    def touch(self, path: str, *args: object, **kwargs: object) -> Any:
        self._check()
        result = self.target.touch(path, *args, **kwargs)
        self._wrote(path)
        return result


# reads are the store filesystem's own (its fast paths and its caching); walk stays fsspec's, built on ls
for _name in (
    "ls",
    "info",
    "exists",
    "lexists",
    "isdir",
    "isfile",
    "find",
    "glob",
    "du",
    "size",
    "sizes",
    "cat_file",
    "cat",
    "cat_ranges",
    "get_file",
    "get",
    "head",
    "tail",
    "checksum",
    "ukey",
    "modified",
    "created",
    "invalidate_cache",
):
    setattr(HandleFileSystem, _name, _delegated(_name))


class SealedField(Protocol):
    """What :func:`sealed_map` asks of the field it makes a handle for (a ``protocol.StagedField``, which the store
    layer does not import)."""

    @property
    def name(self) -> str: ...

    @property
    def store(self) -> StagedStore: ...

    @property
    def schema(self) -> str: ...

    @property
    def table_name(self) -> str: ...

    def full_path(self, path: str) -> str: ...

    def lease(self, *paths: str, fresh: bool = False) -> None: ...


class ResumableMap(fsspec.FSMap):  # type: ignore[misc]  # fsspec's FSMap is untyped (Any)
    """The ``FSMap`` of a resumable ``store()`` handle: ``durable`` lists the keys an earlier attempt made durable
    (a caller skips them; Zarr keeps them when the array is opened with ``mode="a"``)."""

    durable: frozenset[str] = frozenset()


def sealed_map(
    field: SealedField, path: str, journal: WriteJournal | None, listener: Any = None
) -> tuple[fsspec.FSMap, HandleSeal]:
    """An ``FSMap`` at ``path`` (store-relative) of ``field``'s store whose filesystem refuses writes once
    the returned seal is set; on a local store it records into ``journal``; a resumable handle's ``listener``
    hears of every file written or removed through it (and its ``durable`` keys are the map's)."""
    store_fs = field.store.fs
    token = secrets.token_hex(8)
    marker = f"{STAGING_PREFIX}/{field.schema}/{field.table_name}/{field.name}_{token}.open"
    seal = HandleSeal(
        token=token,
        field_name=field.name,
        marker=field.full_path(marker),
        store_fs=store_fs,
        lease_marker=lambda: field.lease(marker, fresh=True),
    )
    _unsealed[token] = seal
    handle_fs = HandleFileSystem(store_fs, token=token, field_name=field.name, marker=seal.marker)
    if field.store.durable_local_files:
        handle_fs.journal = journal
    if listener is None:
        return fsspec.FSMap(field.full_path(path), handle_fs), seal
    handle_fs.listener = listener
    mapping = ResumableMap(field.full_path(path), handle_fs)
    mapping.durable = frozenset(listener.durable)
    return mapping, seal
