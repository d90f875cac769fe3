"""Staged <blob@>, <attach@>, <hash@> rows against rows written by DataJoint's own insert1."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path

import datajoint as dj
import numpy as np
import pytest
from datajoint.hash_registry import compute_hash
from datajoint.storage import StorageBackend
from hypothesis import given, settings
from hypothesis import strategies as st
from support.stores import store_files
from support.tables import declare

import dj_staged
from dj_staged.addressing.handles import StagedFile
from dj_staged.addressing.hashing import StreamingMD5, encode_digest
from dj_staged.errors import ContentError, HandleModeError, InvalidPathError
from dj_staged.stores.local import LocalStore


@pytest.fixture(params=[None, [2, 2]], ids=["flat", "subfolded"])
def store(request, djstaged_local_store):
    if request.param:
        djstaged_local_store.spec["subfolding"] = request.param
        dj.config.stores = {**dj.config.stores, "main": djstaged_local_store.spec}
    return djstaged_local_store


@pytest.fixture
def Artifact(djstaged_schema, store):
    return declare(
        djstaged_schema,
        "Artifact",
        """
        artifact_id : int32
        ---
        payload = null : <blob@main>
        report = null : <attach@main>
        content = null : <hash@main>
        """,
    )


def column(table, key: int, field: str) -> dict:
    return table.connection.query(f"SELECT {field} FROM {table.full_table_name} WHERE artifact_id = {key}").fetchone()[
        0
    ]


def staging_files(store) -> list[str]:
    return [p for p in store_files(store) if p.startswith("_staging/")]


def chunks(n: int = 5, size: int = 40_000, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for _ in range(n)]


def test_blob_seed_example_matches_insert1(Artifact, store):
    producer = chunks()
    Artifact.insert1({"artifact_id": 1, "payload": b"".join(producer)})
    with dj_staged.staged_insert1(Artifact) as staged:
        staged.rec["artifact_id"] = 7
        with staged.open("payload", ".bin") as f:
            for chunk in producer:
                f.write(chunk)
    assert column(Artifact, 7, "payload") == column(Artifact, 1, "payload")
    assert (Artifact & "artifact_id=7").fetch1("payload") == b"".join(producer)
    assert len([p for p in store_files(store) if p.startswith("_hash/")]) == 1
    assert staging_files(store) == []


def test_blob_declared_size_hashes_while_streaming(Artifact, store):
    producer = chunks(seed=1)
    Artifact.insert1({"artifact_id": 1, "payload": b"".join(producer)})
    with dj_staged.staged_insert1(Artifact) as staged:
        staged.rec["artifact_id"] = 2
        with staged.open("payload", ".bin", size=sum(map(len, producer))) as f:
            for chunk in producer:
                f.write(chunk)
        assert f.sequential
    assert column(Artifact, 2, "payload") == column(Artifact, 1, "payload")


def test_blob_declared_size_mismatch_leaves_nothing(Artifact, store):
    with pytest.raises(ContentError), dj_staged.staged_insert1(Artifact) as staged:
        staged.rec["artifact_id"] = 2
        with staged.open("payload", ".bin", size=10) as f:
            f.write(b"123456789")
    assert store_files(store) == [] and len(Artifact()) == 0


def test_blob_compressible_content_fetches_equal(Artifact, store):
    data = b"abc" * 100_000
    Artifact.insert1({"artifact_id": 1, "payload": data})
    with dj_staged.staged_insert1(Artifact) as staged:
        staged.rec["artifact_id"] = 2
        with staged.open("payload") as f:
            f.write(data)
    assert (Artifact & "artifact_id=2").fetch1("payload") == (Artifact & "artifact_id=1").fetch1("payload") == data
    ours, theirs = column(Artifact, 2, "payload"), column(Artifact, 1, "payload")
    assert ours["size"] == len(data) + 13 and theirs["size"] < ours["size"]  # DataJoint compressed, we did not


@pytest.mark.parametrize("dtype", ["float64", "int16", "uint8", "bool", "float32"])
@pytest.mark.parametrize("shape", [(1000,), (8, 250), (2, 3, 50)])
def test_blob_array_streamed_in_slabs_fetches_like_insert1(Artifact, store, dtype, shape):
    rng = np.random.default_rng(3)
    array = (rng.random(shape) * 100).astype(dtype)
    Artifact.insert1({"artifact_id": 1, "payload": array})
    with dj_staged.staged_insert1(Artifact) as staged:
        staged.rec["artifact_id"] = 2
        with dj_staged.open_blob_array(staged, "payload", shape, dtype) as out:
            for start in range(0, shape[-1], 64):
                out.write(array[..., start : start + 64])
    theirs, ours = (Artifact & "artifact_id=1").fetch1("payload"), (Artifact & "artifact_id=2").fetch1("payload")
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


def test_blob_array_incompressible_column_equals_insert1(Artifact, store):
    array = np.frombuffer(np.random.default_rng(4).bytes(8 * 4096), dtype=np.uint8).reshape(8, 4096)
    Artifact.insert1({"artifact_id": 1, "payload": array})
    with dj_staged.staged_insert1(Artifact) as staged:
        staged.rec["artifact_id"] = 2
        with dj_staged.open_blob_array(staged, "payload", array.shape, array.dtype) as out:
            out.write(array)
    assert column(Artifact, 2, "payload") == column(Artifact, 1, "payload")


def test_blob_array_incomplete_is_rejected(Artifact, store):
    with pytest.raises(ContentError), dj_staged.staged_insert1(Artifact) as staged:
        staged.rec["artifact_id"] = 2
        with dj_staged.open_blob_array(staged, "payload", (4, 100), "float64") as out:
            out.write(np.zeros((4, 60)))
    assert store_files(store) == [] and len(Artifact()) == 0


@pytest.mark.parametrize("bad", [np.zeros((3, 10)), np.zeros((4, 10), dtype="float32"), np.zeros((4, 200))])
def test_blob_array_bad_slab(Artifact, store, bad):
    with pytest.raises(ContentError), dj_staged.staged_insert1(Artifact) as staged:
        staged.rec["artifact_id"] = 2
        with dj_staged.open_blob_array(staged, "payload", (4, 100), "float64") as out:
            out.write(bad)
    assert store_files(store) == [] and len(Artifact()) == 0


def test_blob_array_unsupported_dtype(Artifact, store):
    with pytest.raises(ContentError), dj_staged.staged_insert1(Artifact) as staged:
        staged.rec["artifact_id"] = 2
        dj_staged.open_blob_array(staged, "payload", (4,), "complex128")
    assert store_files(store) == []


@pytest.mark.parametrize("order", ["before", "after"])
def test_attach_matches_insert1_and_downloads_named_file(Artifact, store, tmp_path, order):
    content = b"%PDF-1.7 " + os.urandom(50_000)
    source = tmp_path / "final_report.pdf"
    source.write_bytes(content)
    Artifact.insert1({"artifact_id": 1, "report": str(source)})
    with dj_staged.staged_insert1(Artifact) as staged:
        staged.rec["artifact_id"] = 2
        if order == "before":
            staged.set_filename("report", "final_report.pdf")
        with staged.open("report", ".pdf") as f:
            f.write(content[:1000])
            f.write(content[1000:])
        if order == "after":
            staged.set_filename("report", "final_report.pdf")
    assert column(Artifact, 2, "report") == column(Artifact, 1, "report")
    with dj.config.override(download_path=str(tmp_path / "downloads")):
        local = Path((Artifact & "artifact_id=2").fetch1("report"))
    assert local.name == "final_report.pdf" and local.read_bytes() == content
    assert staging_files(store) == []


def test_attach_without_filename_leaves_nothing(Artifact, store):
    with pytest.raises(InvalidPathError), dj_staged.staged_insert1(Artifact) as staged:
        staged.rec["artifact_id"] = 2
        with staged.open("report", ".pdf") as f:
            f.write(b"content")
    assert store_files(store) == [] and len(Artifact()) == 0


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", "a\x00b", "x" * 300, "a／..", "．．"])
def test_attach_bad_filename(Artifact, store, name):
    with pytest.raises(InvalidPathError), dj_staged.staged_insert1(Artifact) as staged:
        staged.rec["artifact_id"] = 2
        staged.set_filename("report", name)
    assert store_files(store) == []


def test_hash_direct_matches_insert1(Artifact, store):
    data = os.urandom(100_000)
    Artifact.insert1({"artifact_id": 1, "content": data})
    with dj_staged.staged_insert1(Artifact) as staged:
        staged.rec["artifact_id"] = 2
        with staged.open("content") as f:
            f.write(data)
    assert column(Artifact, 2, "content") == column(Artifact, 1, "content")
    assert (Artifact & "artifact_id=2").fetch1("content") == data


def test_seek_falls_back_to_one_reread(Artifact, store):
    with dj_staged.staged_insert1(Artifact) as staged:
        staged.rec["artifact_id"] = 2
        with staged.open("content") as f:
            f.write(b"xxxxworld")
            f.seek(0)
            f.write(b"hell")
            f.seek(0, 2)
            f.write(b"!")
        assert not f.sequential
    meta = column(Artifact, 2, "content")
    assert meta["hash"] == compute_hash(b"hellworld!")
    assert (Artifact & "artifact_id=2").fetch1("content") == b"hellworld!"


def test_store_mode_and_second_handle_rejected(Artifact, store):
    with pytest.raises(HandleModeError, match=r"does not support staged.store\(\)") as raised:
        with dj_staged.staged_insert1(Artifact) as staged:
            staged.rec["artifact_id"] = 2
            staged.store("payload", ".bin")
    assert raised.value.field == "payload"
    with pytest.raises(HandleModeError, match="already has a staged handle") as raised:
        with dj_staged.staged_insert1(Artifact) as staged:
            staged.rec["artifact_id"] = 2
            staged.open("content").write(b"a")
            staged.open("content")
    assert raised.value.field == "content"
    assert store_files(store) == [] and len(Artifact()) == 0


def test_dedup_hit_one_object_two_rows(Artifact, store):
    data = os.urandom(30_000)
    for key in (1, 2):
        with dj_staged.staged_insert1(Artifact) as staged:
            staged.rec["artifact_id"] = key
            with staged.open("content", ".bin") as f:
                f.write(data)
    first, second = column(Artifact, 1, "content"), column(Artifact, 2, "content")
    assert first == second
    assert store_files(store) == [first["path"]]
    folds = store.spec.get("subfolding") or []
    segments = first["path"].split("/")
    assert segments[:2] == ["_hash", Artifact.database] and segments[-1] == first["hash"]
    assert [len(s) for s in segments[2:-1]] == folds
    assert [r["content"] for r in Artifact.to_dicts()] == [data, data]


def test_exception_removes_staging_but_not_canonical(Artifact, store):
    data = os.urandom(1000)
    Artifact.insert1({"artifact_id": 1, "content": data})
    canonical = column(Artifact, 1, "content")["path"]
    with pytest.raises(RuntimeError, match="instrument"), dj_staged.staged_insert1(Artifact) as staged:
        staged.rec["artifact_id"] = 2
        with staged.open("content", ".bin") as f:
            f.write(data)
        assert len(staging_files(store)) == 1
        raise RuntimeError("instrument lost")
    assert store_files(store) == [canonical] and len(Artifact()) == 1


def test_failed_insert_after_promotion_keeps_canonical(Artifact, store):
    data = os.urandom(1000)
    with dj_staged.staged_insert1(Artifact) as staged:
        staged.rec["artifact_id"] = 1
        with staged.open("content") as f:
            f.write(data)
    with pytest.raises(dj.errors.DuplicateError), dj_staged.staged_insert1(Artifact) as staged:
        staged.rec["artifact_id"] = 1
        with staged.open("content") as f:
            f.write(data)
    assert staging_files(store) == []
    assert (Artifact & "artifact_id=1").fetch1("content") == data


def test_concurrent_canonical_collision_falls_through_to_dedup(djstaged_schema, store):
    from datajoint.builtin_codecs.hash import HashCodec

    class RacingHashCodec(dj_staged.HashAddressedStaging, HashCodec):
        """<hash@> whose promotion finds the canonical object created by another writer just before it."""

        name = "racinghash_test"

        def _promote(self, field, staged, canonical, callback):
            with field.backend.open(staged, "rb") as source, field.backend.open(canonical, "wb") as other_writer:
                other_writer.write(source.read())
            return super()._promote(field, staged, canonical, callback)

    try:
        Table = declare(djstaged_schema, "Racing", "k : int32\n---\nv : <racinghash_test@main>")
        with dj_staged.staged_insert1(Table) as staged:
            staged.rec["k"] = 1
            with staged.open("v") as f:
                f.write(b"same bytes")
            field = staged.field("v")
        assert field.state.promoted is False  # the dedup branch
        assert (Table & "k=1").fetch1("v") == b"same bytes"
        assert staging_files(store) == [] and len(store_files(store)) == 1
    finally:
        dj.codecs.unregister_codec("racinghash_test")


def test_custom_hash_addressed_codec_participates(djstaged_schema, store):
    class FramedCodec(dj_staged.HashAddressedStaging, dj.Codec):
        """Stores b'FRM1' + content through <hash@>; decodes to the content."""

        name = "framed_test"

        def get_dtype(self, is_store):
            return "<hash>"

        def encode(self, value, *, key=None, store_name=None):
            return b"FRM1" + value

        def decode(self, stored, *, key=None):
            return stored[4:]

        def _stored_prefix(self, field, content_size):
            return b"FRM1"

    try:
        Table = declare(djstaged_schema, "Framed", "k : int32\n---\nv : <framed_test@main>")
        Table.insert1({"k": 1, "v": b"payload"})
        with dj_staged.staged_insert1(Table) as staged:
            staged.rec["k"] = 2
            with staged.open("v") as f:
                f.write(b"payload")
        assert (Table & "k=2").fetch1("v") == b"payload"
        rows = dict(Table.connection.query(f"SELECT k, v FROM {Table.full_table_name}").fetchall())
        assert rows[1] == rows[2]
    finally:
        dj.codecs.unregister_codec("framed_test")


def local_store(folder) -> LocalStore:
    """A local store at ``folder``, for a handle written outside a staged insert."""
    spec = {"protocol": "file", "location": str(folder)}
    return LocalStore("main", spec, StorageBackend(spec))


@settings(max_examples=50, deadline=None)
@given(parts=st.lists(st.binary(max_size=5000), max_size=20), prefix=st.binary(max_size=64))
def test_streaming_digest_equals_datajoint_compute_hash(tmp_path_factory, parts, prefix):
    path = tmp_path_factory.mktemp("h") / "f"
    with open(path, "wb") as raw, StagedFile(raw, local_store(path.parent), prefix=prefix, hashing=True) as writer:
        for part in parts:
            writer.write(part)
        digest = writer.digest()
    assert encode_digest(digest) == compute_hash(prefix + b"".join(parts)) == compute_hash(path.read_bytes())


@pytest.mark.parametrize("writable", [False, True], ids=["bytes", "reused-buffer"])
def test_background_digest_of_a_large_stream_equals_compute_hash(tmp_path, writable):
    """Past 8 MiB the digest runs in a thread; a buffer the caller reuses after write() must not corrupt it."""
    rng = np.random.default_rng(1)
    pieces = [rng.bytes(n) for n in (3 << 20, 5 << 20, 100, 6 << 20, 70_000, 1 << 20)]
    buffer = bytearray(max(len(p) for p in pieces))
    path = tmp_path / "large"
    with open(path, "wb") as raw, StagedFile(raw, local_store(tmp_path), prefix=b"head", hashing=True) as writer:
        for piece in pieces:
            if writable:
                buffer[: len(piece)] = piece
                writer.write(memoryview(buffer)[: len(piece)])
                buffer[:] = bytes(len(buffer))  # the caller reuses its buffer at once
            else:
                writer.write(piece)
        digest = writer.digest()
    expected = compute_hash(b"head" + b"".join(pieces))
    assert encode_digest(digest) == expected == compute_hash(path.read_bytes())
    assert not [t for t in threading.enumerate() if t.name == "dj-staged-md5"]


def test_an_error_in_the_hashing_thread_surfaces_in_the_callers_thread():
    """hashlib refuses a piece inside the background thread: a later ``update`` and ``result`` raise that error."""
    md5 = StreamingMD5()
    md5.update(memoryview(bytes(9 << 20)))  # past the inline threshold: the digest runs in its thread
    assert any(t.name == "dj-staged-md5" for t in threading.enumerate())
    md5.update(memoryview(bytes(1 << 20))[::2])  # not contiguous: hashlib raises BufferError in the thread
    with pytest.raises(BufferError):
        for _ in range(12):  # the queue holds 8: by then the thread has met the bad piece
            md5.update(memoryview(bytes(1 << 20)))
    with pytest.raises(BufferError):
        md5.result()
    assert not [t for t in threading.enumerate() if t.name == "dj-staged-md5"]


class DiskFullAfter:
    """A file that fails as a full disk does (``ENOSPC`` from ``write``) once ``limit`` bytes are in it; it
    remembers the thread its failing write ran in."""

    def __init__(self, file, limit: int) -> None:
        self._file, self._limit, self.failed_in = file, limit, None

    def write(self, data) -> int:
        if self._file.tell() + memoryview(data).nbytes > self._limit:
            self.failed_in = threading.current_thread().name
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)


def test_a_write_error_in_the_handles_thread_is_raised_by_the_callers_write(tmp_path):
    """Past 8 MiB a buffer the caller may reuse is written by the handle's thread while the caller's thread hashes
    it: a full disk there is the caller's ``OSError``, raised by that very ``write``, and the thread ends with the
    handle."""
    buffer = np.random.default_rng(2).standard_normal((4 << 20) // 8)  # 4 MiB, reused by every write
    with (
        open(tmp_path / "full", "wb") as f,
        StagedFile(raw := DiskFullAfter(f, 20 << 20), local_store(tmp_path), hashing=True) as writer,
    ):
        written = 0
        with pytest.raises(OSError) as raised:
            for _ in range(8):
                writer.write(buffer)
                written += buffer.nbytes
        writer.abort()
    assert raised.value.errno == errno.ENOSPC
    assert written == 20 << 20  # five writes fitted; the sixth failed
    assert raw.failed_in == "dj-staged-md5"  # it ran in the handle's thread, not the caller's
    assert not [t for t in threading.enumerate() if t.name == "dj-staged-md5"]


@pytest.mark.parametrize("ending", [KeyboardInterrupt, RuntimeError, None])
def test_no_hashing_thread_outlives_the_block(Artifact, store, ending):
    """A large stream is hashed in a background thread; however the block ends, the thread has ended with it.

    On S3 the writer's thread hashes while its uploads run in other threads: there is no hashing thread at all.
    """
    data = os.urandom(12 << 20)  # past the inline threshold: on a local store the digest moves to its thread
    with contextlib.suppress(KeyboardInterrupt, RuntimeError), dj_staged.staged_insert1(Artifact) as staged:
        staged.rec["artifact_id"] = 1
        f = staged.open("content", ".bin")
        for start in range(0, len(data), 1 << 20):
            f.write(data[start : start + (1 << 20)])
        assert any(t.name == "dj-staged-md5" for t in threading.enumerate()) == (store.spec["protocol"] == "file")
        if ending is not None:
            raise ending
        f.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("dj-staged-")]
    assert len(Artifact()) == (1 if ending is None else 0)
    if ending is None:
        assert Artifact.fetch1("content") == data
