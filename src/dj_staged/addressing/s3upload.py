"""Writing one S3 object as a multipart upload whose parts go up several at a time, in bounded memory.

s3fs's own write handle uploads a 50 MiB part and waits for it before taking
the next byte, so a staged write to S3 runs at the speed of one request at a
time and holds a part and its copies in memory. :class:`S3PartWriter`
buffers one part (8 MiB) while up to four earlier parts upload, the way
``s3fs.put_file`` uploads a file: the caller's writes overlap the uploads and
at most about five parts are ever held. Content smaller than one part is one
``PutObject``; nothing written is an empty object, as ``open(..., "wb")`` makes.

Each part is gathered in its own ``io.BytesIO`` and sent as that: the caller's
bytes are copied once. botocore would wrap ``bytes`` in a ``BytesIO`` that
shares them, and aiohttp's ``getbuffer()`` on it copies the whole part again,
once more for every part in flight.

The upload is completed by :meth:`S3PartWriter.close` and aborted by
:meth:`S3PartWriter.discard` (a staged write that fails leaves no upload
behind; one a killed process leaves is aborted by the collector).
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import threading
from typing import Any

from .._datajoint import call_s3
from ..durability import is_plain_local

PART = 8 << 20  # S3 takes parts of 5 MiB at least (but the last)
IN_FLIGHT = 4
MAX_PARTS = 10_000


class S3PartWriter:
    """A binary write handle on the S3 object ``path`` of the s3fs filesystem ``fs``."""

    mode = "wb"

    def __init__(self, fs: Any, path: str, part_size: int = PART) -> None:
        self._fs = fs
        self.path = path
        self._bucket, self._key, _ = fs.split_path(path)
        self._part_size = part_size
        self._buffer = io.BytesIO()
        self._written = 0
        self._upload_id: str | None = None
        self._parts: dict[int, concurrent.futures.Future] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(IN_FLIGHT)
        self.closed = False

    def write(self, data: Any) -> int:
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
            return done["ETag"]
        finally:
            self._slots.release()

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        """Nothing to do: parts go up as they fill, the rest at :meth:`close`."""

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def close(self) -> None:
        """Upload what is left and complete the object; on any failure the upload is aborted."""
        if self.closed:
            return
        try:
            if self._upload_id is None:
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

    def __enter__(self) -> S3PartWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def open_for_writing(backend: Any, full: str) -> Any:
    """A binary write handle on ``full``: concurrent parts on S3, the store's own file elsewhere."""
    if backend.protocol == "s3":
        return S3PartWriter(backend.fs, full)
    if is_plain_local(backend.fs):  # a small row's file costs less through os than through fsspec's opener
        os.makedirs(os.path.dirname(full), exist_ok=True)
        return open(full, "wb")
    return backend.fs.open(full, "wb")
