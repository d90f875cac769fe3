"""A resumable write to Azure Blob Storage: a block blob's uncommitted blocks are its durable prefix.

Each durable unit is staged as one block (``Put Block``) whose id is its index
(``djs0000000000``, ``djs0000000001``, ...: the same length, as the service
wants); a checkpoint then records how many blocks of what size are staged.
Closing commits the block list, which creates the blob. A resume asks for the
blob's uncommitted blocks (``Get Block List``) and goes on only if blocks
0..n-1 are there with that size; a block staged after the checkpoint is staged
again under its id (the later one is kept). Uncommitted blocks are discarded by
the service a week after they were staged, and when the blob is deleted.
"""

from __future__ import annotations

import contextlib
from typing import Any

from .resumable import Checkpoint, OnCheckpoint, ResumableWriter, lost


def block_id(index: int) -> str:
    """The id of block ``index`` of a resumable write."""
    return f"djs{index:010d}"


class AzureBlockWriter(ResumableWriter):
    """A resumable write of one block blob through ``azure.storage.blob``'s ``blob`` client."""

    def __init__(
        self, blob: Any, path: str, unit: int, on_checkpoint: OnCheckpoint, resume_from: Checkpoint | None
    ) -> None:
        state = resume_from.state if resume_from is not None else {}
        unit = int(state.get("block_size", unit))
        super().__init__(path, unit, on_checkpoint, resume_from.offset if resume_from is not None else 0)
        self._blob = blob
        self._buffer = bytearray()
        self._blocks = int(state.get("blocks", 0))
        self._written = self.resumed_at
        if resume_from is not None:
            self._check_blocks(self._blocks)

    def _check_blocks(self, count: int) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            _committed, uncommitted = self._blob.get_block_list("uncommitted")
        except ResourceNotFoundError:
            raise lost(self.path, "its uncommitted blocks are gone (the blob was deleted, or a week passed)") from None
        sizes = {block.id: int(block.size) for block in uncommitted}
        for index in range(count):
            size = sizes.get(block_id(index))
            if size is None:
                raise lost(self.path, f"its block {index} is gone")
            if size != self.unit:
                raise lost(self.path, f"its block {index} holds {size} bytes, not {self.unit}")

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        view = memoryview(data).cast("B")
        self._buffer += view
        self._written += len(view)
        while len(self._buffer) >= self.unit:
            self._stage(bytes(self._buffer[: self.unit]))
            del self._buffer[: self.unit]
            self.report(self._checkpoint())
        return len(view)

    def _stage(self, data: bytes) -> None:
        self._blob.stage_block(block_id(self._blocks), data, length=len(data))
        self._blocks += 1

    def _checkpoint(self) -> Checkpoint:
        return Checkpoint(self._blocks * self.unit, {"blocks": self._blocks, "block_size": self.unit})

    def tell(self) -> int:
        return self._written  # the last block, staged by close(), may be short

    def close(self) -> None:
        """Stage what is left and commit the block list: the blob exists, whole."""
        if self.closed:
            return
        size = self.tell()
        if self._buffer or not self._blocks:
            self._stage(bytes(self._buffer))
        self._buffer = bytearray()
        committed = self._blob.commit_block_list([_block(block_id(index)) for index in range(self._blocks)])
        self.closed = True
        self.report(Checkpoint(size, {"etag": str(committed.get("etag"))}, complete=True))

    def suspend(self) -> None:
        self.closed = True
        self._buffer = bytearray()

    def discard(self) -> None:
        """Delete the blob of uncommitted blocks (it has no committed content: nothing else is lost)."""
        self.closed = True
        self._buffer = bytearray()
        delete_uncommitted(self._blob)


def _block(identifier: str) -> Any:
    from azure.storage.blob import BlobBlock

    return BlobBlock(block_id=identifier)


def delete_uncommitted(blob: Any) -> None:
    """Delete a blob that has only uncommitted blocks, freeing them; a blob with committed content is kept."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        blob.get_blob_properties()  # a blob of uncommitted blocks only has no properties yet
    except ResourceNotFoundError:
        with contextlib.suppress(ResourceNotFoundError):
            blob.delete_blob()


def complete_blob(blob: Any, path: str, checkpoint: Checkpoint) -> None:
    """Check that the blob an earlier attempt committed is still the one it committed."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        properties = blob.get_blob_properties()
    except ResourceNotFoundError:
        raise lost(path, "the blob it committed is gone") from None
    if int(properties.size) != checkpoint.offset or str(properties.etag) != checkpoint.state.get("etag"):
        raise lost(path, "the blob it committed was replaced since")
