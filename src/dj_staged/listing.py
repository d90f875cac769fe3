"""Listing the files of one section of a store, strictly, with each file's size and age.

One recursive listing per section: on S3 a single paginated ``ListObjectsV2``
without a delimiter, and nothing else (s3fs's ``find`` adds a ``HeadObject``
and a second listing when the prefix is empty). The walk is strict: a
directory that cannot be listed raises instead of being skipped (fsspec's
generic default), because a partial listing of live objects must never become
a list of things to delete. :func:`list_folder` lists one level (the folders
directly under a prefix), :func:`delete_keys` deletes many S3 keys per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import fsspec

from ._datajoint import call_s3, full_path

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


def fresh(fs: Any, path: str) -> str:
    """``path``, after forgetting what ``fs`` cached of it and of its parents, so the next call asks the store.

    An object store's filesystem (s3fs) keeps its listings; another instance
    (Zarr's own, a Dask worker's) or another process writing meanwhile makes
    them stale. A decision about what is in the store must never rest on one.
    """
    fs.invalidate_cache(path)
    return path


def find_strict(fs: Any, path: str, **kwargs: Any) -> Any:
    """``fs.find`` that raises when a directory cannot be listed (fsspec's generic ``find`` skips it)."""
    if type(fs).find is fsspec.AbstractFileSystem.find:
        kwargs["on_error"] = "raise"
    return fs.find(path, **kwargs)


def list_files(backend: Any, section: str) -> dict[str, StoredFile]:
    """Every file under ``section`` (relative to the store root), keyed by its relative path."""
    if backend.protocol == "s3":
        return {f.path: f for f in _list_s3(backend, section, delimiter="")[1]}
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


def list_folder(backend: Any, prefix: str) -> tuple[set[str], dict[str, StoredFile]]:
    """One level under ``prefix``: the names of the folders there, and the files there (keyed by relative path)."""
    if backend.protocol == "s3":
        s3_folders, s3_files = _list_s3(backend, prefix, delimiter="/")
        return s3_folders, {f.path: f for f in s3_files}
    fs = backend.fs
    fs.invalidate_cache()
    root = full_path(backend, "").rstrip("/")
    try:
        entries = fs.ls(full_path(backend, prefix).rstrip("/"), detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return set(), {}
    folders: set[str] = set()
    files: dict[str, StoredFile] = {}
    for info in entries:
        full = info["name"].rstrip("/")
        if info.get("type") == "directory":
            folders.add(full.rsplit("/", 1)[-1])
        else:
            relative = full[len(root) :].lstrip("/") if full.startswith(root) else full
            files[relative] = StoredFile(relative, int(info.get("size") or 0), mtime_of(info))
    return folders, files


def bucket_and_key(backend: Any, path: str) -> tuple[str, str]:
    """The S3 bucket and key of ``path`` (relative to the store's location)."""
    bucket, _, key = full_path(backend, path).partition("/")
    return bucket, key


def _list_s3(backend: Any, section: str, *, delimiter: str) -> tuple[set[str], list[StoredFile]]:
    """One paginated ``ListObjectsV2`` of ``section/``: the folder names (with a delimiter) and the files."""
    bucket, root = bucket_and_key(backend, "")
    root = root.strip("/")
    _, key = bucket_and_key(backend, section)
    prefix = key.strip("/") + "/" if key.strip("/") else ""
    options: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if delimiter:
        options["Delimiter"] = delimiter
    folders: set[str] = set()
    files: list[StoredFile] = []
    while True:
        page = call_s3(backend.fs, "list_objects_v2", **options)
        for common in page.get("CommonPrefixes", []):
            folders.add(common["Prefix"][len(prefix) :].strip("/"))
        for item in page.get("Contents", []):
            name = item["Key"]
            if name.endswith("/"):
                continue  # a folder placeholder, not an object
            relative = name[len(root) :].lstrip("/") if root and name.startswith(root + "/") else name
            files.append(StoredFile(relative, int(item.get("Size") or 0), mtime_of(item)))
        if not page.get("IsTruncated"):
            return folders, files
        options["ContinuationToken"] = page["NextContinuationToken"]


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


S3_DELETE_BATCH = 1000  # keys per DeleteObjects request, S3's limit


def delete_keys(backend: Any, paths: list[str]) -> dict[str, str]:
    """Delete up to 1,000 S3 objects in one ``DeleteObjects`` request; return path → error for those that failed."""
    if not paths:
        return {}
    if len(paths) > S3_DELETE_BATCH:
        raise ValueError(f"one DeleteObjects request takes at most {S3_DELETE_BATCH:,} keys")
    bucket, _ = bucket_and_key(backend, "")
    keys = {bucket_and_key(backend, path)[1]: path for path in paths}
    response = call_s3(
        backend.fs, "delete_objects", Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
    )
    backend.fs.invalidate_cache()
    return {
        keys.get(error.get("Key"), error.get("Key")): f"{error.get('Code')}: {error.get('Message')}"
        for error in response.get("Errors", [])
    }
