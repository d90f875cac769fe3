"""Making what a staged write put in a local store durable before its row commits.

PostgreSQL makes a committed row durable; without this, a power loss right
after the commit could leave the row pointing at a truncated or missing file.
So on a local store every file written through a handle is fsynced (a Zarr
directory's chunk files included), and so is each directory that gained an
entry, before the ``INSERT``. On S3 a completed upload is already durable.

``DJ_STAGED_DURABLE=0`` (also ``false``, ``no``, ``off``) turns this off for
scratch data: a crash of the machine shortly after a commit may then lose the
bytes of a committed row.
"""

from __future__ import annotations

import os
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


def fsync_path(path: str) -> None:
    """fsync the file or directory at ``path`` (a read-only descriptor suffices on Linux)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_files(paths: Iterable[str]) -> None:
    """fsync every file in ``paths``, several at a time."""
    paths = list(paths)
    if len(paths) <= 1:
        for path in paths:
            fsync_path(path)
        return
    with ThreadPoolExecutor(max_workers=_PARALLEL, thread_name_prefix="dj-staged-fsync") as pool:
        list(pool.map(fsync_path, paths))


def fsync_directories(path: str, root: str) -> None:
    """fsync ``path`` (a directory) and each parent up to and including ``root``: every entry they gained."""
    root = root.rstrip("/")
    current = path.rstrip("/")
    while True:
        fsync_path(current)
        if current == root or not current.startswith(root + "/"):
            return
        current = os.path.dirname(current)


def fsync_tree(directory: str, files: Iterable[str], root: str) -> None:
    """fsync the ``files`` of a directory value, every directory under it, and its parents up to ``root``."""
    files = list(files)
    fsync_files(files)
    top = directory.rstrip("/")
    folders: set[str] = set()
    for file in files:
        folder = os.path.dirname(file)
        while folder.startswith(top + "/") and folder not in folders:
            folders.add(folder)
            folder = os.path.dirname(folder)
    for folder in sorted(folders, key=len, reverse=True):
        fsync_path(folder)
    fsync_directories(top, root)
