"""A boto3 client for a store's S3 endpoint, for tests that look under DataJoint's s3fs (multipart uploads)."""

from __future__ import annotations

from typing import Any


def s3_client(spec: dict[str, Any]) -> Any:
    """A boto3 S3 client for the store ``spec`` (DataJoint's keys: ``endpoint``, ``access_key``, ``secret_key``)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=f"http://{spec['endpoint']}",
        aws_access_key_id=spec["access_key"],
        aws_secret_access_key=spec["secret_key"],
        region_name="us-east-1",
    )
