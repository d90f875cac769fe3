"""DataJoint's content hash, computed alongside the caller's writes or by one streaming re-read.

The hash is ``datajoint.hash_registry.compute_hash``'s: MD5 of the stored bytes,
base32, padding stripped, lowercase. ``compute_hash`` takes the content in one
``bytes`` object; :class:`StreamingMD5` feeds the same digest piece by piece so
nothing is held in memory, and :func:`encode_digest` is checked against it in the
tests.

MD5 is most of the cost of a hash-addressed write, and ``hashlib`` releases the
GIL for large buffers, so once a stream is large the digest runs in a
background thread while the caller's thread writes: the write and the hash of
the same bytes overlap on two cores. The queue between them is bounded, so
memory stays flat however fast the caller writes. A piece is handed over
without a copy: ``bytes`` cannot change, and a buffer the caller may reuse is
hashed by the caller's thread while the background thread writes it, the
write returning once both are done (a copy of every piece cost a tenth of the
hash's own CPU time, which two writers on two cores pay in wall time; hashing
it in the background instead would put two thread wake-ups a piece on the
critical path). A write that mostly waits
for uploads running in other threads (S3) hashes in the caller's thread
instead: the wait overlaps the hash anyway, and the queue would hold copies
of the pieces (36 MiB) for nothing.
"""

from __future__ import annotations

import base64
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

from fsspec.callbacks import DEFAULT_CALLBACK, Callback

from ..stores.base import StagedStore

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

CHUNK = 8 << 20  # re-read chunk
PIECE = 4 << 20  # the largest piece handed to the hashing thread at once
_INLINE = 8 << 20  # a stream shorter than this is hashed inline: a thread is not worth it
_SMALL = 64 << 10  # pieces below this are gathered into one before being handed over
OVERLAP = 1 << 20  # a resumable write hashes a piece of this size while it writes the one before


_hashers: ThreadPoolExecutor | None = None


def hashers() -> ThreadPoolExecutor:
    """The threads resumable writes hash in, started at first use; a forked child starts its own."""
    global _hashers
    if _hashers is None:
        _hashers = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="dj-staged-md5")
    return _hashers


def _forget_hashers() -> None:
    global _hashers
    _hashers = None  # a forked child holds the pool, not its threads


os.register_at_fork(after_in_child=_forget_hashers)
_QUEUED = 8  # pieces waiting for the hashing thread at most (bounded memory)


class Digest(Protocol):
    """An MD5 being fed or finished: ``hashlib``'s, or :class:`~dj_staged.addressing.md5state.ResumableMD5`."""

    def digest(self) -> bytes: ...


def encode_digest(md5: Digest) -> str:
    """The 26-character form ``compute_hash`` gives for the bytes fed to ``md5``."""
    return base64.b32encode(md5.digest()).decode("ascii").rstrip("=").lower()


class _Write:
    """A piece the stream's thread writes while the caller's thread hashes it, and what the write raised."""

    __slots__ = ("error", "piece", "write")

    def __init__(self, write: Callable[[memoryview], object], piece: memoryview) -> None:
        self.write, self.piece = write, piece
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.write(self.piece)
        except BaseException as error:  # raised again in the caller's thread
            self.error = error


class StreamingMD5:
    """MD5 of a byte stream fed in order with :meth:`update`; large streams are hashed in a background thread.

    A piece handed over is not copied when it cannot change (``bytes``). A
    buffer the caller may reuse once ``write`` returns is not copied either
    when :meth:`update` is given the ``write`` for it: the caller's thread
    hashes it while the stream's thread writes it (the shorter of the two),
    and :meth:`update` returns once both are over. An error in the thread is
    raised at the next :meth:`update` or at :meth:`result`; :meth:`close`
    stops the thread. ``threaded=False`` hashes every piece in the caller's
    thread.
    """

    def __init__(self, threaded: bool = True) -> None:
        self._threaded = threaded
        self._md5 = hashlib.md5()
        self._fed = 0
        self._gathered = bytearray()
        self._queue: queue.Queue[ReadableBuffer | _Write | None] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._stopping = False

    def update(self, view: memoryview, write: Callable[[memoryview], object] | None = None) -> None:
        """Feed the next piece of the stream and, if given, ``write`` it: both are over when this returns."""
        if self._error is not None:
            raise self._error
        self._fed += len(view)
        if self._inline() or len(view) < _SMALL:
            self._update_here(view)
            if write is not None:
                write(view)
            return
        if self._gathered:
            self._hand_over(bytes(self._gathered))
            self._gathered.clear()
        if write is not None and not isinstance(view.obj, bytes):
            self._hash_while_written(view, write)
            return
        for start in range(0, len(view), PIECE):
            piece = view[start : start + PIECE]
            self._hand_over(piece if isinstance(view.obj, bytes) else bytes(piece))
            if write is not None:
                write(piece)

    def _hash_while_written(self, view: memoryview, write: Callable[[memoryview], object]) -> None:
        """Hash ``view`` here, piece by piece, while the stream's thread writes each piece."""
        self._start()
        assert self._queue is not None
        self._queue.join()  # what was handed over before is hashed first
        if self._error is not None:
            raise self._error
        for start in range(0, len(view), PIECE):
            job = _Write(write, view[start : start + PIECE])
            self._queue.put(job)
            try:
                self._md5.update(job.piece)
            finally:
                self._queue.join()  # even on an interrupt: the caller's buffer is not read after this returns
            if job.error is not None:
                raise job.error

    def _inline(self) -> bool:
        """Whether a piece is hashed in the caller's thread: the stream is short so far, or no thread is wanted."""
        return self._queue is None and (self._fed <= _INLINE or not self._threaded)

    def _update_here(self, view: memoryview) -> None:
        """A short stream's piece is hashed now; a small piece of a long one is gathered into a larger one."""
        if self._inline():
            self._md5.update(view)
            return
        self._gathered += view
        if len(self._gathered) >= PIECE:
            self._hand_over(bytes(self._gathered))
            self._gathered.clear()

    def _start(self) -> None:
        if self._queue is None:
            self._queue = queue.Queue(maxsize=_QUEUED)
            self._thread = threading.Thread(target=self._run, name="dj-staged-md5", daemon=True)
            self._thread.start()

    def _hand_over(self, piece: ReadableBuffer) -> None:
        self._start()
        assert self._queue is not None
        self._queue.put(piece)

    def _run(self) -> None:
        assert self._queue is not None
        while (piece := self._queue.get()) is not None:
            if isinstance(piece, _Write):
                piece.run()
            elif self._error is None and not self._stopping:
                try:
                    self._md5.update(piece)
                except BaseException as error:  # surfaces in the caller's thread
                    self._error = error
            self._queue.task_done()

    def result(self) -> hashlib._Hash:
        """The finished digest (a ``hashlib`` MD5 object); waits for the thread."""
        if self._gathered:
            if self._queue is None:
                self._md5.update(self._gathered)
            else:
                self._hand_over(bytes(self._gathered))
            self._gathered.clear()
        self.close()
        if self._error is not None:
            raise self._error
        return self._md5

    def close(self) -> None:
        """Stop the hashing thread (after what was handed over), whatever happened; idempotent."""
        if self._thread is None:
            return
        assert self._queue is not None
        if self._error is not None:
            self._stopping = True
        self._queue.put(None)
        self._thread.join()
        self._thread = None


def rehash(store: StagedStore, path: str, prefix: bytes = b"", callback: Callback = DEFAULT_CALLBACK) -> hashlib._Hash:
    """MD5 of ``prefix`` followed by the object at ``path``, read once while the previous chunk is hashed."""
    md5 = hashlib.md5(prefix)
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def read() -> None:
        try:
            with store.open_read(path) as source:
                while not stop.is_set() and (chunk := source.read(CHUNK)):
                    chunks.put(chunk)
        except BaseException as error:
            chunks.put(error)
            return
        chunks.put(None)

    reader = threading.Thread(target=read, name="dj-staged-reread", daemon=True)
    reader.start()
    try:
        while (chunk := chunks.get()) is not None:
            if isinstance(chunk, BaseException):
                raise chunk
            md5.update(chunk)
            callback.relative_update(len(chunk))
    finally:
        stop.set()
        while reader.is_alive():
            try:
                chunks.get(timeout=0.1)
            except queue.Empty:
                continue
        reader.join()
    return md5
