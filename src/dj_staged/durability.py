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

A directory's entry in its parent is durable once the parent has been
fsynced while the directory was there. The process remembers such entries
(:class:`DurableEntries`, by path, inode and the inode's generation), so a
row written under the same table folder as the previous one fsyncs its file,
its own new folder and the table folder, not every folder up to the store's
root again.

``DJ_STAGED_DURABLE=0`` (also ``false``, ``no``, ``off``) turns this off for
scratch data: a crash of the machine shortly after a commit may then lose the
bytes of a committed row.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

ENV = "DJ_STAGED_DURABLE"
_PARALLEL = 8  # fsyncs in flight at once for a directory of many files; they wait on the disk, not the CPU


def durable() -> bool:
    """Whether staged writes are made durable before their commit (``DJ_STAGED_DURABLE``, default on)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


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


class DurableEntries:
    """Directories whose entry in their parent this process made durable: the parent was fsynced while the
    directory, with the same inode and generation, was in it (the most recently used ``limit``)."""

    def __init__(self, limit: int = 1024) -> None:
        self._limit = limit
        self._entries: OrderedDict[str, tuple[int, int, int]] = OrderedDict()
        self._lock = threading.Lock()

    def durable(self, path: str) -> bool:
        """Whether ``path``'s entry in its parent is known durable: it is still the directory it was then.

        A directory removed and made again at the same path is another one:
        ext4 reuses a freed inode number at once, but gives the new inode
        another generation.
        """
        with self._lock:
            known = self._entries.get(path)
            if known is None:
                return False
            self._entries.move_to_end(path)
        return directory_identity(path) == known

    def remember(self, identities: dict[str, tuple[int, int, int]]) -> None:
        """Record that the parents of these directories were fsynced while they were there."""
        with self._lock:
            for path, identity in identities.items():
                self._entries[path] = identity
                self._entries.move_to_end(path)
            while len(self._entries) > self._limit:
                self._entries.popitem(last=False)


known_durable = DurableEntries()


_FS_IOC_GETVERSION = 0x80087601  # Linux: the inode's generation, new each time an inode number is reused


def directory_identity(path: str) -> tuple[int, int, int] | None:
    """``(device, inode, generation)`` of the directory at ``path``; None where the filesystem has no generation
    (its entries are then never taken as known durable)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        stat = os.fstat(descriptor)
        generation = struct.unpack("l", fcntl.ioctl(descriptor, _FS_IOC_GETVERSION, bytes(8)))[0]
    except OSError:
        return None
    finally:
        os.close(descriptor)
    return stat.st_dev, stat.st_ino, generation


def _entries_made_durable(folders: list[str], many: bool) -> dict[str, tuple[int, int, int]]:
    """The folders whose entries syncing ``folders`` makes durable (those whose parent is synced too), by
    identity, taken before the sync; of many (a batch's row folders), only the ones other rows share."""
    synced = set(folders)
    shared = {os.path.dirname(folder) for folder in folders} if many else synced
    return {
        folder: identity
        for folder in folders
        if folder in shared and os.path.dirname(folder) in synced and (identity := directory_identity(folder))
    }


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
        """``path`` (a directory that gained an entry) and each parent up to ``root`` whose entry for the folder
        below it is not known durable (:data:`known_durable`): a folder made for this write, or one this
        process has not yet seen synced."""
        if not self.enabled:
            return
        root, current = root.rstrip("/"), path.rstrip("/")
        with self._lock:
            self._paths[current] = True
            while current != root and current.startswith(root + "/") and not known_durable.durable(current):
                current = os.path.dirname(current)
                self._paths[current] = True

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

    def moved(self, old: str, new: str, root: str) -> None:
        """``old`` (a file or directory planned here) was renamed ``new``: what was planned at or under ``old`` is
        planned under ``new``, the folders ``old`` left are dropped (nothing the row references is in them any
        more), and ``new``'s parents up to ``root`` are planned (they gained an entry)."""
        if not self.enabled:
            return
        old, new = old.rstrip("/"), new.rstrip("/")
        with self._lock:
            planned, self._paths = self._paths, {}
            for path, is_directory in planned.items():
                if path == old or path.startswith(old + "/"):
                    self._paths[new + path[len(old) :]] = is_directory
                elif not old.startswith(path + "/"):
                    self._paths[path] = is_directory
        self.directories(os.path.dirname(new), root)

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
        many = len(files) + len(folders) >= MANY
        entries = _entries_made_durable(folders, many)
        if many and hasattr(_libc, "syncfs"):
            for path in {os.stat(folder).st_dev: folder for folder in folders or files}.values():
                syncfs(path)
        else:
            fsync_files(files)
            fsync_files(folders)
        known_durable.remember(entries)
