"""What was written through a ``store()`` handle on a local store, so finalization can check it is all there.

Zarr and ``FSMap`` write through the handle's filesystem (``fsmap.fs``): Zarr
wraps it in fsspec's ``AsyncFileSystemWrapper`` and calls its ``pipe_file``,
``rm`` and friends. On a local store that filesystem is a journaling subclass
of the store's own, which records each file written (path and size) and each
removal made through the handle (``zarr.open(..., mode="w")`` empties the
directory first). At finalization every recorded file must still be there
with the size it was written with: a directory removed by someone else
mid-write (DataJoint's own collector, a person) fails the commit instead of
committing a row that holds only the files written afterwards.

A handle sent to other processes (Dask workers unpickle it) writes there as a
plain filesystem; the journal knows it escaped, and what those processes
wrote is not checked file by file. Filesystems with an asynchronous
implementation (S3) are given unjournaled: Zarr rebuilds them from their
serialized form, which a journaling subclass would not survive.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import fsspec

from ..durability import is_local

_WRITE_FLAGS = ("w", "a", "x", "+")


class WriteJournal:
    """Files written (full path → size) and removals made through one handle in this process."""

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.escaped = False
        self._lock = threading.Lock()

    def wrote(self, path: str) -> None:
        """Record the file at ``path`` as the handle left it."""
        size = os.stat(path).st_size
        with self._lock:
            self.sizes[path] = size

    def removed(self, path: str) -> None:
        """Forget ``path`` and everything under it (removed through the handle)."""
        top = path.rstrip("/")
        with self._lock:
            for recorded in [p for p in self.sizes if p == top or p.startswith(top + "/")]:
                del self.sizes[recorded]

    def missing(self) -> list[str]:
        """Recorded files that are gone or no longer have the size they were written with."""
        gone = []
        for path, size in sorted(self.sizes.items()):
            try:
                if os.stat(path).st_size != size:
                    gone.append(path)
            except FileNotFoundError:
                gone.append(path)
        return gone


def _paths(path: Any) -> list[str]:
    return [str(p) for p in path] if isinstance(path, list | tuple) else [str(path)]


class _Journaling:
    """Methods layered over a local filesystem class to record what goes through it."""

    journal: WriteJournal

    def pipe_file(self, path: str, value: bytes, *args: Any, **kwargs: Any) -> Any:
        result = super().pipe_file(path, value, *args, **kwargs)  # type: ignore[misc]
        self.journal.wrote(self._strip_protocol(path))  # type: ignore[attr-defined]
        return result

    def _open(self, path: str, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        handle = super()._open(path, mode, *args, **kwargs)  # type: ignore[misc]
        if any(flag in mode for flag in _WRITE_FLAGS):
            close, stripped, journal = handle.close, self._strip_protocol(path), self.journal  # type: ignore[attr-defined]

            def close_and_record() -> None:
                close()
                journal.wrote(stripped)

            handle.close = close_and_record
        return handle

    def put_file(self, lpath: str, rpath: str, *args: Any, **kwargs: Any) -> Any:
        result = super().put_file(lpath, rpath, *args, **kwargs)  # type: ignore[misc]
        self.journal.wrote(self._strip_protocol(rpath))  # type: ignore[attr-defined]
        return result

    def cp_file(self, path1: str, path2: str, *args: Any, **kwargs: Any) -> Any:
        result = super().cp_file(path1, path2, *args, **kwargs)  # type: ignore[misc]
        self.journal.wrote(self._strip_protocol(path2))  # type: ignore[attr-defined]
        return result

    def mv(self, path1: str, path2: str, *args: Any, **kwargs: Any) -> Any:
        result = super().mv(path1, path2, *args, **kwargs)  # type: ignore[misc]
        self.journal.removed(self._strip_protocol(path1))  # type: ignore[attr-defined]
        if os.path.isfile(self._strip_protocol(path2)):  # type: ignore[attr-defined]
            self.journal.wrote(self._strip_protocol(path2))  # type: ignore[attr-defined]
        return result

    def rm_file(self, path: str) -> Any:
        result = super().rm_file(path)  # type: ignore[misc]
        self.journal.removed(self._strip_protocol(path))  # type: ignore[attr-defined]
        return result

    def rm(self, path: Any, *args: Any, **kwargs: Any) -> Any:
        result = super().rm(path, *args, **kwargs)  # type: ignore[misc]
        for each in _paths(path):
            self.journal.removed(self._strip_protocol(each))  # type: ignore[attr-defined]
        return result

    def __reduce__(self) -> Any:
        """Pickled (to a Dask worker): the journal cannot follow, so the worker gets the store's own filesystem."""
        self.journal.escaped = True
        return self._unjournaled.__reduce__()  # type: ignore[attr-defined]


_classes: dict[type, type] = {}


def journaled_map(backend: Any, full: str, journal: WriteJournal) -> fsspec.FSMap:
    """An ``FSMap`` at ``full`` whose filesystem records into ``journal`` (a plain one when it cannot)."""
    fs = backend.fs
    if not is_local(fs) or getattr(fs, "async_impl", False):
        return fsspec.FSMap(full, fs)
    cls = _classes.get(type(fs))
    if cls is None:
        cls = _classes[type(fs)] = type(f"Journaling{type(fs).__name__}", (_Journaling, type(fs)), {})
    recording: Any = object.__new__(cls)  # a copy of the store's instance, with the same settings and state
    recording.__dict__.update(fs.__dict__)
    recording.journal = journal
    recording._unjournaled = fs
    return fsspec.FSMap(full, recording)
