"""The file handle ``staged.open()`` returns: what the caller writes, exactly, durably, and checked.

A :class:`StagedFile` wraps the store's own file object and adds four things:

- **content-relative offsets**: a hash-addressed object stores a codec prefix
  (an attachment's file name, a blob header) before the caller's content;
  ``tell()``, ``seek()`` and ``truncate()`` address the content, never the prefix;
- **hashing while writing**: with ``hashing=True`` the stored bytes are fed to
  MD5 as they are written, in a background thread for large streams (in the
  caller's where the store uploads in threads of its own, which the caller waits
  for anyway); any seek or truncate gives that up (finalization re-reads the
  object instead);
- **early write-back**: on a local store that must be durable, the disk is asked to
  write what came before while the caller goes on writing (a background
  ``fdatasync`` every 64 MiB), so the fsync before the commit finds little left;
- **a record of what was written** (an :class:`~dj_staged.stores.base.ObjectIdentity`:
  size, and on a local store the inode), which finalization compares with what
  is in the store (fencing: an object removed or replaced meanwhile fails the commit).

A resumable handle (``resume=True``) wraps a store's
:class:`~dj_staged.stores.resumable.ResumableWriter`, which may start where an
earlier attempt's durable prefix ends (``tell()`` says where, in the content).
It hashes in the caller's thread with an MD5 whose state is saved at each
durable unit (:mod:`~dj_staged.addressing.md5state`), so each checkpoint
carries the digest at its offset; it writes in order only.

Anything else (``read``, ``readable``, ``name``) is the wrapped file's.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from ..stores.base import ObjectIdentity, StagedStore, WriteHandle
from ..stores.resumable import ResumableWriter, mark_store_failure
from .hashing import OVERLAP, Digest, StreamingMD5, hashers
from .md5state import ResumableMD5
from .resumption import Resumption

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

logger = logging.getLogger(__name__)


class _Writeback:
    """Asks the disk to write a file's data in a background thread while the caller goes on writing.

    An error there is kept and raised at close: the kernel reports a write-back
    error to one sync call only, so the final fsync could miss it.
    """

    EVERY = 64 << 20

    def __init__(self, descriptor: int) -> None:
        self._descriptor = descriptor
        self._pending = 0
        self._wake: threading.Event | None = None  # made with the thread, for files large enough to need one
        self._stopping = False
        self._error: OSError | None = None
        self._thread: threading.Thread | None = None

    def wrote(self, size: int) -> None:
        self._pending += size
        if self._pending < self.EVERY:
            return
        self._pending = 0
        if self._thread is None:
            self._wake = threading.Event()
            self._thread = threading.Thread(target=self._run, name="dj-staged-writeback", daemon=True)
            self._thread.start()
        assert self._wake is not None
        self._wake.set()

    def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                os.fdatasync(self._descriptor)
            except OSError as error:
                self._error = self._error or error

    def stop(self) -> None:
        """Wait for the background sync to end; raise the error it met, if any."""
        if self._thread is not None and self._wake is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error


class StagedFile:
    """A write handle on one staged object; see the module docstring."""

    HEAD = 64 << 10  # the first bytes of the content, kept so a codec can read a header without reopening

    def __init__(
        self,
        raw: WriteHandle | ResumableWriter,
        store: StagedStore,
        *,
        prefix: bytes = b"",
        hashing: bool = False,
        writeback: bool = False,
        resumption: Resumption | None = None,
        md5: ResumableMD5 | None = None,
    ) -> None:
        self._raw = raw
        self._store = store
        self._offset = len(prefix)
        self._head = bytearray()
        self._resumption = resumption
        self._md5: ResumableMD5 | StreamingMD5 | None = None
        if hashing:
            self._md5 = (
                (md5 or ResumableMD5())
                if resumption is not None
                else StreamingMD5(threaded=not store.uploads_in_background)
            )
        self._writeback: _Writeback | None = None
        if writeback and resumption is None:  # a resumable writer syncs at its own pace
            descriptor = self._descriptor()
            self._writeback = _Writeback(descriptor) if descriptor is not None else None
        self.sequential = True
        self.resumed = isinstance(raw, ResumableWriter) and raw.resumed_at > 0  # the prefix is there already
        self.record: ObjectIdentity | None = None
        if prefix and not self.resumed:
            self._write(memoryview(prefix))

    def write(self, data: ReadableBuffer) -> int:
        """Write ``data`` after the content written so far (or at the position a ``seek`` chose)."""
        view = memoryview(data).cast("B")
        self._write(view)
        return len(view)

    def _write(self, view: memoryview) -> None:
        try:
            self._write_through(view)
        except Exception as error:
            mark_store_failure(error)
            raise

    def _write_through(self, view: memoryview) -> None:
        if self.sequential and not self.resumed and len(self._head) < self.HEAD + self._offset:
            self._head += view[: self.HEAD + self._offset - len(self._head)]
        if self._resumption is not None and self._md5 is not None:
            self._write_hashed_in_units(view)
        elif self._md5 is None or not self.sequential:
            self._raw.write(view)
        else:
            assert isinstance(self._md5, StreamingMD5)  # a resumable write's MD5 is hashed in units, above
            self._md5.update(view, self._raw.write)  # each piece hashed while it is written
        if self._writeback is not None:
            self._writeback.wrote(len(view))

    def _write_hashed_in_units(self, view: memoryview) -> None:
        """Hash and write ``view`` in pieces that end at the writer's durable units, saving the MD5's state at each
        unit's end before its bytes reach the writer (which may record that unit's checkpoint at once). A piece is
        hashed in another thread (OpenSSL's MD5 runs without the GIL) while the one before it is written."""
        assert self._resumption is not None and isinstance(self._raw, ResumableWriter)
        assert isinstance(self._md5, ResumableMD5)
        unit, position, hashed = self._raw.unit, self._raw.tell(), memoryview(b"")
        while view:
            size = min(unit - position % unit, OVERLAP)
            piece, view = view[:size], view[size:]
            hashing = hashers().submit(self._md5.update, piece)  # while the piece hashed before is written
            self._raw.write(hashed)
            hashing.result()
            position += len(piece)
            if position % unit == 0:
                self._resumption.digest_at(position, self._md5.state())
            hashed = piece
        self._raw.write(hashed)  # every piece is written before the caller may reuse its buffer

    def writelines(self, lines: Iterable[ReadableBuffer]) -> None:
        for line in lines:
            self.write(line)

    def _not_sequential(self) -> None:
        if self.sequential and isinstance(self._md5, StreamingMD5):
            self._md5.close()
        self.sequential = False

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to ``offset`` in the content (``whence`` as for ``io``); never before the content's start."""
        if self._resumption is not None:
            if (offset, whence) in ((0, io.SEEK_CUR), (self.tell(), io.SEEK_SET), (0, io.SEEK_END)):
                return self.tell()  # where it is: what copying helpers ask
            raise io.UnsupportedOperation("a resumable write is written in order; it cannot seek")
        if whence == io.SEEK_SET:
            if offset < 0:
                raise ValueError(f"negative seek position {offset}")
            target: int = self._raw.seek(offset + self._offset, io.SEEK_SET)
        else:
            current = self._raw.tell() if whence == io.SEEK_CUR else None
            target = self._raw.seek(offset, whence)
            if target < self._offset:
                self._raw.seek(current if current is not None else self._offset, io.SEEK_SET)
                raise ValueError(f"seek to {target - self._offset} would be before the start of the content")
        self._not_sequential()
        return target - self._offset

    def tell(self) -> int:
        """The position in the content."""
        return cast(int, self._raw.tell()) - self._offset

    def truncate(self, size: int | None = None) -> int:
        """Cut the content at ``size`` (default: the current position)."""
        if size is not None and size < 0:
            raise ValueError(f"negative size {size}")
        if self._resumption is not None:
            raise io.UnsupportedOperation("a resumable write is written in order; it cannot truncate")
        self._not_sequential()
        result: int | None = self._raw.truncate() if size is None else self._raw.truncate(size + self._offset)
        return (result if result is not None else self._raw.tell()) - self._offset

    def flush(self) -> None:
        self._raw.flush()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return bool(self._raw.seekable())

    @property
    def closed(self) -> bool:
        return bool(self._raw.closed)

    @property
    def head(self) -> bytes | None:
        """The first bytes (up to 64 KiB) of the content as written, or None after a seek or truncate (or when an
        earlier attempt wrote them)."""
        return bytes(self._head[self._offset :]) if self.sequential and not self.resumed else None

    @property
    def content_offset(self) -> int:
        """Bytes stored before the caller's content."""
        return self._offset

    def digest(self) -> Digest | None:
        """The MD5 of the stored bytes computed while writing, or None if it was not (or could not be) kept."""
        if self._md5 is None or not self.sequential:
            return None
        if isinstance(self._md5, ResumableMD5):
            return self._md5
        return self._md5.result()

    def close(self) -> None:
        """Flush, record what was written, close; idempotent."""
        if self.closed:
            return
        if self._resumption is not None:
            self._close_resumable()
            return
        try:
            self._raw.flush()
            self.record = self._identify()
        except BaseException:
            self.abort()
            raise
        self._raw.close()

    def _close_resumable(self) -> None:
        """Complete the object (its last checkpoint says so); a failure leaves it to the block to resume or drop."""
        assert self._resumption is not None and isinstance(self._raw, ResumableWriter)
        if isinstance(self._md5, ResumableMD5) and self.sequential:
            self._resumption.digest_at(self._raw.tell(), self._md5.state())
        try:
            self._raw.close()
        except Exception as error:
            mark_store_failure(error)
            raise
        descriptor = getattr(self._raw, "fileno", None)
        self.record = ObjectIdentity(self._raw.tell())
        if callable(descriptor):
            stat = os.stat(self._raw.path)
            self.record = ObjectIdentity(stat.st_size, str(stat.st_ino))

    @property
    def resumable(self) -> bool:
        """Whether this handle writes a resumable write (``resume=True``)."""
        return isinstance(self._raw, ResumableWriter)

    def suspend(self) -> None:
        """Stop writing and keep the durable prefix for a later attempt (an interrupted resumable write)."""
        if isinstance(self._raw, ResumableWriter) and not self._raw.closed:
            try:
                self._raw.suspend()
            except Exception:
                logger.warning("Stopping a resumable write failed; its last checkpoint stands", exc_info=True)

    def _descriptor(self) -> int | None:
        """The operating system's descriptor of the wrapped file, if it is a local one."""
        fileno = getattr(self._raw, "fileno", None)
        if not callable(fileno):
            return None
        try:
            return int(fileno())
        except (OSError, ValueError, io.UnsupportedOperation):
            return None

    def _identify(self) -> ObjectIdentity:
        descriptor = self._descriptor()
        if descriptor is None:
            return ObjectIdentity(int(self._raw.tell()))
        if self._writeback is not None:
            self._writeback.stop()
        stat = os.fstat(descriptor)
        return ObjectIdentity(stat.st_size, str(stat.st_ino))

    def stop_threads(self) -> None:
        """End the hashing and write-back threads, whatever state the handle is in (the block is over)."""
        if isinstance(self._md5, StreamingMD5):
            self._md5.close()
        if self._writeback is not None:
            with contextlib.suppress(OSError):  # sync errors matter only to a commit, which is past or not coming
                self._writeback.stop()

    def abort(self) -> None:
        """Close without finishing the object: an upload in parts is abandoned, not completed."""
        self.stop_threads()
        if isinstance(self._raw, ResumableWriter):  # even once stopped: what it keeps for a resume goes too
            try:
                self._raw.discard()
            except Exception:
                logger.warning("Abandoning a resumable upload failed; `dj-staged gc` reclaims it later", exc_info=True)
            return
        if self.closed:
            return
        try:
            self._store.discard(self._raw)
        except Exception:
            logger.warning("Abandoning an upload failed; `dj-staged gc` reclaims it later", exc_info=True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def __enter__(self) -> StagedFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        elif isinstance(self._raw, ResumableWriter):
            self.suspend()  # the block decides: keep the durable prefix (interrupted) or abort it (unwound)
        else:
            self.abort()  # the caller's own block failed: do not complete a partial object
