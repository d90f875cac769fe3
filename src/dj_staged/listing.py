"""Listing the files of one section of a store, strictly, with each file's size and age.

One recursive listing per section (on S3 a single paginated ``ListObjectsV2``
without a delimiter). The walk is strict: a directory that cannot be listed
raises instead of being skipped (fsspec's generic default), because a partial
listing of live objects must never become a list of things to delete.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import fsspec

from ._datajoint import full_path

_MTIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "mtime_ns")


@dataclass(frozen=True)
class StoredFile:
    """A file in a store: its path relative to the store's root, size and modification time (None if unknown)."""

    path: str
    size: int
    mtime: float | None


def mtime_of(info: dict[str, Any]) -> float | None:
    """Modification time (POSIX seconds) from an fsspec info dict, whatever the backend calls it."""
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


def find_strict(fs: Any, path: str, **kwargs: Any) -> Any:
    """``fs.find`` that raises when a directory cannot be listed (fsspec's generic ``find`` skips it)."""
    if type(fs).find is fsspec.AbstractFileSystem.find:
        kwargs["on_error"] = "raise"
    return fs.find(path, **kwargs)


def list_files(backend: Any, section: str) -> dict[str, StoredFile]:
    """Every file under ``section`` (relative to the store root), keyed by its relative path."""
    fs = backend.fs
    fs.invalidate_cache()  # another process may have written since this filesystem last listed
    root = full_path(backend, "").rstrip("/")
    top = full_path(backend, section).rstrip("/")
    try:
        found = find_strict(fs, top, detail=True)
    except FileNotFoundError:
        return {}
    files: dict[str, StoredFile] = {}
    for full, info in found.items():
        if info.get("type", "file") != "file":
            continue
        relative = full[len(root) :].lstrip("/") if full.startswith(root) else full
        files[relative] = StoredFile(relative, int(info.get("size") or 0), mtime_of(info))
    return files


def delete_file(backend: Any, path: str, stop_at: str) -> None:
    """Delete one file, then prune the directories it leaves empty, up to (not including) ``stop_at``."""
    fs = backend.fs
    full = full_path(backend, path)
    fs.rm(full)
    if backend.protocol == "s3":
        return  # no directories to prune
    boundary = full_path(backend, stop_at).rstrip("/")
    parent = full.rsplit("/", 1)[0]
    while parent.startswith(boundary + "/"):
        try:
            if fs.ls(parent):
                break
            fs.rmdir(parent)
        except Exception:
            break
        parent = parent.rsplit("/", 1)[0]
