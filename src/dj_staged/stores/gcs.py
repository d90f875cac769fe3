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
is replaced. **Placement** at a path the writer chose is a ``rewrite`` whose
body sets the object's metadata ``dj-staged-placement: <lease id>``, which a
collector reads back before it reclaims a placement whose writer died.
"""

from __future__ import annotations

from typing import ClassVar

from fsspec.asyn import sync

from .base import FileInfo, StagedStore, WriteHandle
from .gcs_session import GRAIN, GCSSessionWriter, cancel_session, complete_object
from .resumable import Checkpoint, CompleteWriter, OnCheckpoint, ResumableWriter

PLACEMENT_KEY = "dj-staged-placement"  # the metadata that marks an object placed at a path the writer chose


class GCSStore(StagedStore):
    """A DataJoint ``gcs`` store."""

    protocol: ClassVar[str] = "gcs"
    supports_server_side_copy: ClassVar[bool] = True
    supports_partial_uploads: ClassVar[bool] = True
    marks_placements: ClassVar[bool] = True
    resumes_writes: ClassVar[bool] = True  # a resumable upload session, asked for its offset (GCSSessionWriter)

    @property
    def part_size(self) -> int:
        """A resumable upload's chunk is a multiple of 256 KiB: ``DJ_STAGED_PART_SIZE`` is rounded down to one."""
        size = super().part_size
        return max(GRAIN, size - size % GRAIN)

    reclaims_by_itself: ClassVar[str] = (
        "an unfinished resumable upload session expires one week after it began (no request lists one)"
    )

    def _version(self, info: FileInfo) -> str | None:
        generation = info.get("generation")
        return None if generation is None else str(generation)

    def open_write(self, path: str) -> WriteHandle:
        return self.fs.open(self.full_path(path), "wb", block_size=self.part_size)

    def open_resumable(
        self, path: str, *, on_checkpoint: OnCheckpoint, resume_from: Checkpoint | None = None
    ) -> ResumableWriter:
        full = self.full_path(path)
        if resume_from is not None and resume_from.complete:
            complete_object(self.fs, full, resume_from)
            return CompleteWriter(full, self.part_size, on_checkpoint, resume_from)
        return GCSSessionWriter(self.fs, full, self.part_size, on_checkpoint, resume_from)

    def abandon_resumable(self, path: str, checkpoint: Checkpoint | None) -> None:
        session = checkpoint.state.get("session") if checkpoint is not None else None
        if session:
            cancel_session(self.fs, str(session))
        self.remove(path)

    def _place_one(self, source: str, target: str, mark: str, size: int) -> None:
        """The service's ``rewrite``, as gcsfs's copy makes it, with the destination's metadata in its body."""
        (from_bucket, from_key, _), (to_bucket, to_key, _) = (
            self.fs.split_path(self.full_path(source)),
            self.fs.split_path(self.full_path(target)),
        )
        body = {"metadata": {PLACEMENT_KEY: mark}}
        token = None
        while True:
            answer = sync(
                self.fs.loop,
                self.fs._call,
                "POST",
                "b/{}/o/{}/rewriteTo/b/{}/o/{}",
                from_bucket,
                from_key,
                to_bucket,
                to_key,
                json=body,
                json_out=True,
                rewriteToken=token,
            )
            if answer.get("done") is True:
                break
            token = answer["rewriteToken"]
        self.forget(target)

    def placed_by(self, target: str, mark: str) -> bool:
        info = self.info(target)
        if info is None:
            return False
        if info["type"] != "directory":
            return (info.get("metadata") or {}).get(PLACEMENT_KEY) == mark
        files = [entry for entry in self.directory_files(target).values() if entry.get("type", "file") == "file"]
        return bool(files) and all((entry.get("metadata") or {}).get(PLACEMENT_KEY) == mark for entry in files)
