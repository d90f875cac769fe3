"""The checkpoints of a resumable ``store()`` directory (a Zarr array, say), and resuming one.

A file written through the handle is complete once its write returns (an
object store's ``PUT`` is whole or nothing; a local file is closed). Each time
the files written since the last checkpoint reach the durable unit (or 1,000
files), they are made durable (fsynced, with their folders, on a local store)
and recorded, with their sizes, in one more checkpoint file of the lease;
removals made through the handle are recorded too (``zarr.open(...,
mode="w")`` empties the directory). An interrupted block records what it wrote
last before it lets go.

A later attempt sums the checkpoints up: the durable files and their sizes.
Every one must still be there with its size, else the directory starts over
(a :class:`~dj_staged.errors.ResumeRestartedWarning` says which file is
missing or changed, and the directory is emptied); a file that is there but
was never recorded (written after the last checkpoint, perhaps half) is
removed. The handle's ``durable`` attribute lists the durable keys, which the
caller skips (open the array with ``mode="a"`` to keep them).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..errors import ResumeRestartedWarning, warn
from ..protocol import StagedField

MAX_FILES = 1000  # files recorded per checkpoint at most


class DirectoryCheckpoints:
    """Records the files written through one resumable ``store()`` handle, a checkpoint at a time."""

    def __init__(self, field: StagedField, path: str, durable: dict[str, int]) -> None:
        self.field = field
        self.path = path
        self.root = field.full_path(path).rstrip("/")
        self.durable = dict(durable)  # key -> size, recorded
        self._pending: dict[str, int] = {}
        self._removed: list[str] = []
        self._bytes = 0
        self._lock = threading.Lock()

    def key(self, full: str) -> str | None:
        """The key of the filesystem path ``full`` in the directory (None outside it)."""
        full = full.rstrip("/")
        if full == self.root:
            return ""
        return full[len(self.root) + 1 :] if full.startswith(self.root + "/") else None

    def wrote(self, full: str, size: int) -> None:
        """A file was written whole through the handle; record it once enough is pending."""
        key = self.key(full)
        if not key:
            return
        with self._lock:
            self._pending[key] = size
            self._bytes += size
            due = self._bytes >= self.field.store.part_size or len(self._pending) >= MAX_FILES
        if due:
            self.flush()

    def removed(self, full: str) -> None:
        """Files were removed through the handle (``full`` and everything under it)."""
        key = self.key(full)
        if key is None:
            return
        with self._lock:
            for known in (self.durable, self._pending):
                for name in [k for k in known if _under(k, key)]:
                    del known[name]
            self._removed.append(key)
        self.flush()

    def flush(self) -> None:
        """Make the pending files durable and record them (and the removals) in one checkpoint."""
        with self._lock:
            if not self._pending and not self._removed:
                return
            files, removed = dict(self._pending), list(self._removed)
            self.field.store.make_durable(f"{self.path}/{key}" for key in files)
            doc = {"kind": "directory", "path": self.path, "files": files, "removed": removed, "at": time.time()}
            self.field.checkpoint(doc, part=True)
            self.durable.update(files)
            self._pending.clear()
            self._removed.clear()
            self._bytes = 0


def _under(key: str, removed: str) -> bool:
    return removed == "" or key == removed or key.startswith(removed + "/")


def recorded_files(docs: list[dict[str, Any]]) -> dict[str, int]:
    """The durable files (key -> size) the checkpoints of a directory add up to, in order."""
    files: dict[str, int] = {}
    for doc in docs:
        for removed in doc.get("removed", []):
            for key in [k for k in files if _under(k, removed)]:
                del files[key]
        files.update({key: int(size) for key, size in doc.get("files", {}).items()})
    return files


def resume_directory(field: StagedField, path: str, docs: list[dict[str, Any]]) -> DirectoryCheckpoints:
    """The checkpoints of the directory ``path``, going on from ``docs`` when everything they record is there;
    else from empty, after a warning that says why. Files there that no checkpoint records are removed."""
    store = field.store
    recorded = recorded_files(docs)
    root = field.full_path(path).rstrip("/")
    store.forget(path)
    try:
        listed = store.directory_files(path) if docs else {}
    except FileNotFoundError:
        listed = {}
    found = {
        full.rstrip("/")[len(root) + 1 :]: int(info.get("size") or 0)
        for full, info in listed.items()
        if info.get("type") != "directory"
    }
    checkpoints = DirectoryCheckpoints(field, path, recorded)
    problem = next(
        (
            f"its file {key} is {'gone' if key not in found else f'{found[key]} bytes, not {size}'}"
            for key, size in sorted(recorded.items())
            if found.get(key) != size
        ),
        None,
    )
    if problem is not None:
        warn(
            f"{field.label}: what an earlier attempt wrote cannot be resumed, so the directory is written from empty "
            f"(its handle's durable keys are none): {problem}",
            ResumeRestartedWarning,
        )
        store.remove(path)
        checkpoints.durable = {}
        checkpoints._removed.append("")
        checkpoints.flush()
        return checkpoints
    for key in sorted(set(found) - set(recorded)):  # written after the last checkpoint: maybe half
        store.remove(f"{path}/{key}")
    return checkpoints
