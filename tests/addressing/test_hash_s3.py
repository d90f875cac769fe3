"""Hash-addressed staged insert on an S3 store (moto's server on 127.0.0.1)."""

from __future__ import annotations

import os

import datajoint as dj
import pytest
from support.stores import s3_calls
from support.tables import declare

import dj_staged


@pytest.fixture
def S3Artifact(djstaged_schema, djstaged_s3_store):
    return declare(
        djstaged_schema,
        "S3Artifact",
        """
        artifact_id : int32
        ---
        payload = null : <blob@s3>
        report = null : <attach@s3>
        content = null : <hash@s3>
        """,
    )


def s3_keys(store) -> list[str]:
    from datajoint.hash_registry import get_store_backend

    backend = get_store_backend(store.name)
    root = backend._full_path("")
    return sorted(p[len(root) :] for p in backend.fs.find(root))


def raw(table, key, field):
    return table.connection.query(f"SELECT {field} FROM {table.full_table_name} WHERE artifact_id = {key}").fetchone()[
        0
    ]


@pytest.mark.parametrize("size", [100_000, 20 << 20], ids=["small", "multipart"])
def test_blob_without_size_is_framed_server_side(S3Artifact, djstaged_s3_store, size):
    data = os.urandom(size)
    S3Artifact.insert1({"artifact_id": 1, "payload": data})
    with dj_staged.staged_insert1(S3Artifact) as staged:
        staged.rec["artifact_id"] = 2
        with staged.open("payload", ".bin") as f:
            for start in range(0, size, 1 << 20):
                f.write(data[start : start + (1 << 20)])
    assert raw(S3Artifact, 2, "payload") == raw(S3Artifact, 1, "payload")
    assert (S3Artifact & "artifact_id=2").fetch1("payload") == data
    assert [k for k in s3_keys(djstaged_s3_store) if k.startswith("_staging/")] == []


@pytest.mark.parametrize("order", ["before", "after"])
def test_attach_and_hash_on_s3(S3Artifact, djstaged_s3_store, tmp_path, order):
    content = os.urandom(300_000)
    source = tmp_path / "notes.txt"
    source.write_bytes(content)
    S3Artifact.insert1({"artifact_id": 1, "report": str(source), "content": content})
    with dj_staged.staged_insert1(S3Artifact) as staged:
        staged.rec["artifact_id"] = 2
        if order == "before":
            staged.set_filename("report", "notes.txt")
        with staged.open("report", ".txt") as f:
            f.write(content)
        if order == "after":
            staged.set_filename("report", "notes.txt")
        with staged.open("content") as f:
            f.write(content)
    assert raw(S3Artifact, 2, "report") == raw(S3Artifact, 1, "report")
    assert raw(S3Artifact, 2, "content") == raw(S3Artifact, 1, "content")
    assert [k for k in s3_keys(djstaged_s3_store) if k.startswith("_staging/")] == []


def test_exception_on_s3_leaves_no_staging(S3Artifact, djstaged_s3_store):
    with pytest.raises(ValueError), dj_staged.staged_insert1(S3Artifact) as staged:
        staged.rec["artifact_id"] = 2
        with staged.open("content") as f:
            f.write(b"x" * 1000)
        raise ValueError("abort")
    assert s3_keys(djstaged_s3_store) == [] and len(S3Artifact()) == 0
    assert dj.config.stores["default"] == "s3"


def test_promotion_is_a_server_side_copy(S3Artifact, djstaged_s3_store):
    """Count what the S3 client downloads during the whole staged insert: nothing (hashed while written)."""
    data = os.urandom(12 << 20)
    with s3_calls(djstaged_s3_store) as (calls, downloaded), dj_staged.staged_insert1(S3Artifact) as staged:
        staged.rec["artifact_id"] = 5
        with staged.open("content", ".bin") as f:
            for start in range(0, len(data), 1 << 20):
                f.write(data[start : start + (1 << 20)])
    assert calls["CopyObject"] == 1 and calls["UploadPartCopy"] == 0  # promotion: one copy inside the server
    assert downloaded == [] and calls["GetObject"] == 0
    assert calls["PutObject"] + calls["UploadPart"] >= 1  # the caller's bytes went up once
    assert (S3Artifact & "artifact_id=5").fetch1("content") == data
