"""What a resumable write is to the store layer: a writer that reports its durable prefix, and the checkpoint it
reports, from which a later writer goes on.

Each store makes its bytes durable by its service's own mechanism and says so
in a :class:`Checkpoint`: a local file fsynced up to an offset (with its inode
and the CRC-32 of its last durable part, so a file replaced, truncated or
overwritten is noticed), the parts of an S3 multipart upload (its upload id and
a digest of the parts' ETags, checked against ``ListParts``), a GCS resumable
session (its URI, and the offset the service holds), the uncommitted blocks of
an Azure block blob (their count and size, checked against ``Get Block List``).
Writers call ``on_checkpoint`` in offset order, from any thread, once the bytes
up to ``offset`` would survive the writer's death (and, on a local store, the
machine's crash).

A writer opened with ``resume_from`` first checks that the service still holds
that prefix, exactly; if it does not, it raises
:class:`~dj_staged.errors.DurablePrefixLostError` saying why, and the caller
writes from byte 0 instead: a wrong prefix is never stitched to new bytes.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import DurablePrefixLostError
from .writers import WriteOnlyFile


@dataclass(frozen=True)
class Checkpoint:
    """A durable prefix of a resumable write: ``offset`` bytes, and what the store needs to go on from there
    (JSON); ``complete``: the object itself exists, whole."""

    offset: int
    state: dict[str, Any] = field(default_factory=dict)
    complete: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"offset": self.offset, "state": self.state, "complete": self.complete}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        return cls(int(data["offset"]), dict(data.get("state") or {}), bool(data.get("complete")))


OnCheckpoint = Callable[[Checkpoint], None]


STORE_FAILURE = "_dj_staged_store_failure"
_SERVICE_LIBRARIES = ("botocore", "aiobotocore", "s3fs", "gcsfs", "google", "azure", "adlfs", "aiohttp", "urllib3")


def mark_store_failure(error: BaseException) -> None:
    """Mark ``error`` as the store's (an ``OSError``, or an error of a storage service's library), raised through a
    handle: a write it interrupts is an interruption, not an error of the caller's code, and may be resumed."""
    module = type(error).__module__.split(".", 1)[0]
    if isinstance(error, OSError) or module in _SERVICE_LIBRARIES:
        with contextlib.suppress(AttributeError, TypeError):  # a type that takes no attributes: not resumable
            setattr(error, STORE_FAILURE, True)


def is_store_failure(error: BaseException) -> bool:
    """Whether ``error`` was marked by :func:`mark_store_failure`."""
    return bool(getattr(error, STORE_FAILURE, False))


def lost(path: str, why: str) -> DurablePrefixLostError:
    """The error for a durable prefix that is not there as recorded."""
    return DurablePrefixLostError(f"the durable prefix of {path} cannot be resumed: {why}")


class ResumableWriter(WriteOnlyFile):
    """A binary write handle that reports its durable prefix; the store-specific part is in subclasses.

    ``close()`` completes the object; ``discard()`` abandons it and frees what
    it holds (an exception in the caller's code); ``suspend()`` stops writing
    and leaves the durable prefix for a later writer (an interruption).
    """

    def __init__(self, path: str, unit: int, on_checkpoint: OnCheckpoint, offset: int = 0) -> None:
        self.path = path
        self.unit = unit
        self.resumed_at = offset
        self._on_checkpoint = on_checkpoint
        self._reported = offset
        self._report_lock = threading.Lock()
        self.closed = False

    def report(self, checkpoint: Checkpoint) -> None:
        """Tell the caller about ``checkpoint`` unless a later one was told already (callers may race)."""
        with self._report_lock:
            if checkpoint.offset < self._reported and not checkpoint.complete:
                return
            self._reported = checkpoint.offset
            self._on_checkpoint(checkpoint)

    def write(self, data: Any) -> int:
        raise NotImplementedError

    def tell(self) -> int:
        raise NotImplementedError

    def suspend(self) -> None:
        raise NotImplementedError

    def seek(self, offset: int, whence: int = 0) -> int:
        raise io.UnsupportedOperation("a resumable write is written in order; it cannot seek")

    def truncate(self, size: int | None = None) -> int:
        raise io.UnsupportedOperation("a resumable write is written in order; it cannot truncate")


class CompleteWriter(ResumableWriter):
    """The writer of an object an earlier attempt completed: it takes no more bytes, and closing it changes nothing."""

    def __init__(self, path: str, unit: int, on_checkpoint: OnCheckpoint, checkpoint: Checkpoint) -> None:
        super().__init__(path, unit, on_checkpoint, checkpoint.offset)
        self._checkpoint = checkpoint

    def write(self, data: Any) -> int:
        size = len(memoryview(data).cast("B"))
        if size:
            raise ValueError(
                f"{self.path} was completed with {self.resumed_at} bytes by the attempt this one resumes; "
                "no more bytes can follow them"
            )
        return 0

    def tell(self) -> int:
        return self.resumed_at

    def close(self) -> None:
        self.closed = True

    def discard(self) -> None:
        self.closed = True

    def suspend(self) -> None:
        self.closed = True
