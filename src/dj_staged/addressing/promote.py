"""Moving a staged object to its canonical hash path, and framing content with a prefix.

Promotion never overwrites: when the canonical object exists (written earlier,
or by a concurrent writer between our check and our move) the staging copy is
dropped instead (dedup). Per protocol:

- ``file``: ``os.link`` (fails if the destination exists, atomically) then unlink
  the staging name; a rename in effect, no byte is copied.
- ``s3``: an existence check, then a server-side copy, then delete the staging
  object; nothing is downloaded. Below 256 MiB the copy is s3fs's (``CopyObject``
  or a multipart ``UploadPartCopy``); from 256 MiB on it is a multipart
  ``UploadPartCopy`` done here part by part, so a progress bar can follow it (the
  user waits for it without their own code running). S3 has no conditional copy,
  so two writers racing on the same hash may both copy; they copy identical
  bytes, so either result is the same.
- anything else: existence check, then fsspec's ``mv`` (no progress bar).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

from .. import progress
from ..progress import byte_bar
from .hashing import CHUNK

S3_FIRST_PART = 8 << 20
S3_COPY_PART = 128 << 20
S3_MAX_PARTS = 10_000
S3_SMALL = 16 << 20


def promote(backend: Any, staging: str, canonical: str) -> bool:
    """Move ``staging`` to ``canonical``; False (and the staging copy removed) if canonical already exists."""
    fs = backend.fs
    source, target = backend._full_path(staging), backend._full_path(canonical)
    if backend.protocol == "file":
        return _promote_local(source, target)
    if fs.exists(target):
        fs.rm(source)
        return False
    if backend.protocol == "s3":
        size = fs.size(source)
        if size >= progress.MIN_BYTES:
            _copy_s3(fs, source, target, size)
        else:
            fs.copy(source, target)
        fs.rm(source)
    else:
        fs.mv(source, target)
    return True


def _promote_local(source: str, target: str) -> bool:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        os.link(source, target)
    except FileExistsError:
        os.unlink(source)
        return False
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
            raise
        if os.path.exists(target):
            os.unlink(source)
            return False
        os.replace(source, target)
        return True
    os.unlink(source)
    return True


def compose_prefixed(backend: Any, prefix: bytes, source: str, target: str, offset: int = 0) -> None:
    """Write ``prefix`` + the bytes of ``source`` from ``offset`` on to ``target``.

    On S3 only the first few MiB travel through the client: the rest is copied
    server-side with ``UploadPartCopy``.
    """
    fs = backend.fs
    source_full, target_full = backend._full_path(source), backend._full_path(target)
    remaining = fs.size(source_full) - offset
    if backend.protocol == "s3" and len(prefix) + remaining > S3_SMALL:
        _compose_s3(fs, prefix, source_full, target_full, offset, remaining)
        return
    with backend.open(source, "rb") as src, backend.open(target, "wb") as dst, byte_bar("framing", remaining) as bar:
        dst.write(prefix)
        src.seek(offset)
        while chunk := src.read(CHUNK):
            dst.write(chunk)
            bar.update(len(chunk))


def _compose_s3(fs: Any, prefix: bytes, source: str, target: str, offset: int, remaining: int) -> None:
    """``prefix`` + the first few MiB of ``source`` as the first part, the rest copied server-side."""
    with fs.open(source, "rb") as src:
        src.seek(offset)
        head = src.read(S3_FIRST_PART)

    def fill(bucket: str, key: str, upload_id: str, parts: list[dict]) -> None:
        first = fs.call_s3("upload_part", Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=prefix + head)
        parts.append({"PartNumber": 1, "ETag": first["ETag"]})
        bar.update(len(head))
        _copy_parts(fs, source, offset + len(head), offset + remaining, (bucket, key, upload_id), parts, bar)

    with byte_bar("framing", remaining) as bar:
        _multipart_upload(fs, target, fill)


def _copy_s3(fs: Any, source: str, target: str, size: int) -> None:
    """Copy ``source`` to ``target`` inside S3, part by part, with a progress bar."""

    def fill(bucket: str, key: str, upload_id: str, parts: list[dict]) -> None:
        _copy_parts(fs, source, 0, size, (bucket, key, upload_id), parts, bar)

    with byte_bar("promoting", size) as bar:
        _multipart_upload(fs, target, fill)


def _multipart_upload(fs: Any, target: str, fill: Callable[[str, str, str, list[dict]], None]) -> None:
    """Create a multipart upload of ``target``, let ``fill`` add its parts, complete it (abort on any error)."""
    bucket, key, _ = fs.split_path(target)
    upload_id = fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)["UploadId"]
    parts: list[dict] = []
    try:
        fill(bucket, key, upload_id, parts)
        fs.call_s3(
            "complete_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
        raise
    fs.invalidate_cache(target)


def _copy_parts(
    fs: Any, source: str, start: int, end: int, upload: tuple[str, str, str], parts: list[dict], bar: Any
) -> None:
    """Append ``UploadPartCopy`` parts for bytes ``[start, end)`` of ``source``, advancing ``bar``."""
    bucket, key, upload_id = upload
    src_bucket, src_key, _ = fs.split_path(source)
    step = max(S3_COPY_PART, -(-(end - start) // (S3_MAX_PARTS - len(parts))))
    while start < end:
        stop = min(start + step, end)
        number = len(parts) + 1
        copied = fs.call_s3(
            "upload_part_copy",
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            CopySource={"Bucket": src_bucket, "Key": src_key},
            CopySourceRange=f"bytes={start}-{stop - 1}",
        )
        parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
        bar.update(stop - start)
        start = stop
