"""An Azure Blob Storage store (``protocol: azure``, adlfs).

**Writing** stages blocks of 8 MiB and commits the block list at the end
(adlfs's default block of 50 MiB would hold about three times that in memory);
a write that is abandoned leaves its blocks uncommitted. **Promotion** is the
service's ``Copy Blob`` with ``If-None-Match: *``, so it never overwrites a
blob that appeared meanwhile (a concurrent writer of the same content: then
the staging copy is dropped), waited on until the copy has succeeded, then a
delete. **Placement** at a path the writer chose is the same ``Copy Blob``
with the metadata ``djstaged_placement: <lease id>``, which a collector reads
back before it reclaims a placement whose writer died. **Incomplete uploads**:
a blob that has only uncommitted blocks is listed with
``include=["uncommittedblobs"]`` and deleted whole; the service also discards
uncommitted blocks a week after they were staged. Blobs carry an
``ETag`` that changes whenever one is replaced; their ``last_modified`` has a
resolution of one second.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from fsspec.callbacks import DEFAULT_CALLBACK, Callback

from .._datajoint import StorageBackend
from .azure_blocks import AzureBlockWriter, complete_blob, delete_uncommitted
from .base import FileInfo, IncompleteUpload, StagedStore, WriteHandle
from .resumable import Checkpoint, CompleteWriter, OnCheckpoint, ResumableWriter

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, BlobServiceClient

COPY_POLL = 0.05  # seconds between two looks at a copy the service has not finished yet
COPY_WAIT = 3600.0  # an asynchronous copy not finished after this long is an error
PLACEMENT_KEY = "djstaged_placement"  # the metadata that marks a blob placed at a path the writer chose (Azure
# takes only names that are C# identifiers)


class AzureStore(StagedStore):
    """A DataJoint ``azure`` store."""

    protocol: ClassVar[str] = "azure"
    supports_server_side_copy: ClassVar[bool] = True
    supports_partial_uploads: ClassVar[bool] = True
    supports_listing_incomplete_uploads: ClassVar[bool] = True
    reclaims_by_itself: ClassVar[str] = "uncommitted blocks are discarded one week after they were staged"
    atomic_promotion: ClassVar[bool] = True
    marks_placements: ClassVar[bool] = True
    resumes_writes: ClassVar[bool] = True  # uncommitted blocks, asked for with Get Block List (AzureBlockWriter)

    def __init__(self, name: str, spec: dict[str, Any], backend: StorageBackend) -> None:
        super().__init__(name, spec, backend)
        self._service: BlobServiceClient | None = None

    def _version(self, info: FileInfo) -> str | None:
        etag = info.get("etag")
        return None if etag is None else str(etag)

    def _client(self) -> BlobServiceClient:
        """A synchronous Blob service client with the store's credentials (adlfs keeps an asynchronous one)."""
        if self._service is None:
            from azure.storage.blob import BlobServiceClient

            fs = self.fs
            if fs.connection_string:
                self._service = BlobServiceClient.from_connection_string(fs.connection_string)
            else:
                self._service = BlobServiceClient(
                    account_url=fs.account_url, credential=fs.account_key or fs.credential
                )
        return self._service

    def _blob(self, path: str) -> BlobClient:
        container, blob, _version = self.fs.split_path(self.full_path(path))
        return self._client().get_blob_client(container=container, blob=blob)

    def open_write(self, path: str) -> WriteHandle:
        return self.fs.open(self.full_path(path), "wb", block_size=self.part_size)

    def open_resumable(
        self, path: str, *, on_checkpoint: OnCheckpoint, resume_from: Checkpoint | None = None
    ) -> ResumableWriter:
        full, blob = self.full_path(path), self._blob(path)
        if resume_from is not None and resume_from.complete:
            complete_blob(blob, full, resume_from)
            return CompleteWriter(full, self.part_size, on_checkpoint, resume_from)
        return AzureBlockWriter(blob, full, self.part_size, on_checkpoint, resume_from)

    def abandon_resumable(self, path: str, checkpoint: Checkpoint | None) -> None:
        delete_uncommitted(self._blob(path))
        self.remove(path)

    def promote(self, source: str, target: str, *, callback: Callback = DEFAULT_CALLBACK) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError

        size = int(self.fs.size(self.full_path(source)))
        callback.set_size(size)
        destination = self._blob(target)
        try:
            copy = destination.start_copy_from_url(self._blob(source).url, match_condition=MatchConditions.IfMissing)
        except ResourceExistsError:
            self.fs.rm(self.full_path(source))
            return False
        self._wait_for_copy(destination, copy)
        callback.relative_update(size)
        self.fs.rm(self.full_path(source))
        self.forget(target)
        return True

    def copy(self, source: str, target: str) -> None:
        destination = self._blob(target)
        self._wait_for_copy(destination, destination.start_copy_from_url(self._blob(source).url))
        self.forget(target)

    def _place_one(self, source: str, target: str, mark: str, size: int) -> None:
        destination = self._blob(target)
        copy = destination.start_copy_from_url(self._blob(source).url, metadata={PLACEMENT_KEY: mark})
        self._wait_for_copy(destination, copy)

    def placed_by(self, target: str, mark: str) -> bool:
        info = self.info(target)
        if info is None:
            return False
        if info["type"] != "directory":
            return self._mark_of(target) == mark
        files = [full for full, entry in self.directory_files(target).items() if entry.get("type", "file") == "file"]
        return bool(files) and all(self._mark_of(self.relative(full)) == mark for full in files)

    def _mark_of(self, path: str) -> str | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            metadata = self._blob(path).get_blob_properties().metadata or {}
        except ResourceNotFoundError:
            return None
        found: str | None = metadata.get(PLACEMENT_KEY)
        return found

    def _wait_for_copy(self, destination: BlobClient, started: dict[str, Any]) -> None:
        """Return once the service has finished the copy ``started`` (a large one runs asynchronously)."""
        status = started.get("copy_status")
        deadline = time.monotonic() + COPY_WAIT
        while status == "pending":
            if time.monotonic() > deadline:
                destination.abort_copy(started["copy_id"])
                raise TimeoutError(f"the copy to {destination.blob_name} did not finish within {COPY_WAIT:.0f} s")
            time.sleep(COPY_POLL)
            status = destination.get_blob_properties().copy.status
        if status != "success":
            raise OSError(f"the copy to {destination.blob_name} ended {status}")

    def incomplete_uploads(self, section: str) -> dict[str, IncompleteUpload]:
        container, prefix, _version = self.fs.split_path(self.full_path(section).rstrip("/") + "/")
        client = self._client().get_container_client(container)
        committed = {blob.name for blob in client.list_blobs(name_starts_with=prefix)}
        found: dict[str, IncompleteUpload] = {}
        for blob in client.list_blobs(name_starts_with=prefix, include=["uncommittedblobs"]):
            if blob.name in committed:
                continue
            relative = self.relative(f"{container}/{blob.name}")
            try:
                _committed, uncommitted = client.get_blob_client(blob.name).get_block_list("uncommitted")
            except Exception:  # committed or deleted since the listing: nothing to collect
                continue
            size = sum(int(block.size) for block in uncommitted)
            started = blob.creation_time or blob.last_modified
            name = f"{relative}#upload=uncommitted"
            found[name] = IncompleteUpload(name, relative, size, started.timestamp() if started else None, "")
        return found

    def abort_upload(self, upload: IncompleteUpload) -> None:
        """Delete the blob of uncommitted blocks, unless it was committed since it was listed (deleting a blob
        deletes its committed content too; the collector also keeps every path a row references)."""

        delete_uncommitted(self._blob(upload.path))
