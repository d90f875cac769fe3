"""An S3 store (``protocol: s3``, s3fs): concurrent multipart writes, server-side copies, batched deletes, and the
incomplete multipart uploads a killed writer leaves.

**Writing.** s3fs's own write handle uploads a 50 MiB part and waits for it
before taking the next byte, so a staged write to S3 would run at the speed of
one request at a time and hold a part and its copies in memory.
:class:`S3PartWriter` buffers one part (8 MiB) while up to four earlier parts
upload, the way ``s3fs.put_file`` uploads a file: the caller's writes overlap
the uploads and at most about five parts are ever held. Content smaller than one
part is one ``PutObject``; nothing written is an empty object, as ``open(...,
"wb")`` makes. Each part is gathered in its own ``io.BytesIO`` and sent as that:
the caller's bytes are copied once (botocore would wrap ``bytes`` in a
``BytesIO`` that shares them, and aiohttp's ``getbuffer()`` on it copies the
whole part again, once more for every part in flight). The upload is completed
by :meth:`S3PartWriter.close` and aborted by :meth:`S3PartWriter.discard`.

**Promotion** is an existence check, a server-side copy and a delete; nothing is
downloaded. Up to 5 GiB (S3's limit for it) the copy is one ``CopyObject``, the
request s3fs's ``_copy_basic`` makes; above, S3 takes only a multipart
``UploadPartCopy``, done part by part so a progress callback follows it. S3 has
no conditional copy, so two writers racing on the same hash may both copy; they
copy identical bytes, so either result is the same.

**Placement** at a path the writer chose is the same copy with the object's
metadata replaced by ``dj-staged-placement: <lease id>``, which a collector reads
back before it reclaims a placement whose writer died.

**Listing** a section is one paginated ``ListObjectsV2`` without a delimiter
(s3fs's ``find`` adds a ``HeadObject`` and a second listing when the prefix is
empty); deleting takes up to 1,000 keys per ``DeleteObjects`` request.

**Incomplete uploads** cost storage for their parts, yet no object listing shows
them: :meth:`S3Store.incomplete_uploads` lists them with their parts' bytes.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import io
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, cast

import fsspec
from fsspec.callbacks import DEFAULT_CALLBACK, Callback

from .base import FileInfo, IncompleteUpload, StagedStore, StoredFile, WriteHandle, mtime_of
from .resumable import Checkpoint, CompleteWriter, OnCheckpoint, ResumableWriter, lost
from .writers import WriteOnlyFile

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


def call_s3(fs: fsspec.AbstractFileSystem, method: str, **kwargs: object) -> dict[str, Any]:
    """Call an S3 API method through s3fs's client: multipart uploads and copies, listings s3fs does not expose."""
    return cast(dict[str, Any], fs.call_s3(method, **kwargs))  # botocore's response: a dict (s3fs gives no types)


PART = 8 << 20  # S3 takes parts of 5 MiB at least (but the last)
S3_MIN_PART = 5 << 20
IN_FLIGHT = 4
MAX_PARTS = 10_000
PLACEMENT_KEY = "dj-staged-placement"  # the metadata that marks an object placed at a path the writer chose


class S3PartWriter(WriteOnlyFile):
    """A binary write handle on the S3 object ``path`` of the s3fs filesystem ``fs``."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, part_size: int = PART) -> None:
        self._fs = fs
        self.path = path
        self._bucket, self._key, _ = fs.split_path(path)
        self._part_size = part_size
        self._buffer = io.BytesIO()
        self._written = 0
        self._upload_id: str | None = None
        self._parts: dict[int, concurrent.futures.Future[str]] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(IN_FLIGHT)
        self.closed = False
        self._etags: dict[int, str] = {}  # part number -> ETag, of the parts uploaded (a resumable write's)
        self._durable_parts = 0  # the parts 1..n uploaded, in order (a resumable write's durable prefix)
        self._done_lock = threading.Lock()
        self._on_durable: Callable[[int], None] | None = None

    def write(self, data: ReadableBuffer) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        view = memoryview(data).cast("B")
        self._written += len(view)
        rest = view
        while rest:
            room = self._part_size - self._buffer.tell()
            self._buffer.write(rest[:room])
            rest = rest[room:]
            if self._buffer.tell() == self._part_size:
                self._send(self._next_part())
        return len(view)

    def _next_part(self) -> io.BytesIO:
        """The part gathered so far, rewound for sending; a new one is gathered from here on."""
        part, self._buffer = self._buffer, io.BytesIO()
        part.seek(0)
        return part

    def _send(self, part: io.BytesIO) -> None:
        """Upload ``part`` as the next part, waiting while too many are in flight; raise an earlier failure."""
        if self._upload_id is None:
            created = call_s3(self._fs, "create_multipart_upload", Bucket=self._bucket, Key=self._key)
            self._upload_id = created["UploadId"]
            self._pool = concurrent.futures.ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="dj-staged-s3-part")
        for future in [f for f in self._parts.values() if f.done()]:
            future.result()  # a failed part surfaces at the next write
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise OSError(f"{self.path}: more than {MAX_PARTS} parts of {self._part_size} bytes")
        self._slots.acquire()
        assert self._pool is not None
        self._parts[number] = self._pool.submit(self._upload, number, part)

    def _upload(self, number: int, part: io.BytesIO) -> str:
        try:
            done = call_s3(
                self._fs,
                "upload_part",
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=part,
            )
            etag = cast(str, done["ETag"])
            if self._on_durable is not None:
                self._uploaded(number, etag)
            return etag
        finally:
            self._slots.release()

    def _uploaded(self, number: int, etag: str) -> None:
        """Part ``number`` is in S3: report the parts 1..n uploaded so far, if that run grew (in order)."""
        with self._done_lock:
            self._etags[number] = etag
            count = self._durable_parts
            while count + 1 in self._etags:
                count += 1
            if count == self._durable_parts:
                return
            self._durable_parts = count
            on_durable = self._on_durable
        assert on_durable is not None
        on_durable(count)  # outside the lock: it asks for the ETags (durable_etags), and may write a checkpoint

    def durable_etags(self, count: int) -> list[str]:
        """The ETags of parts 1..``count`` (uploaded)."""
        with self._done_lock:
            return [self._etags[number] for number in range(1, count + 1)]

    def resume(self, upload_id: str, etags: list[str], on_durable: Callable[[int], None]) -> None:
        """Go on with the multipart upload ``upload_id``, whose parts 1..n (``etags``) hold the bytes so far."""
        self._upload_id = upload_id
        self._on_durable = on_durable
        self._pool = concurrent.futures.ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="dj-staged-s3-part")
        for number, etag in enumerate(etags, start=1):
            future: concurrent.futures.Future[str] = concurrent.futures.Future()
            future.set_result(etag)
            self._parts[number] = future
            self._etags[number] = etag
        self._durable_parts = len(etags)
        self._written = len(etags) * self._part_size

    def report_parts(self, on_durable: Callable[[int], None]) -> None:
        """Report each growth of the run of uploaded parts 1..n to ``on_durable`` (a resumable write)."""
        self._on_durable = on_durable

    @property
    def upload_id(self) -> str | None:
        """The multipart upload's id, once it has one."""
        return self._upload_id

    def suspend(self) -> None:
        """Stop once the parts under way are uploaded; the upload stays for a later writer to complete."""
        if self.closed:
            return
        for future in list(self._parts.values()):
            try:
                future.result()
            except Exception:
                continue  # a part that failed is not durable: a later writer sends it again
        self._end()

    def tell(self) -> int:
        return self._written

    def close(self) -> None:
        """Upload what is left and complete the object; on any failure the upload is aborted."""
        if self.closed:
            return
        try:
            if self._upload_id is None and not self._parts:
                call_s3(self._fs, "put_object", Bucket=self._bucket, Key=self._key, Body=self._next_part())
            else:
                if self._buffer.tell() or not self._parts:
                    self._send(self._next_part())
                etags = {number: future.result() for number, future in self._parts.items()}
                parts = [{"PartNumber": number, "ETag": etag} for number, etag in sorted(etags.items())]
                call_s3(
                    self._fs,
                    "complete_multipart_upload",
                    Bucket=self._bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            if self._on_durable is None:  # a resumable write's caller decides: abandon it, or keep it to resume
                self.discard()
            raise
        self._end()
        self._fs.invalidate_cache(self.path)

    def discard(self) -> None:
        """Abort the upload (nothing is created); idempotent."""
        if self.closed:
            return
        upload_id, self._upload_id = self._upload_id, None
        self._end()
        if upload_id is not None:
            call_s3(self._fs, "abort_multipart_upload", Bucket=self._bucket, Key=self._key, UploadId=upload_id)

    def _end(self) -> None:
        self.closed = True
        self._buffer = io.BytesIO()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def etags_digest(etags: list[str]) -> str:
    """One value for the ETags of parts 1..n, in order (a checkpoint records it instead of every ETag)."""
    return hashlib.md5("\n".join(etags).encode()).hexdigest()


class S3ResumableWriter(ResumableWriter):
    """A resumable write of one S3 object: a multipart upload whose parts 1..n are its durable prefix.

    The checkpoint records the upload's id, the part size, the number of parts
    uploaded in order and a digest of their ETags; a resume lists the upload's
    parts (``ListParts``) and goes on only if parts 1..n are there with those
    ETags, each of the part size. Parts a killed writer uploaded beyond the
    checkpoint are sent again (a part number uploaded twice keeps the later one).
    """

    def __init__(
        self,
        fs: fsspec.AbstractFileSystem,
        path: str,
        part_size: int,
        on_checkpoint: OnCheckpoint,
        resume_from: Checkpoint | None,
    ) -> None:
        state = resume_from.state if resume_from is not None else {}
        unit = int(state.get("part_size", part_size))
        super().__init__(path, unit, on_checkpoint, resume_from.offset if resume_from is not None else 0)
        self._fs = fs
        self._writer = S3PartWriter(fs, path, unit)
        self._writer.report_parts(self._durable)
        if resume_from is not None:
            self._writer.resume(str(state["upload_id"]), self._listed_parts(resume_from), self._durable)

    def _listed_parts(self, checkpoint: Checkpoint) -> list[str]:
        """The ETags of parts 1..n of the recorded upload, checked against the checkpoint."""
        state = checkpoint.state
        bucket, key, _ = self._fs.split_path(self.path)
        count = int(state["parts"])
        options: dict[str, Any] = {"Bucket": bucket, "Key": key, "UploadId": state["upload_id"]}
        found: dict[int, dict[str, Any]] = {}
        while True:
            try:
                page = call_s3(self._fs, "list_parts", **options)
            except FileNotFoundError:
                raise lost(self.path, "its multipart upload is gone (aborted, collected, or completed)") from None
            for part in page.get("Parts", []):
                found[int(part["PartNumber"])] = part
            if not page.get("IsTruncated") or max(found, default=0) >= count:
                break
            options["PartNumberMarker"] = page["NextPartNumberMarker"]
        parts = [found.get(number) for number in range(1, count + 1)]
        missing = [number for number, part in enumerate(parts, start=1) if part is None]
        if missing:
            raise lost(self.path, f"part {missing[0]} of its multipart upload is gone")
        sizes = {int(part["Size"]) for part in parts if part is not None}
        if sizes - {self.unit}:
            raise lost(self.path, f"its parts are not all of {self.unit} bytes")
        etags = [str(part["ETag"]) for part in parts if part is not None]
        if etags_digest(etags) != state["etags"]:
            raise lost(self.path, "a part of its multipart upload was uploaded again with other bytes")
        return etags

    def _durable(self, count: int) -> None:
        if count * self.unit > self._writer.tell():  # the last, partial part sent by close(): its checkpoint follows
            return
        upload_id = self._writer.upload_id
        etags = self._writer.durable_etags(count)
        state = {"upload_id": upload_id, "parts": count, "part_size": self.unit, "etags": etags_digest(etags)}
        self.report(Checkpoint(count * self.unit, state))

    def write(self, data: Any) -> int:
        return self._writer.write(data)

    def tell(self) -> int:
        return self._writer.tell()

    def close(self) -> None:
        if self.closed:
            return
        self._writer.close()
        self.closed = True
        info = self._fs.info(self.path)
        etag = str(info.get("ETag") or info.get("etag") or "")
        self.report(Checkpoint(self._writer.tell(), {"etag": etag, "part_size": self.unit}, complete=True))

    def suspend(self) -> None:
        self.closed = True
        self._writer.suspend()

    def discard(self) -> None:
        """Abort the upload, also once stopped (a suspended write whose block then unwound)."""
        self.closed = True
        upload_id = self._writer.upload_id
        if not self._writer.closed:
            self._writer.discard()
        elif upload_id is not None:
            bucket, key, _ = self._fs.split_path(self.path)
            with contextlib.suppress(FileNotFoundError):  # completed, or aborted already
                call_s3(self._fs, "abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)


def complete_object(fs: Any, path: str, checkpoint: Checkpoint) -> None:
    """Check that the object an earlier attempt completed is still the one it completed."""
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise lost(path, "the object it completed is gone") from None
    etag = str(info.get("ETag") or info.get("etag") or "")
    if int(info.get("size") or 0) != checkpoint.offset or etag != checkpoint.state.get("etag"):
        raise lost(path, "the object it completed was replaced since")


S3_FIRST_PART = 8 << 20  # the part of a framed object that travels through the client (the prefix and a head)
S3_COPY_PART = 128 << 20
S3_SMALL = 16 << 20  # a framed object smaller than this is written through the client
S3_PART_COPY = 5 << 30  # CopyObject's limit: larger objects are copied part by part


class S3Store(StagedStore):
    """A DataJoint ``s3`` store."""

    protocol: ClassVar[str] = "s3"
    supports_server_side_copy: ClassVar[bool] = True
    server_side_copy_limit: ClassVar[int | None] = S3_PART_COPY
    supports_partial_uploads: ClassVar[bool] = True
    supports_listing_incomplete_uploads: ClassVar[bool] = True
    reclaims_by_itself: ClassVar[str] = "incomplete multipart uploads only under a bucket lifecycle rule"
    uploads_in_background: ClassVar[bool] = True
    marks_placements: ClassVar[bool] = True
    delete_batch_size: ClassVar[int] = 1000
    resumes_writes: ClassVar[bool] = True  # the parts of a multipart upload, checked with ListParts

    @property
    def part_size(self) -> int:
        """S3 refuses parts below 5 MiB (but the last): a smaller ``DJ_STAGED_PART_SIZE`` is raised to that."""
        return max(super().part_size, S3_MIN_PART)

    def _version(self, info: FileInfo) -> str | None:
        etag = info.get("ETag") or info.get("etag")
        return None if etag is None else str(etag)

    def bucket_and_key(self, path: str) -> tuple[str, str]:
        """The bucket and key of the store-relative ``path``."""
        bucket, _, key = self.full_path(path).partition("/")
        return bucket, key

    def open_write(self, path: str) -> S3PartWriter:
        return S3PartWriter(self.fs, self.full_path(path), self.part_size)

    def discard(self, handle: WriteHandle) -> None:
        handle.discard()

    def open_resumable(
        self, path: str, *, on_checkpoint: OnCheckpoint, resume_from: Checkpoint | None = None
    ) -> ResumableWriter:
        full = self.full_path(path)
        self.forget(path)
        if resume_from is not None and resume_from.complete:
            complete_object(self.fs, full, resume_from)
            return CompleteWriter(full, self.part_size, on_checkpoint, resume_from)
        return S3ResumableWriter(self.fs, full, self.part_size, on_checkpoint, resume_from)

    def abandon_resumable(self, path: str, checkpoint: Checkpoint | None) -> None:
        upload_id = checkpoint.state.get("upload_id") if checkpoint is not None else None
        if upload_id:
            bucket, key = self.bucket_and_key(path)
            with contextlib.suppress(FileNotFoundError):
                call_s3(self.fs, "abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
        self.remove(path)

    def list_files(self, section: str) -> dict[str, StoredFile]:
        return {f.path: f for f in self._list(section, delimiter="")[1]}

    def list_folder(self, prefix: str) -> tuple[set[str], dict[str, StoredFile]]:
        folders, files = self._list(prefix, delimiter="/")
        return folders, {f.path: f for f in files}

    def _list(self, section: str, *, delimiter: str) -> tuple[set[str], list[StoredFile]]:
        """One paginated ``ListObjectsV2`` of ``section/``: the folder names (with a delimiter) and the files."""
        bucket, root = self.bucket_and_key("")
        root = root.strip("/")
        _, key = self.bucket_and_key(section)
        prefix = key.strip("/") + "/" if key.strip("/") else ""
        options: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if delimiter:
            options["Delimiter"] = delimiter
        folders: set[str] = set()
        files: list[StoredFile] = []
        while True:
            page = call_s3(self.fs, "list_objects_v2", **options)
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

    def delete_many(self, paths: list[str]) -> dict[str, str]:
        if not paths:
            return {}
        if len(paths) > self.delete_batch_size:
            raise ValueError(f"one DeleteObjects request takes at most {self.delete_batch_size:,} keys")
        bucket, _ = self.bucket_and_key("")
        keys = {self.bucket_and_key(path)[1]: path for path in paths}
        response = call_s3(
            self.fs, "delete_objects", Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
        )
        self.fs.invalidate_cache()
        return {
            keys.get(error.get("Key"), error.get("Key")): f"{error.get('Code')}: {error.get('Message')}"
            for error in response.get("Errors", [])
        }

    def promote(self, source: str, target: str, *, callback: Callback = DEFAULT_CALLBACK) -> bool:
        if self.exists(target):
            self.fs.rm(self.full_path(source))
            return False
        self._copy(self.full_path(source), self.full_path(target), int(self.fs.size(self.full_path(source))), callback)
        self.fs.rm(self.full_path(source))
        return True

    def copy(self, source: str, target: str) -> None:
        self._copy(self.full_path(source), self.full_path(target), int(self.fs.size(self.full_path(source))))

    def _copy(
        self,
        source: str,
        target: str,
        size: int,
        callback: Callback = DEFAULT_CALLBACK,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Copy ``source`` to ``target`` inside S3: one ``CopyObject`` up to 5 GiB, else part by part; with
        ``metadata``, the copy carries it instead of the source's."""
        callback.set_size(size)
        extra: dict[str, Any] = {} if metadata is None else {"Metadata": metadata}
        if size <= S3_PART_COPY:
            (src_bucket, src_key, _), (bucket, key, _) = self.fs.split_path(source), self.fs.split_path(target)
            if metadata is not None:
                extra["MetadataDirective"] = "REPLACE"
            call_s3(
                self.fs,
                "copy_object",
                Bucket=bucket,
                Key=key,
                CopySource={"Bucket": src_bucket, "Key": src_key},
                **extra,
            )
            self.fs.invalidate_cache(target)
            callback.relative_update(size)
            return

        def fill(bucket: str, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
            self._copy_parts(source, 0, size, (bucket, key, upload_id), parts, callback)

        self._multipart_upload(target, fill, extra)

    def _place_one(self, source: str, target: str, mark: str, size: int) -> None:
        self._copy(self.full_path(source), self.full_path(target), size, metadata={PLACEMENT_KEY: mark})

    def placed_by(self, target: str, mark: str) -> bool:
        info = self.info(target)
        if info is None:
            return False
        if info["type"] != "directory":
            return self._mark_of(self.full_path(target)) == mark
        files = [full for full, entry in self.directory_files(target).items() if entry.get("type", "file") == "file"]
        return bool(files) and all(self._mark_of(full) == mark for full in files)

    def _mark_of(self, full: str) -> str | None:
        bucket, key, _ = self.fs.split_path(full)
        try:
            head = call_s3(self.fs, "head_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None
        found: str | None = head.get("Metadata", {}).get(PLACEMENT_KEY)
        return found

    def compose(
        self, prefix: bytes, source: str, target: str, offset: int = 0, callback: Callback = DEFAULT_CALLBACK
    ) -> None:
        """Only the first few MiB travel through the client: the rest is copied server-side (``UploadPartCopy``)."""
        source_full, target_full = self.full_path(source), self.full_path(target)
        remaining = int(self.fs.size(source_full)) - offset
        if len(prefix) + remaining <= S3_SMALL:
            super().compose(prefix, source, target, offset, callback)
            return
        callback.set_size(remaining)
        with self.fs.open(source_full, "rb") as src:
            src.seek(offset)
            head = src.read(S3_FIRST_PART)

        def fill(bucket: str, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
            body = prefix + head
            first = call_s3(self.fs, "upload_part", Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=body)
            parts.append({"PartNumber": 1, "ETag": first["ETag"]})
            callback.relative_update(len(head))
            end = offset + remaining
            self._copy_parts(source_full, offset + len(head), end, (bucket, key, upload_id), parts, callback)

        self._multipart_upload(target_full, fill)

    def _multipart_upload(
        self,
        target: str,
        fill: Callable[[str, str, str, list[dict[str, Any]]], None],
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Create a multipart upload of ``target`` (with ``extra`` arguments: its metadata), let ``fill`` add its
        parts, complete it (abort on any error)."""
        bucket, key, _ = self.fs.split_path(target)
        upload_id = call_s3(self.fs, "create_multipart_upload", Bucket=bucket, Key=key, **(extra or {}))["UploadId"]
        parts: list[dict[str, Any]] = []
        try:
            fill(bucket, key, upload_id, parts)
            call_s3(
                self.fs,
                "complete_multipart_upload",
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            call_s3(self.fs, "abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
            raise
        self.fs.invalidate_cache(target)

    def _copy_parts(
        self,
        source: str,
        start: int,
        end: int,
        upload: tuple[str, str, str],
        parts: list[dict[str, Any]],
        callback: Callback,
    ) -> None:
        """Append ``UploadPartCopy`` parts for bytes ``[start, end)`` of ``source``, reporting progress."""
        bucket, key, upload_id = upload
        src_bucket, src_key, _ = self.fs.split_path(source)
        step = max(S3_COPY_PART, -(-(end - start) // (MAX_PARTS - len(parts))))
        while start < end:
            stop = min(start + step, end)
            number = len(parts) + 1
            copied = call_s3(
                self.fs,
                "upload_part_copy",
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                CopySource={"Bucket": src_bucket, "Key": src_key},
                CopySourceRange=f"bytes={start}-{stop - 1}",
            )
            parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
            callback.relative_update(stop - start)
            start = stop

    def incomplete_uploads(self, section: str) -> dict[str, IncompleteUpload]:
        bucket, prefix = self.bucket_and_key(section)
        _, root = self.bucket_and_key("")
        found: dict[str, IncompleteUpload] = {}
        options: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix.rstrip("/") + "/"}
        while True:
            page = call_s3(self.fs, "list_multipart_uploads", **options)
            for upload in page.get("Uploads", []):
                key, upload_id = upload["Key"], upload["UploadId"]
                relative = key[len(root) :].lstrip("/") if key.startswith(root) else key
                try:
                    parts = call_s3(self.fs, "list_parts", Bucket=bucket, Key=key, UploadId=upload_id).get("Parts", [])
                except FileNotFoundError:  # NoSuchUpload: completed or aborted since the listing
                    continue
                size = sum(int(part.get("Size", 0)) for part in parts)
                name = f"{relative}#upload={upload_id}"
                found[name] = IncompleteUpload(name, relative, size, upload["Initiated"].timestamp(), upload_id)
            if not page.get("IsTruncated"):
                return found
            options.update(KeyMarker=page["NextKeyMarker"], UploadIdMarker=page["NextUploadIdMarker"])

    def abort_upload(self, upload: IncompleteUpload) -> None:
        bucket, key = self.bucket_and_key(upload.path)
        call_s3(self.fs, "abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload.upload_id)
