"""Listing and deleting files of one section of a store, with the age of each file.

The walk is strict: a directory that cannot be listed raises instead of being
skipped silently (fsspec's default), because a partial listing of live objects
must never turn into a list of things to delete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

logger = logging.getLogger(__name__)

_MTIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "mtime_ns")


@dataclass(frozen=True)
class StoredFile:
    """A file in a store: its size and modification time (POSIX seconds, None when the store has none)."""

    path: str
    size: int
    mtime: float | None


def section_path(*parts: str) -> str:
    """Join non-empty path parts with ``/``."""
    return "/".join(part.strip("/") for part in parts if part and part.strip("/"))


def mtime_of(info: dict[str, Any]) -> float | None:
    """Modification time from an fsspec info dict, whatever the backend calls it."""
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


def list_files(backend: Any, section: str) -> dict[str, StoredFile]:
    """Every file under ``section`` (relative to the store root), keyed by its relative path."""
    fs = backend.fs
    fs.invalidate_cache()  # another process may have written since this filesystem last listed
    root = backend._full_path("").rstrip("/")
    top = backend._full_path(section).rstrip("/")
    if not fs.exists(top):
        return {}
    files: dict[str, StoredFile] = {}
    for folder, _dirs, entries in fs.walk(top, detail=True, on_error="raise"):
        for name, info in entries.items():
            if info.get("type", "file") != "file":
                continue
            full = f"{folder.rstrip('/')}/{name}"
            relative = full[len(root) :].lstrip("/")
            files[relative] = StoredFile(relative, int(info.get("size") or 0), mtime_of(info))
    return files


def delete_file(backend: Any, path: str, stop_at: str) -> None:
    """Delete one file, then prune the directories it leaves empty, up to (not including) ``stop_at``."""
    fs = backend.fs
    full = backend._full_path(path)
    fs.rm(full)
    boundary = backend._full_path(stop_at).rstrip("/")
    parent = full.rsplit("/", 1)[0]
    while parent.startswith(boundary + "/"):
        try:
            if fs.ls(parent):
                break
            fs.rmdir(parent)
        except Exception:
            break
        parent = parent.rsplit("/", 1)[0]
