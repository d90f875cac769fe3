"""A Google Cloud Storage store (``protocol: gcs``, gcsfs).

**Writing** goes through gcsfs's resumable upload session, 8 MiB at a time (a
whole number of 256 KiB, as the service wants), in bounded memory; an aborted
write cancels its session. **Promotion** is an existence check, the service's
own ``rewrite`` (no byte downloaded, any size: gcsfs follows its rewrite
tokens) and a delete; like S3, GCS offers no conditional rewrite that this
package can rely on, so two writers racing on the same content may both copy
identical bytes. **Incomplete uploads**: a resumable session cannot be listed
by any request; the service discards one a week after it began, and an aborted
write cancels its own. Objects carry a ``generation`` that changes whenever one
is replaced.
"""

from __future__ import annotations

from typing import ClassVar

from .base import FileInfo, StagedStore, WriteHandle

BLOCK = 8 << 20  # a resumable upload's chunk: a multiple of 256 KiB


class GCSStore(StagedStore):
    """A DataJoint ``gcs`` store."""

    protocol: ClassVar[str] = "gcs"
    supports_server_side_copy: ClassVar[bool] = True
    supports_partial_uploads: ClassVar[bool] = True
    reclaims_by_itself: ClassVar[str] = (
        "an unfinished resumable upload session expires one week after it began (no request lists one)"
    )

    def _version(self, info: FileInfo) -> str | None:
        generation = info.get("generation")
        return None if generation is None else str(generation)

    def open_write(self, path: str) -> WriteHandle:
        return self.fs.open(self.full_path(path), "wb", block_size=BLOCK)
