"""Moving a staged object to its canonical hash path, and framing content with a prefix.

Promotion never overwrites: when the canonical object exists (written earlier,
or by a concurrent writer between our check and our move) the staging copy is
dropped instead (dedup). Per protocol:

- ``file``: ``os.link`` (fails if the destination exists, atomically) then unlink
  the staging name; a rename in effect, no byte is copied.
- ``s3``: an existence check, then a server-side copy, then delete the staging
  object; nothing is downloaded. Up to 5 GiB (S3's limit for it) the copy is one
  ``CopyObject``, the request s3fs's ``_copy_basic`` makes: a progress callback
  is told the size, then that it is done (a multipart copy costs moto a read of
  the whole source per part). Above, S3 takes only a multipart ``UploadPartCopy``,
  done here part by part so the callback follows it. S3 has no conditional
  copy, so two writers racing on the same hash may both copy; they copy
  identical bytes, so either result is the same.
- anything else: existence check, then fsspec's ``mv`` (no progress).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

from fsspec.callbacks import DEFAULT_CALLBACK, Callback

from .._datajoint import call_s3, full_path
from ..durability import is_local
from ..listing import fresh
from .hashing import CHUNK
from .s3upload import MAX_PARTS

S3_FIRST_PART = 8 << 20
S3_COPY_PART = 128 << 20
S3_SMALL = 16 << 20
S3_PART_COPY = 5 << 30  # CopyObject's limit: larger objects are copied part by part


def promote(backend: Any, staging: str, canonical: str, *, callback: Callback = DEFAULT_CALLBACK) -> bool:
    """Move ``staging`` to ``canonical``; False (and the staging copy removed) if canonical already exists."""
    fs = backend.fs
    source, target = full_path(backend, staging), full_path(backend, canonical)
    if is_local(fs):
        return _promote_local(fs, source, target)
    if fs.exists(fresh(fs, target)):
        fs.rm(source)
        return False
    if backend.protocol == "s3":
        _copy_s3(fs, source, target, fs.size(source), callback)
        fs.rm(source)
    else:
        fs.mv(source, target)
    return True


def _promote_local(fs: Any, source: str, target: str) -> bool:
    fs.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        fs.link(source, target)
    except FileExistsError:
        fs.rm_file(source)
        return False
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
            raise
        if fs.exists(target):
            fs.rm_file(source)
            return False
        fs.mv(source, target)
        return True
    fs.rm_file(source)
    return True


def compose_prefixed(
    backend: Any, prefix: bytes, source: str, target: str, offset: int = 0, callback: Callback = DEFAULT_CALLBACK
) -> None:
    """Write ``prefix`` + the bytes of ``source`` from ``offset`` on to ``target``.

    On S3 only the first few MiB travel through the client: the rest is copied
    server-side with ``UploadPartCopy``.
    """
    fs = backend.fs
    source_full, target_full = full_path(backend, source), full_path(backend, target)
    remaining = fs.size(source_full) - offset
    callback.set_size(remaining)
    if backend.protocol == "s3" and len(prefix) + remaining > S3_SMALL:
        _compose_s3(fs, prefix, source_full, target_full, offset, remaining, callback)
        return
    with backend.open(source, "rb") as src, backend.open(target, "wb") as dst:
        dst.write(prefix)
        src.seek(offset)
        while chunk := src.read(CHUNK):
            dst.write(chunk)
            callback.relative_update(len(chunk))


def _compose_s3(
    fs: Any, prefix: bytes, source: str, target: str, offset: int, remaining: int, callback: Callback
) -> None:
    """``prefix`` + the first few MiB of ``source`` as the first part, the rest copied server-side."""
    with fs.open(source, "rb") as src:
        src.seek(offset)
        head = src.read(S3_FIRST_PART)

    def fill(bucket: str, key: str, upload_id: str, parts: list[dict]) -> None:
        first = call_s3(fs, "upload_part", Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=prefix + head)
        parts.append({"PartNumber": 1, "ETag": first["ETag"]})
        callback.relative_update(len(head))
        _copy_parts(fs, source, offset + len(head), offset + remaining, (bucket, key, upload_id), parts, callback)

    _multipart_upload(fs, target, fill)


def _copy_s3(fs: Any, source: str, target: str, size: int, callback: Callback) -> None:
    """Copy ``source`` to ``target`` inside S3: one ``CopyObject`` up to 5 GiB, else part by part."""
    callback.set_size(size)
    if size <= S3_PART_COPY:
        (src_bucket, src_key, _), (bucket, key, _) = fs.split_path(source), fs.split_path(target)
        call_s3(fs, "copy_object", Bucket=bucket, Key=key, CopySource={"Bucket": src_bucket, "Key": src_key})
        fs.invalidate_cache(target)
        callback.relative_update(size)
        return

    def fill(bucket: str, key: str, upload_id: str, parts: list[dict]) -> None:
        _copy_parts(fs, source, 0, size, (bucket, key, upload_id), parts, callback)

    _multipart_upload(fs, target, fill)


def _multipart_upload(fs: Any, target: str, fill: Callable[[str, str, str, list[dict]], None]) -> None:
    """Create a multipart upload of ``target``, let ``fill`` add its parts, complete it (abort on any error)."""
    bucket, key, _ = fs.split_path(target)
    upload_id = call_s3(fs, "create_multipart_upload", Bucket=bucket, Key=key)["UploadId"]
    parts: list[dict] = []
    try:
        fill(bucket, key, upload_id, parts)
        call_s3(
            fs,
            "complete_multipart_upload",
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )
    except BaseException:
        call_s3(fs, "abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
        raise
    fs.invalidate_cache(target)


def _copy_parts(
    fs: Any, source: str, start: int, end: int, upload: tuple[str, str, str], parts: list[dict], callback: Callback
) -> None:
    """Append ``UploadPartCopy`` parts for bytes ``[start, end)`` of ``source``, reporting progress."""
    bucket, key, upload_id = upload
    src_bucket, src_key, _ = fs.split_path(source)
    step = max(S3_COPY_PART, -(-(end - start) // (MAX_PARTS - len(parts))))
    while start < end:
        stop = min(start + step, end)
        number = len(parts) + 1
        copied = call_s3(
            fs,
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
