"""A store on this machine's disks (``protocol: file``): files, made durable by fsync, promoted by a hard link.

Promotion is ``os.link`` then an unlink of the staging name: a rename in
effect, and atomic against a concurrent writer of the same content (the link
fails if the canonical file exists). Placement at a path the writer chose is
the same link for a file (``os.replace`` when it overwrites) and a rename for a
directory; the placed inode is the staged one, so its device, inode number and
modification time, taken before it is placed, are its mark. Small files (a lease's header, a small
row's file) go through ``os`` directly when the filesystem is fsspec's own
local one: fsspec's opener costs more than the write of a file that small.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterable
from typing import IO, Any, ClassVar, cast

from fsspec.callbacks import DEFAULT_CALLBACK, Callback
from fsspec.implementations.local import LocalFileSystem

from .._datajoint import StorageBackend
from ..durability import durable, fsync_path
from .base import FileInfo, ObjectIdentity, StagedStore, WriteHandle
from .local_resumable import LocalResumableWriter, sync_paths
from .resumable import Checkpoint, OnCheckpoint, ResumableWriter


class LocalStore(StagedStore):
    """A DataJoint ``file`` store."""

    protocol: ClassVar[str] = "file"
    supports_server_side_copy: ClassVar[bool] = True  # a hard link: no byte is copied at all
    durable_local_files: ClassVar[bool] = True
    supports_append: ClassVar[bool] = True
    atomic_promotion: ClassVar[bool] = True
    marks_placements: ClassVar[bool] = True
    resumes_writes: ClassVar[bool] = True  # durable: what was fsynced, every part size (8 MiB by default)

    def __init__(self, name: str, spec: dict[str, Any], backend: StorageBackend) -> None:
        super().__init__(name, spec, backend)
        self._plain = type(self.fs) is LocalFileSystem  # a subclass may do more on each call: keep its own

    def _version(self, info: FileInfo) -> str | None:
        inode = info.get("ino")
        return None if inode is None else str(inode)

    def identity(self, path: str) -> ObjectIdentity | None:
        try:
            stat = os.stat(self.full_path(path)) if self._plain else None
        except FileNotFoundError:
            return None
        if stat is None:
            return super().identity(path)
        return ObjectIdentity(stat.st_size, str(stat.st_ino))

    def open_write(self, path: str) -> WriteHandle:
        full = self.full_path(path)
        if self._plain:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            return open(full, "wb")  # noqa: SIM115 - the caller closes it, or discards it
        return self.fs.open(full, "wb")

    def discard(self, handle: WriteHandle) -> None:
        handle.close()  # the file stays until the write's cleanup removes it

    def open_resumable(
        self, path: str, *, on_checkpoint: OnCheckpoint, resume_from: Checkpoint | None = None
    ) -> ResumableWriter:
        return LocalResumableWriter(self.full_path(path), self.part_size, on_checkpoint, resume_from, durable=durable())

    def make_durable(self, paths: Iterable[str]) -> None:
        if durable():
            sync_paths([self.full_path(path) for path in paths], self.full_path("").rstrip("/"))

    def replace_small(self, path: str, data: bytes) -> None:
        full = self.full_path(path)
        folder = os.path.dirname(full)
        os.makedirs(folder, exist_ok=True)
        aside = f"{full}.{os.getpid()}.{threading.get_ident()}.new"
        with open(aside, "wb") as file:
            file.write(data)
            if durable():
                os.fsync(file.fileno())
        os.replace(aside, full)
        if durable():
            fsync_path(folder)
            fsync_path(os.path.dirname(folder))  # the lease's folder in its schema's

    def open_update(self, path: str) -> IO[bytes]:
        return cast(IO[bytes], self.fs.open(self.full_path(path), "r+b"))

    def create(self, path: str, data: bytes) -> None:
        full = self.full_path(path)
        if not self._plain:
            self.fs.pipe_file(full, data)
            return
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as file:
            file.write(data)

    def append(self, path: str) -> IO[bytes]:
        return cast(IO[bytes], self.fs.open(self.full_path(path), "ab"))

    def delete_small(self, path: str) -> None:
        if not self._plain:
            super().delete_small(path)
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.full_path(path))

    def remove_folder(self, path: str) -> None:
        folder = self.full_path(path)
        if not self._plain:
            super().remove_folder(path)
            return
        with contextlib.suppress(FileNotFoundError):  # a folder of one to a few small files: os, no fsspec walk
            for name in os.listdir(folder):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))
            os.rmdir(folder)

    def remove_empty_folder(self, path: str) -> None:
        with contextlib.suppress(OSError):  # not empty (someone else put something there), or gone
            os.rmdir(self.full_path(path))

    def delete_file(self, path: str, stop_at: str) -> None:
        full = self.full_path(path)
        self.fs.rm(full)
        boundary = self.full_path(stop_at).rstrip("/")
        parent = full.rsplit("/", 1)[0]
        while parent.startswith(boundary + "/"):
            try:
                if self.fs.ls(parent):
                    break
                self.fs.rmdir(parent)
            except Exception:
                break
            parent = parent.rsplit("/", 1)[0]

    def promote(self, source: str, target: str, *, callback: Callback = DEFAULT_CALLBACK) -> bool:
        source_full, target_full = self.full_path(source), self.full_path(target)
        self.fs.makedirs(os.path.dirname(target_full), exist_ok=True)
        try:
            self.fs.link(source_full, target_full)
        except FileExistsError:
            self.fs.rm_file(source_full)
            return False
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
                raise
            if self.fs.exists(target_full):
                self.fs.rm_file(source_full)
                return False
            self.fs.mv(source_full, target_full)
            return True
        self.fs.rm_file(source_full)
        return True

    def placement_mark(self, source: str, lease_id: str) -> str:
        return _mark(os.stat(self.full_path(source)))

    def place(
        self, source: str, target: str, *, mark: str, overwrite: bool, callback: Callback = DEFAULT_CALLBACK
    ) -> list[str]:
        source_full, target_full = self.full_path(source), self.full_path(target)
        created = _missing_folders(os.path.dirname(target_full), self.full_path("").rstrip("/"))
        os.makedirs(os.path.dirname(target_full), exist_ok=True)
        is_dir = os.path.isdir(source_full)
        if not overwrite:
            if is_dir:
                if os.path.lexists(target_full):
                    raise FileExistsError(target)
                os.rename(source_full, target_full)
            else:
                _link_or_rename(source_full, target_full)
        elif os.path.isdir(target_full) and not os.path.islink(target_full):
            aside = f"{source_full}.replaced"
            os.rename(target_full, aside)
            os.rename(source_full, target_full)
            self.fs.rm(aside, recursive=True)
        else:
            if is_dir and os.path.lexists(target_full):
                os.unlink(target_full)  # a file where the directory goes
            os.replace(source_full, target_full)  # a file over a file in one step
        return [self.relative(folder) for folder in created]

    def placed_by(self, target: str, mark: str) -> bool:
        try:
            return _mark(os.stat(self.full_path(target))) == mark
        except FileNotFoundError:
            return False


def _link_or_rename(source: str, target: str) -> None:
    """Give the file ``source`` the name ``target``, never replacing what is there (``FileExistsError``): a hard
    link then an unlink; a rename where the filesystem has no hard links."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
            raise
        if os.path.lexists(target):
            raise FileExistsError(target) from error
        os.rename(source, target)
        return
    os.unlink(source)


def _mark(stat: os.stat_result) -> str:
    """``device:inode`` of a directory, and ``device:inode:mtime_ns`` of a file (kept by a rename or a link)."""
    if stat.st_mode & 0o040000:
        return f"{stat.st_dev}:{stat.st_ino}"
    return f"{stat.st_dev}:{stat.st_ino}:{stat.st_mtime_ns}"


def _missing_folders(folder: str, root: str) -> list[str]:
    """The folders from ``folder`` up to (not including) ``root`` that do not exist yet, deepest first."""
    missing = []
    while folder.startswith(root + "/") and not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing
