"""Making what a staged write put in a local store durable before its row commits.

PostgreSQL makes a committed row durable; without this, a power loss right
after the commit could leave the row pointing at a truncated or missing file.
So on a local store every file written through a handle is fsynced (a Zarr
directory's chunk files included), and so is each directory that gained an
entry, before the ``INSERT``. On S3 a completed upload is already durable.

The lifecycles do not sync as they go: they add what must be synced to the
writer's :class:`SyncPlan`, which syncs it all, several at a time, right
before the ``INSERT`` (a batch of many rows shares one plan, and the
directories its rows share are synced once).

``DJ_STAGED_DURABLE=0`` (also ``false``, ``no``, ``off``) turns this off for
scratch data: a crash of the machine shortly after a commit may then lose the
bytes of a committed row.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fsspec.implementations.local import LocalFileSystem

ENV = "DJ_STAGED_DURABLE"
_PARALLEL = 8  # fsyncs in flight at once for a directory of many files; they wait on the disk, not the CPU


def durable() -> bool:
    """Whether staged writes are made durable before their commit (``DJ_STAGED_DURABLE``, default on)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def is_local(fs: Any) -> bool:
    """Whether ``fs`` writes to this machine's disks (the ones that need an fsync)."""
    return isinstance(fs, LocalFileSystem)


def is_plain_local(fs: Any) -> bool:
    """Whether ``fs`` is fsspec's own local filesystem, whose calls ``os`` can make directly and faster for
    small files (a subclass may do more on each call, and keeps its own)."""
    return type(fs) is LocalFileSystem


def fsync_path(path: str) -> None:
    """fsync the file or directory at ``path`` (a read-only descriptor suffices on Linux)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def syncfs(path: str) -> None:
    """Sync the whole filesystem holding ``path`` (Linux ``syncfs``): one call for any number of files."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        if _libc.syncfs(descriptor) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error), path)
    finally:
        os.close(descriptor)


_libc = ctypes.CDLL(None, use_errno=True)
MANY = 64  # from this many files and directories on one filesystem, one syncfs beats an fsync each


def fsync_files(paths: Iterable[str]) -> None:
    """fsync every file in ``paths``, several at a time."""
    paths = list(paths)
    if len(paths) <= _PARALLEL:  # starting threads would cost more than it saves
        for path in paths:
            fsync_path(path)
        return
    with ThreadPoolExecutor(max_workers=_PARALLEL, thread_name_prefix="dj-staged-fsync") as pool:
        list(pool.map(fsync_path, paths))


class SyncPlan:
    """Files and directories (full local paths) that must be on disk before the writer's commit."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._paths: dict[str, bool] = {}  # path -> is a directory (one small dict: a batch keeps a plan per row)
        self._lock = threading.Lock()

    def file(self, path: str) -> None:
        """A file whose bytes the row will reference."""
        if self.enabled:
            with self._lock:
                self._paths.setdefault(path, False)

    def directories(self, path: str, root: str) -> None:
        """``path`` (a directory) and each parent up to and including ``root``: they gained entries."""
        if not self.enabled:
            return
        root, current = root.rstrip("/"), path.rstrip("/")
        with self._lock:
            while True:
                self._paths[current] = True
                if current == root or not current.startswith(root + "/"):
                    return
                current = os.path.dirname(current)

    def tree(self, directory: str, files: Iterable[str], root: str) -> None:
        """A directory value: its files, every directory under it, and its parents up to ``root``."""
        if not self.enabled:
            return
        top = directory.rstrip("/")
        files = set(files)
        for file in files:
            self.file(file)
        for folder in {os.path.dirname(file) for file in files}:
            self.directories(folder, top)
        self.directories(top, root)

    def merge(self, other: SyncPlan) -> None:
        """Take over what ``other`` planned (a batch row accepted into its batch)."""
        with self._lock, other._lock:
            for path, is_directory in other._paths.items():
                self._paths[path] = self._paths.get(path, False) or is_directory
            other._paths.clear()

    def flush(self) -> None:
        """Sync everything planned; the plan is then empty.

        Few entries: an fsync of each file, then of each directory. Many (a
        batch of small rows): one ``syncfs`` per filesystem they are on, which
        writes out everything dirty there, theirs included, in one call.
        """
        with self._lock:
            files = sorted(path for path, is_directory in self._paths.items() if not is_directory)
            folders = sorted((path for path, is_directory in self._paths.items() if is_directory), key=len)[::-1]
            self._paths.clear()
        if len(files) + len(folders) >= MANY and hasattr(_libc, "syncfs"):
            for path in {os.stat(folder).st_dev: folder for folder in folders or files}.values():
                syncfs(path)
            return
        fsync_files(files)
        fsync_files(folders)
