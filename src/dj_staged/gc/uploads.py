"""Incomplete S3 multipart uploads: what a killed writer or a dropped endpoint leaves invisible to listings.

An upload that was started and never completed or aborted costs storage for
its parts, yet no object listing shows it. A collection lists the uploads
under its sections and treats each one like an object at its key: kept while a
live lease covers it or, when no lease names it, while it is younger than the
grace period; aborted otherwise.
"""

from __future__ import annotations

from typing import Any

from .._datajoint import call_s3
from ..listing import StoredFile, bucket_and_key


def list_uploads(backend: Any, section: str) -> dict[str, tuple[StoredFile, str]]:
    """Incomplete uploads under ``section``: relative key → (what it holds so far, upload id)."""
    if backend.protocol != "s3":
        return {}
    fs = backend.fs
    bucket, prefix = bucket_and_key(backend, section)
    _, root = bucket_and_key(backend, "")
    found: dict[str, tuple[StoredFile, str]] = {}
    options: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix.rstrip("/") + "/"}
    while True:
        page = call_s3(fs, "list_multipart_uploads", **options)
        for upload in page.get("Uploads", []):
            key, upload_id = upload["Key"], upload["UploadId"]
            relative = key[len(root) :].lstrip("/") if key.startswith(root) else key
            try:
                parts = call_s3(fs, "list_parts", Bucket=bucket, Key=key, UploadId=upload_id).get("Parts", [])
            except FileNotFoundError:  # NoSuchUpload: completed or aborted since the listing, nothing to collect
                continue
            size = sum(int(part.get("Size", 0)) for part in parts)
            found[f"{relative}#upload={upload_id}"] = (StoredFile(relative, size, upload["Initiated"].timestamp()), key)
        if not page.get("IsTruncated"):
            return found
        options.update(KeyMarker=page["NextKeyMarker"], UploadIdMarker=page["NextUploadIdMarker"])


def abort_upload(backend: Any, name: str, key: str) -> None:
    """Abort the upload ``name`` (as :func:`list_uploads` keys it) of object ``key``."""
    bucket, _ = bucket_and_key(backend, "")
    upload_id = name.rsplit("#upload=", 1)[1]
    call_s3(backend.fs, "abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
