"""A resumable write to a local file: durable is what was fsynced, never merely what was written.

The file is written through the operating system's page cache as any other;
each time it grows past a multiple of the durable unit, a background thread
``fdatasync``s it (the caller goes on writing meanwhile) and then reports a
:class:`~dj_staged.stores.resumable.Checkpoint` at that multiple. A machine that
crashes can lose what came after the last checkpoint, never what came before.

The checkpoint names the file's device and inode and the CRC-32 of the last
mebibyte before the checkpoint (read back from the page cache once synced, so
writing computes no CRC). A resume checks the file is still that inode, holds
at least that many bytes, and that those bytes read back with that CRC (one
mebibyte read: a file replaced, truncated, or written over where the last
checkpoint was, is noticed); then it cuts the file at the durable offset,
dropping what may not have reached the disk, and writes on from there.
"""

from __future__ import annotations

import os
import queue
import threading
import zlib
from typing import Any

from ..durability import fsync_path
from .resumable import Checkpoint, OnCheckpoint, ResumableWriter, lost

_STOP = -1
TAIL = 1 << 20  # the bytes before a checkpoint its CRC covers


class LocalResumableWriter(ResumableWriter):
    """A resumable write of the file ``path`` (a filesystem path)."""

    def __init__(
        self,
        path: str,
        unit: int,
        on_checkpoint: OnCheckpoint,
        resume_from: Checkpoint | None = None,
        *,
        durable: bool = True,
    ) -> None:
        offset = resume_from.offset if resume_from is not None else 0
        if resume_from is not None:  # the unit the earlier attempt synced by: its CRCs cover its units
            unit = int(resume_from.state.get("unit") or unit)
        super().__init__(path, unit, on_checkpoint, offset)
        self._durable = durable
        if resume_from is None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._file = open(path, "w+b")  # noqa: SIM115 - closed by close(), discard() or suspend(); read by pread
        else:
            self._file = _reopen(path, resume_from, unit)
        stat = os.fstat(self._file.fileno())
        self._identity = {"device": stat.st_dev, "inode": stat.st_ino}
        self._written = offset
        self._pending: queue.Queue[int] = queue.Queue()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if self._error is not None:
            raise self._error
        view = memoryview(data).cast("B")
        rest = view
        while rest:
            room = self.unit - self._written % self.unit
            piece, rest = rest[:room], rest[room:]
            self._file.write(piece)
            self._written += len(piece)
            if self._written % self.unit == 0:
                self._boundary(self._written)
        return len(view)

    def _boundary(self, offset: int) -> None:
        """``offset`` bytes are written: have them synced, then reported, while the caller goes on."""
        self._file.flush()  # into the operating system's hands: what fdatasync covers and pread reads
        if self._thread is None:
            self._thread = threading.Thread(target=self._sync, name="dj-staged-checkpoint", daemon=True)
            self._thread.start()
        self._pending.put(offset)

    def _sync(self) -> None:
        while True:
            offset = self._pending.get()
            while not self._pending.empty():  # one sync covers every boundary written before it starts
                following = self._pending.get()
                offset = _STOP if following == _STOP or offset == _STOP else max(offset, following)
            if offset == _STOP:
                return
            try:
                if self._durable:
                    os.fdatasync(self._file.fileno())
                self.report(self._checkpoint(offset))
            except BaseException as error:  # raised in the caller's thread at its next write or close
                self._error = self._error or error
                return

    def _checkpoint(self, offset: int, *, complete: bool = False) -> Checkpoint:
        """The checkpoint at ``offset`` (flushed): the CRC-32 of the last ``TAIL`` bytes before it, in its unit. The
        file is written only past ``offset`` meanwhile, so reading it here (the page cache, a mebibyte) is safe."""
        unit_start = offset - offset % self.unit if offset % self.unit else offset - self.unit
        start = max(unit_start, offset - TAIL, 0)
        crc = zlib.crc32(os.pread(self._file.fileno(), offset - start, start))
        state = {**self._identity, "crc": crc, "crc_from": start, "unit": self.unit}
        return Checkpoint(offset, state, complete)

    def _stop(self) -> None:
        if self._thread is not None:
            self._pending.put(_STOP)
            self._thread.join()
            self._thread = None

    def tell(self) -> int:
        return self._written

    def close(self) -> None:
        """Sync what is left and report the whole file as a checkpoint."""
        if self.closed:
            return
        try:
            self._file.flush()
            self._stop()
            if self._error is not None:
                raise self._error
            if self._durable:
                os.fdatasync(self._file.fileno())
            self.report(self._checkpoint(self._written, complete=True))
        finally:
            self.closed = True
            self._file.close()

    def suspend(self) -> None:
        """Stop after the checkpoints under way: the durable prefix stays for a later writer."""
        if self.closed:
            return
        self.closed = True
        try:
            self._file.flush()
        finally:
            self._stop()
            self._file.close()

    def discard(self) -> None:
        """Close the file; the write's cleanup removes it."""
        self.suspend()

    def fileno(self) -> int:
        return self._file.fileno()


def _reopen(path: str, checkpoint: Checkpoint, unit: int) -> Any:
    """The file at ``path`` opened to go on at ``checkpoint``, after checking it holds that prefix unchanged."""
    state = checkpoint.state
    try:
        handle = open(path, "r+b")  # noqa: SIM115 - returned to the writer, which closes it
    except FileNotFoundError:
        raise lost(path, "the file is gone (collected, or removed)") from None
    try:
        stat = os.fstat(handle.fileno())
        if (stat.st_dev, stat.st_ino) != (state.get("device"), state.get("inode")):
            raise lost(path, "it is another file now (replaced since it was written)")
        if stat.st_size < checkpoint.offset:
            raise lost(path, f"it holds {stat.st_size} bytes, fewer than the {checkpoint.offset} made durable")
        start = int(state.get("crc_from", 0))
        if state.get("crc") is not None and checkpoint.offset > start:
            handle.seek(start)
            if zlib.crc32(handle.read(checkpoint.offset - start)) != state["crc"]:
                raise lost(path, f"its bytes {start}-{checkpoint.offset} changed since they were made durable")
        handle.truncate(checkpoint.offset)
        handle.seek(checkpoint.offset)
    except BaseException:
        handle.close()
        raise
    return handle


def sync_paths(paths: list[str], root: str) -> None:
    """fsync each file of ``paths`` and each folder that holds one, up to (not including) ``root``."""
    folders: set[str] = set()
    for path in paths:
        fsync_path(path)
        folder = os.path.dirname(path)
        while folder.startswith(root + "/") and folder not in folders:
            folders.add(folder)
            folder = os.path.dirname(folder)
    for folder in sorted(folders, key=len, reverse=True):
        fsync_path(folder)
